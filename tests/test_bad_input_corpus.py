"""Bad-input corpus: every malformed or unsupported input gives one clear line and a non-zero exit.

Each case runs the real ``lowbit`` executable in a subprocess (so an uncaught exception shows up as a
traceback, exactly as a user would see it) and checks: non-zero exit status, exactly one line on
stderr, no traceback, the expected words, and that no output file or folder was left behind.
Cases are added here as commands land; ``CASES`` is the corpus.
"""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOWBIT = [sys.executable, "-m", "lowbit.sw.cli"]


@dataclass
class Case:
    id: str
    argv: list
    expect: str                    # words the one-line message must contain
    setup: callable = None         # setup(tmp_path) writes input files
    env: dict = field(default_factory=dict)
    outputs: tuple = ()            # paths (relative to tmp_path) that must not exist afterwards


def _write(name, content):
    def setup(tmp):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


CASES = [
    Case("unknown-subcommand", ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("no-subcommand", [], "the following arguments are required: COMMAND"),
    Case("doctor-bad-flag", ["doctor", "--fast"], "unrecognized arguments: --fast"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case, tmp_path):
    if case.setup:
        case.setup(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    env = {**os.environ, **case.env}
    proc = subprocess.run(LOWBIT + argv, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lowbit: error: ") and case.expect in lines[0], lines[0]
    for rel in case.outputs:
        assert not (tmp_path / rel).exists(), f"{rel} was left behind"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_corpus_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
