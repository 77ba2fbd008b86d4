"""Run inputs through the RTL of a whole board (UART pins included) with Verilator + cocotb.

:func:`simulate_board` writes the Verilog of :class:`lowbit.sim.board_harness.BoardHarness` around an
:class:`lowbit.hw.accel.AccelCore`, builds it once per design with Verilator, and runs the cocotb test
``lowbit.sim.tb_board``, in which the ordinary :class:`lowbit.sw.link.host.Device` talks to the simulated
board through :class:`CocotbTransport` from a cocotb bridge thread. Results come back through files.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from ..sw.errors import LowbitError
from .board_harness import BoardHarness
from .verilator import cocotb_run

__all__ = ["CocotbTransport", "simulate_board", "inject_faults"]


class CocotbTransport:
    """Byte transport into a running cocotb simulation of :class:`BoardHarness` (use from a thread
    started with ``cocotb.task.bridge``). ``read`` timeouts are in the board's seconds (cycles / clk_hz)."""

    def __init__(self, dut, clk_period_ns: float, byte_cycles: int, clk_hz: float, depth: int = 2048):
        from cocotb.task import resume
        self.dut, self.period, self.byte_cycles, self.clk_hz = dut, clk_period_ns, byte_cycles, clk_hz
        self.depth = depth                            # the harness's host-side FIFOs (BoardHarness)
        self.bytes_sent = self.bytes_received = 0     # what crossed the link, for link-rate checks
        self.write = resume(self._write)
        self.read = resume(self._read)

    # Signals are written just after a falling edge and sampled in the ReadOnly phase of a falling
    # edge; the design is rising-edge triggered, so what is sampled is what the next edge will see.
    async def _write(self, data: bytes) -> None:
        from cocotb.triggers import FallingEdge
        dut = self.dut
        self.bytes_sent += len(data)
        for b in data:
            await FallingEdge(dut.clk)
            # Like a host's serial driver, wait while the UART's send queue is full (a frame may be
            # longer than the harness FIFO), instead of dropping bytes.
            while int(dut.h_w_level.value) >= self.depth - 1:
                dut.h_w_en.value = 0
                await FallingEdge(dut.clk)
            dut.h_w_data.value = b
            dut.h_w_en.value = 1
        await FallingEdge(dut.clk)
        dut.h_w_en.value = 0

    async def _read(self, max_bytes: int, timeout_s: float) -> bytes:
        from cocotb.triggers import FallingEdge, ReadOnly, Timer
        dut = self.dut
        out = bytearray()
        waited, step = 0.0, self.byte_cycles * self.period
        budget_ns = timeout_s * self.clk_hz * self.period
        while True:
            await FallingEdge(dut.clk)
            dut.h_r_en.value = 0
            await ReadOnly()
            if int(dut.h_r_rdy.value) and len(out) < max_bytes:
                out.append(int(dut.h_r_data.value))
                await Timer(1, unit="ns")          # leave ReadOnly; pop at the next rising edge
                dut.h_r_en.value = 1
                continue
            if out or waited >= budget_ns:
                break
            await Timer(step, unit="ns")           # idle: wait a byte time without per-cycle work
            waited += step
        await FallingEdge(dut.clk)
        dut.h_r_en.value = 0
        self.bytes_received += len(out)
        return bytes(out)


