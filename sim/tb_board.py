"""cocotb test: the host driver (lowbit.sw.link.host.Device) against the simulated board, via files.

``LOWBIT_JOB`` names an .npz with ``codes`` (N, inputs), ``batch``, ``clk_mhz``, ``byte_cycles``;
the outputs, argmax, identity and counters are written as JSON to ``LOWBIT_RESULT``.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles

from lowbit.sim.board_sim import CocotbTransport
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
        ident = device.identify()
        # A few frames at a time, so the progress file says how far the run is.
        step = batch * max(1, 64 // batch)
        values, argmax = [], []
        for start in range(0, len(codes), step):
            v, a = device.infer(codes[start:start + step], batch=batch)
            values.append(v)
            argmax.append(a)
            if progress:
                with open(progress, "w") as f:
                    f.write(f"{min(start + step, len(codes))} {len(codes)}\n")
        counters = device.read_counters()
        return ident, np.concatenate(values), np.concatenate(argmax), counters

    import time
    t0 = time.monotonic()
    ident, values, argmax, counters = await bridge(host)()
    run_seconds = time.monotonic() - t0        # the simulation alone, without the Verilator build
    from cocotb.utils import get_sim_time
    cycles = int(get_sim_time("ns") / period)
    with open(os.environ["LOWBIT_RESULT"], "w") as f:
        json.dump({"identity": ident.__dict__, "values": values.tolist(), "argmax": argmax.tolist(),
                   "counters": counters, "sim_cycles": cycles,
                   "bytes_sent": transport.bytes_sent, "bytes_received": transport.bytes_received,
                   "run_seconds": run_seconds}, f)
