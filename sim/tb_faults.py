"""cocotb test: fault injection on the serial link of a simulated board.

Job (``LOWBIT_JOB`` .npz): ``codes`` (one input), ``reference`` (its exact outputs), ``count``, ``seed``,
``clk_mhz``, ``byte_cycles``. For each fault: send the faulty bytes, collect what the board answers until
the line is quiet, classify it, then send one good INFER (the driver retries up to twice) and check
its answer. Counts go to ``LOWBIT_RESULT`` as JSON.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles

from lowbit.sim.board_sim import CocotbTransport
from lowbit.sim.faults import make_faults
from lowbit.sw.link import frames
from lowbit.sw.link.host import Device, LinkError


@cocotb.test()
async def inject(dut):
    job = np.load(os.environ["LOWBIT_JOB"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.h_w_en.value = 0
    dut.h_r_en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    clk_hz = float(job["clk_mhz"]) * 1e6
    byte_s = int(job["byte_cycles"]) / clk_hz
    transport = CocotbTransport(dut, 10.0, int(job["byte_cycles"]), clk_hz)
    codes = job["codes"]
    reference = job["reference"].tolist()

    def host():
        device = Device(transport, timeout_s=200 * byte_s)
        ident = device.identify()
        payload = frames.pack_inputs((codes > 0).astype(int) if ident.input_binary else codes)
        counts = {"injected": 0, "detected": 0, "dropped": 0, "answered_correctly": 0, "wrong_answers": 0,
                  "recovered": 0, "hung": 0}
        by_kind = {}
        parser = frames.FrameParser()
        for kind, data in make_faults(frames.INFER, payload, int(job["count"]), int(job["seed"])):
            counts["injected"] += 1
            transport.write(data)
            # The bytes take len(data) byte times to cross the UART; after that the board answers, or
            # drops a silent partial frame after 32 byte times. Wait until 60 quiet byte times pass.
            got, quiet, limit = [], 0.0, (len(data) + 60) * byte_s
            while quiet < limit:
                chunk = transport.read(4096, 10 * byte_s)
                if chunk:
                    got += parser.feed(chunk)
                    quiet, limit = 0.0, 60 * byte_s
                else:
                    quiet += 10 * byte_s
            if any(op == frames.ERROR for op, _ in got):
                outcome = "detected"
            elif not got:
                outcome = "dropped"
            else:
                values, _ = frames.unpack_outputs(got[-1][1], 1, ident.output_count, ident.output_bytes,
                                                  ident.output_signed) if got[-1][0] == frames.INFER | 0x80 else ([None], None)
                outcome = "answered_correctly" if values[0] == reference else "wrong_answers"
            counts[outcome] += 1
            by_kind.setdefault(kind, {}).setdefault(outcome, 0)
            by_kind[kind][outcome] += 1
            try:
                values, _ = device.infer(codes[None, :], batch=1, retries=2)
                counts["recovered" if values[0].tolist() == reference else "wrong_answers"] += 1
            except LinkError:
                counts["hung"] += 1
        return counts, by_kind, device.read_counters()

    counts, by_kind, counters = await bridge(host)()
    with open(os.environ["LOWBIT_RESULT"], "w") as f:
        json.dump({"counts": counts, "by_kind": by_kind, "counters": counters}, f)