def _run_bench(core, build_dir, bench: str, progress=None, trace=None, extra_sources=(), build_args=(),
               flash: bytes = b"", **job) -> dict:
    build_dir = Path(build_dir).resolve()   # the simulator runs in its own working directory
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / "board.v"
    text = verilog.convert(BoardHarness(core, core.divisor, flash=flash), name="board")
    if not src.exists() or src.read_text() != text:   # an unchanged design reuses the Verilator build
        src.write_text(text)
    job_file = build_dir / f"{bench}_job.npz"
    result = build_dir / f"{bench}_result.json"
    status = build_dir / f"{bench}_progress.txt"
    for f in (result, status):
        f.unlink(missing_ok=True)
    np.savez(job_file, byte_cycles=10 * core.divisor, **job)
    sim_build = build_dir / ("sim_build_trace" if trace else "sim_build")
    t0 = time.monotonic()
    with _watch(status, progress, t0):
        tests, failed = cocotb_run([src, *extra_sources], "board", f"lowbit.sim.{bench}", sim_build,
                                   waves=trace is not None, build_args=build_args,
                                   extra_env={"LOWBIT_JOB": str(job_file), "LOWBIT_RESULT": str(result),
                                              "LOWBIT_PROGRESS": str(status)})
    wall = time.monotonic() - t0
    if trace is not None and (sim_build / "dump.vcd").exists():
        shutil.move(str(sim_build / "dump.vcd"), str(trace))
    if failed or not result.exists():
        log = sim_build / "sim.log"
        raise LowbitError(f"the board simulation failed ({failed} of {tests} tests)", f"see {log}")
    out = json.loads(result.read_text())
    if "error" in out:
        raise LowbitError(out["error"], out["hint"])
    out["wall_seconds"] = round(wall, 2)
    return out


@contextlib.contextmanager
def _watch(status: Path, progress, t0: float, every: float = 2.0):
    """While the simulation runs, report the ``done total`` lines the testbench writes to ``status``
    through ``progress`` (inputs done / total and the rate), every ``every`` seconds."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def poll():
        last = None
        while not stop.wait(every):
            try:
                done, total = map(int, status.read_text().split())
            except (OSError, ValueError):
                continue
            if done != last:
                rate = done / max(time.monotonic() - t0, 1e-9)
                progress(f"simulated board: {done}/{total} inputs ({rate:.1f} inputs/s)")
                last = done

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def simulate_board(core, build_dir, codes, *, batch: int = 8, clk_mhz: float = 12.0, progress=None,
                   trace=None, extra_sources=(), build_args=(), settle_cycles: int = 3, load=None,
                   chunk_bytes: int | None = None, flash: bytes = b"") -> dict:
    """Send ``codes`` (N, input_count) through a simulated board; returns outputs, argmax, counters,
    simulated cycles and wall time. ``progress(message)`` hears how far it got; ``trace`` names a VCD
    file for the waveform (a separate Verilator build with tracing). ``extra_sources`` are Verilog files
    the core needs (a gate-level netlist and its cell models), built with ``build_args``. ``load``
    (a :class:`lowbit.sw.flow.overlay.LoadImage`) is loaded through the link first, in LOAD frames of
    ``chunk_bytes`` (default: the board's capacity), and the result's ``load`` says what it took.
    ``flash``: the blob in the board's SPI flash (a core built with ``flash_boot``); the host waits
    ``settle_cycles`` for the board to boot from it."""
    job = {}
    if load is not None:
        from ..sw.link import frames
        job = {f"load_{s}": np.frombuffer(load.spaces[s], dtype=np.uint8) for s in range(4)}
        job["load_word_bytes"] = np.array([load.word_bytes[s] for s in range(4)])
        job["load_commit"] = np.array([load.commit[f.name] for f in frames.COMMIT_FIELDS], dtype=np.int64)
        job["chunk_bytes"] = chunk_bytes or core.identity.capacity["chunk_bytes"]
    return _run_bench(core, build_dir, "tb_board", progress=progress, trace=trace, extra_sources=extra_sources,
                      build_args=build_args, flash=flash, codes=np.asarray(codes, dtype=np.int64), batch=batch,
                      clk_mhz=clk_mhz, settle_cycles=settle_cycles, **job)


def inject_faults(core, build_dir, codes, reference, count: int, seed: int = 0, clk_mhz: float = 12.0) -> dict:
    """Fault injection (:mod:`lowbit.sim.faults`) on the simulated board's link; returns the counts."""
    return _run_bench(core, build_dir, "tb_faults", codes=np.asarray(codes, dtype=np.int64),
                      reference=np.asarray(reference, dtype=np.int64), count=count, seed=seed, clk_mhz=clk_mhz)
