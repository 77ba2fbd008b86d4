# The two commands of the README's Quick start, and the set-up they share.
# Needs only python3 (>= 3.11), g++ and make: everything else comes from PyPI into .venv/.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.lowbit-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-all doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("lowbit needs Python 3.11 or newer, this is " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: the end-to-end demo (artefacts in out/demo/).
demo: $(STAMP)
	$(VENV)/bin/lowbit demo -o out/demo

# The tests CI runs: everything but the tests marked slow.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

# Every test, including long synthesis and simulation runs.
test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 $(PYTEST_ARGS)

doctor: $(STAMP)
	$(VENV)/bin/lowbit doctor

clean:
	rm -rf $(VENV) out build dist *.egg-info .pytest_cache .hypothesis
