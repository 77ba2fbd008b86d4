"""Formal checks of Amaranth designs with SymbiYosys, all from PyPI (the SymbiYosys shipped with YoWASP's Yosys, and Boolector).

A *spec* is an Elaboratable that instantiates the design under test and states ``Assert``/``Assume``/
``Cover`` properties about it (``amaranth.hdl``), with free inputs from ``AnyConst``/``AnySeq``
(``amaranth.asserts``). :func:`check_formal` converts it to RTLIL and runs sby in bounded model checking
(``"bmc"``: no counterexample within ``depth`` cycles) or k-induction (``"prove"``: holds for all time).
Registers start from their init values (which in Amaranth equal their reset values); by default the
reset then stays inactive, and ``reset="any"`` lets the solver pulse it whenever it likes.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import Elaboratable, Fragment, Module, ResetSignal
from amaranth.back import rtlil
from amaranth.hdl import Assume

from ..sw.errors import LowbitError
from ..sw.flow.toolchain import formal_env, tool

__all__ = ["FormalResult", "check_formal"]


@dataclass
class FormalResult:
    passed: bool
    status: str          # "PASS", "FAIL", or sby's other verdicts
    mode: str
    depth: int
    seconds: float
    summary: str         # the failing assertion's location, or the last summary line
    workdir: Path


class _NoReset(Elaboratable):
    """Wraps a spec: the reset input is never asserted."""

    def __init__(self, spec):
        self.spec = spec

    def elaborate(self, platform):
        m = Module()
        m.submodules.spec = self.spec
        m.d.comb += Assume(~ResetSignal())
        return m


def check_formal(spec, workdir, *, mode: str = "bmc", depth: int = 20, reset: str = "never",
                 timeout: float = 600) -> FormalResult:
    """Run SymbiYosys on ``spec``; returns a :class:`FormalResult` (``passed`` is the verdict)."""
    if mode not in ("bmc", "prove", "cover"):
        raise ValueError(f"formal mode must be bmc, prove or cover, not {mode!r}")
    if reset not in ("never", "any"):
        raise ValueError(f"formal reset must be 'never' or 'any', not {reset!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    top = _NoReset(spec) if reset == "never" else spec
    fragment = Fragment.get(top, platform="formal").prepare(ports=())
    design = rtlil.convert_fragment(fragment)[0]
    config = textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        wait on
        multiclock off

        [engines]
        smtbmc boolector

        [script]
        read_rtlil top.il
        prep

        [file top.il]
        """) + design
    (workdir / "spec.sby").write_text(config)
    env = formal_env(workdir / "bin")
    t0 = time.monotonic()
    proc = subprocess.run([tool("sby"), "-f", "spec.sby"], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)
    seconds = time.monotonic() - t0
    (workdir / "sby.log").write_text(proc.stdout + proc.stderr)
    done = re.search(r"DONE \((\w+), rc=(\d+)\)", proc.stdout)
    if not done:
        raise LowbitError(f"SymbiYosys did not finish: {(proc.stdout + proc.stderr).strip()[-300:]}",
                          f"see {workdir / 'sby.log'}")
    status = done.group(1)
    failed = re.findall(r"summary:\s+(failed assertion .*)", proc.stdout)
    summary = failed[0] if failed else proc.stdout.strip().splitlines()[-1]
    return FormalResult(status == "PASS", status, mode, depth, round(seconds, 2), summary, workdir)
