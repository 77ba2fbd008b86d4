# The two commands of the README's Quick start, and the set-up they share.
# Needs only python3 (>= 3.11), g++ and make: everything else comes from PyPI into .venv/.
# Versions come from constraints.txt (tested together); `make test-latest` tries the newest releases.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.lowbit-installed
LATEST := .venv-latest
PYTEST_ARGS ?=
CHECK_PYTHON = $(PYTHON) -c 'import sys; sys.exit("lowbit needs Python 3.11 or newer, this is " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'

.PHONY: setup demo test test-all test-latest lock doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
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

# The same tests against the newest release of every dependency, in a separate venv: run it before
# deciding to upgrade; `make lock` then records the versions it used in constraints.txt.
test-latest:
	$(CHECK_PYTHON)
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e ".[dev]"
	$(LATEST)/bin/python -m pip freeze --exclude-editable | grep -v -i '^lowbit' > $(LATEST)/freeze.txt
	diff <(grep -v '^#' constraints.txt) $(LATEST)/freeze.txt || true
	$(LATEST)/bin/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lock: $(LATEST)/freeze.txt
	{ grep '^#' constraints.txt; cat $(LATEST)/freeze.txt; } > constraints.txt.new && mv constraints.txt.new constraints.txt

doctor: $(STAMP)
	$(VENV)/bin/lowbit doctor

clean:
	rm -rf $(VENV) $(LATEST) out build dist *.egg-info .pytest_cache .hypothesis
