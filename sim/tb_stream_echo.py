"""cocotb testbench for the stream BFMs: a DUT that adds ``LOWBIT_TB_ADD`` to each of 3 signed 4-bit lanes.

Run by tests/test_cocotb_stream.py; checks every beat arrives once, in order, with random stalls.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from lowbit.sim.cocotb_stream import StreamSink, StreamSource, pack_lanes, unpack_lanes


@cocotb.test()
async def beats_pass_in_order_under_stalls(dut):
    add = int(os.environ.get("LOWBIT_TB_ADD", "1"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    rng = random.Random(7)
    vectors = [[rng.randint(-8, 6) for _ in range(3)] for _ in range(300)]
    source = StreamSource(dut, "i", dut.clk, idle=0.3, seed=3)
    sink = StreamSink(dut, "o", dut.clk, stall=0.4, seed=4)
    sender = cocotb.start_soon(source.send(pack_lanes(v, 4) for v in vectors))
    words = await sink.receive(len(vectors), timeout_cycles=100)
    await sender
    got = [unpack_lanes(w, 4, 3, signed=True) for w in words]
    assert got == [[x + add for x in v] for v in vectors]
