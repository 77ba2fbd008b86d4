"""Health checks of everything lowbit runs: Python, system compilers, each tool, and two real flows.

Used by ``lowbit doctor``. Each check returns a :class:`Check`; a failing check says what to install.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LowbitError
from .flow.toolchain import TOOLS, tool, tool_version

__all__ = ["Check", "run_checks"]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self):
        return asdict(self)


def _python_check() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, sys.version.split()[0], "" if ok else "lowbit needs Python 3.11 or newer")


def _system_check(program: str, why: str) -> Check:
    path = shutil.which(program)
    return Check(program, path is not None, path or "not found",
                 "" if path else f"install {program} with the system package manager ({why})")


def _package_check(dist: str) -> Check:
    try:
        return Check(f"package {dist}", True, importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return Check(f"package {dist}", False, "not installed", f"pip install {dist} (or run 'make setup')")


def _tool_check(name: str) -> Check:
    try:
        path = tool(name)
        version = tool_version(name)
        return Check(name, True, f"{version} ({path})")
    except LowbitError as exc:
        return Check(name, False, exc.message, exc.hint or "")


def _pnr_check(workdir: Path) -> Check:
    from amaranth.back import verilog

    from ..hw.selftest import Counter
    from .flow.synth import implement
    t0 = time.monotonic()
    try:
        src = workdir / "counter.v"
        src.write_text(verilog.convert(Counter(16), name="counter"))
        result = implement([src], "counter", "ice40-up5k", workdir / "ice40", clock_mhz=12,
                           progress=lambda msg: None)
    except LowbitError as exc:
        return Check("ice40 up5k flow", False, exc.message, exc.hint or f"reinstall {TOOLS['yosys'].package} and {TOOLS['nextpnr-ice40'].package}")
    from .flow.synth import device
    lcs = result.utilization[device("ice40-up5k").logic_resource]["used"]
    ok = result.bitstream is not None and result.bitstream.exists() and result.timing_met
    return Check("ice40 up5k flow", ok, f"synthesised, placed and packed a 16-bit counter: {lcs} LCs, "
                 f"Fmax {result.fmax_mhz:.1f} MHz, {time.monotonic() - t0:.1f} s",
                 "" if ok else "the bitstream is missing or timing failed: see the logs in the work folder")


def _verilator_check(workdir: Path) -> Check:
    from amaranth.back import verilog

    from ..hw.selftest import Counter
    from ..sim.verilator import cocotb_run
    t0 = time.monotonic()
    try:
        src = workdir / "counter.v"
        src.write_text(verilog.convert(Counter(8), name="counter"))
        tests, failed = cocotb_run([src], "counter", "lowbit.sim.tb_selftest", workdir / "verilator")
    except LowbitError as exc:
        return Check("verilator + cocotb", False, exc.message, exc.hint or "check g++ and make")
    ok = tests > 0 and failed == 0
    return Check("verilator + cocotb", ok, f"built and ran {tests} cocotb test(s), {failed} failed, "
                 f"{time.monotonic() - t0:.1f} s", "" if ok else "see the simulation log in the work folder")


def run_checks(progress=lambda msg: None, flows: bool = True) -> list[Check]:
    """Run every check in order; ``flows=False`` skips the two end-to-end builds."""
    checks = [_python_check(), _system_check("g++", "Verilator compiles models with it"),
              _system_check("make", "Verilator's builds use it"),
              _system_check("perl", "the verilator front end is a perl script")]
    for dist in ("amaranth", "amaranth-boards", "numpy", "cocotb"):
        checks.append(_package_check(dist))
    for name in TOOLS:
        progress(f"checking {name}")
        checks.append(_tool_check(name))
    if flows:
        with tempfile.TemporaryDirectory(prefix="lowbit-doctor-") as tmp:
            progress("synthesising and placing a counter for iCE40 UP5K")
            checks.append(_pnr_check(Path(tmp)))
            progress("building and running a counter under Verilator + cocotb")
            checks.append(_verilator_check(Path(tmp)))
    return checks
