"""The cocotb stream BFMs against a registered stream stage, through Verilator."""

import doctest

from amaranth import Module, signed
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.sim import cocotb_stream
from lowbit.sim.verilator import cocotb_run


class _AddOne(wiring.Component):
    """One-deep registered stream stage adding 1 to each lane (a correct valid/ready pipeline)."""

    def __init__(self):
        layout = data.ArrayLayout(signed(4), 3)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += self.o.valid.eq(1)
            for k in range(3):
                m.d.sync += self.o.payload[k].eq(self.i.payload[k] + 1)
        return m


def test_doctests():
    assert doctest.testmod(cocotb_stream).failed == 0


def test_stream_bfms_deliver_every_beat_once_in_order(tmp_path):
    src = tmp_path / "addone.v"
    src.write_text(verilog.convert(_AddOne(), name="addone"))
    assert cocotb_run([src], "addone", "lowbit.sim.tb_stream_echo", tmp_path / "ok") == (1, 0)
    # The same bench must fail when it expects something else.
    assert cocotb_run([src], "addone", "lowbit.sim.tb_stream_echo", tmp_path / "ok",
                      extra_env={"LOWBIT_TB_ADD": "2"}) == (1, 1)
