"""cocotb test: the host driver (lowbit.sw.link.host.Device) against the simulated board, via files.

``LOWBIT_JOB`` names an .npz with ``codes`` (N, inputs), ``batch``, ``clk_mhz``, ``byte_cycles``, and
optionally a model to load first through the link (``load_0`` … ``load_3``: the bytes of each load
space, ``load_word_bytes``, ``load_commit`` in the order of ``frames.COMMIT_FIELDS``, ``chunk_bytes``);
the outputs, argmax, identity, counters and the load's cycles are written as JSON to ``LOWBIT_RESULT``.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles

from lowbit.sim.board_sim import CocotbTransport
from lowbit.sw.link import frames
from lowbit.sw.link.host import Device


@cocotb.test()
async def run_job(dut):
    job = np.load(os.environ["LOWBIT_JOB"])
    progress = os.environ.get("LOWBIT_PROGRESS")
    # Simulated time is counted in cycles: a nominal 10 ns period, converted with clk_mhz where needed.
    period = 10.0
    cocotb.start_soon(Clock(dut.clk, period, unit="ns").start())
    dut.h_w_en.value = 0
    dut.h_r_en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    # A synthesised board top holds its core in reset for a power-on delay (Amaranth's iCE40 platform:
    # about 180 cycles); a real host is not faster than configuration either.
    await ClockCycles(dut.clk, int(job["settle_cycles"]) if "settle_cycles" in job.files else 3)
    transport = CocotbTransport(dut, period, int(job["byte_cycles"]), float(job["clk_mhz"]) * 1e6)

    def host():
        codes, batch = job["codes"], int(job["batch"])
        # Silence the driver waits for before it retries: 10 ms of board time, plus the time the longest
        # request takes on the wire (the board answers only after the last byte of a 784-input batch).
        wire_s = (batch * codes.shape[1] + 16) * int(job["byte_cycles"]) / (float(job["clk_mhz"]) * 1e6)
        device = Device(transport, timeout_s=0.01 + 1.5 * wire_s)
        loaded = None
        if "load_commit" in job.files:
            from cocotb.utils import get_sim_time
            start = get_sim_time("ns")
            chunk = int(job["chunk_bytes"])
            # A LOAD is answered after its copy; a COMMIT after reading every word back (a few cycles each).
            device.timeout_s = 0.01 + 1.5 * (chunk + 16) * int(job["byte_cycles"]) / (float(job["clk_mhz"]) * 1e6)
            spaces = {s: bytes(job[f"load_{s}"].astype(np.uint8)) for s in range(4)}
            commit = dict(zip((f.name for f in frames.COMMIT_FIELDS), (int(v) for v in job["load_commit"])))
            words = sum(commit[k] for k in ("program_words", "weight_words", "param_words"))
            device.timeout_s += 40 * words / (float(job["clk_mhz"]) * 1e6)
            device.load(spaces, dict(enumerate(int(v) for v in job["load_word_bytes"])), commit, chunk)
            device.timeout_s = 0.01 + 1.5 * wire_s
            loaded = {"bytes": sum(len(b) for b in spaces.values()), "sim_cycles": int((get_sim_time("ns") - start) / period)}
        ident = device.identify()
        # A few frames at a time, so the progress file says how far the run is.
        step = batch * max(1, 64 // batch)
        values, argmax = [np.zeros((0, ident.output_count), dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for start in range(0, len(codes), step):
            v, a = device.infer(codes[start:start + step], batch=batch)
            values.append(v)
            argmax.append(a)
            if progress:
                with open(progress, "w") as f:
                    f.write(f"{min(start + step, len(codes))} {len(codes)}\n")
        counters = device.read_counters()
        return ident, np.concatenate(values), np.concatenate(argmax), counters, loaded

    import time
    t0 = time.monotonic()
    from lowbit.sw.errors import LowbitError
    try:
        ident, values, argmax, counters, loaded = await bridge(host)()
    except LowbitError as exc:          # the driver's refusal, said as it would be on a real board
        with open(os.environ["LOWBIT_RESULT"], "w") as f:
            json.dump({"error": exc.message, "hint": exc.hint}, f)
        return
    run_seconds = time.monotonic() - t0        # the simulation alone, without the Verilator build
    from cocotb.utils import get_sim_time
    cycles = int(get_sim_time("ns") / period)
    with open(os.environ["LOWBIT_RESULT"], "w") as f:
        json.dump({"identity": ident.__dict__, "values": values.tolist(), "argmax": argmax.tolist(),
                   "counters": counters, "sim_cycles": cycles, "load": loaded,
                   "bytes_sent": transport.bytes_sent, "bytes_received": transport.bytes_received,
                   "run_seconds": run_seconds}, f)
