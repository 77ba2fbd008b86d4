"""cocotb testbench for one layer engine (Verilog from ``amaranth.back.verilog``), bit for bit.

The vectors file named by ``LOWBIT_TB_VECTORS`` (JSON, written by :func:`lowbit.sim.engine_bench.write_vectors`)
holds the input chunks (hex words, one per beat), the expected output beats from the NumPy integer
reference and the output width. Random idle cycles on the input and stalls on the output exercise the
handshakes; every output beat is compared. Run by tests/test_engine_cocotb.py.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from lowbit.sim.cocotb_stream import StreamSink, StreamSource, unpack_lanes


@cocotb.test()
async def engine_matches_the_reference(dut):
    spec = json.loads(open(os.environ["LOWBIT_TB_VECTORS"]).read())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    source = StreamSource(dut, "i", dut.clk, idle=spec["idle"], seed=1)
    sink = StreamSink(dut, "o", dut.clk, stall=spec["stall"], seed=2)
    sender = cocotb.start_soon(source.send(int(w, 16) for w in spec["chunks"]))
    words = await sink.receive(len(spec["expected"]), timeout_cycles=10_000)
    await sender
    got = [unpack_lanes(w, spec["out_bits"], 1, spec["out_signed"])[0] for w in words]
    bad = [i for i, (g, e) in enumerate(zip(got, spec["expected"])) if g != e]
    assert not bad, f"{len(bad)} of {len(got)} outputs differ; first at beat {bad[0]}: {got[bad[0]]} != {spec['expected'][bad[0]]}"
