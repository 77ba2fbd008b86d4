from amaranth import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from lowbit.hw.iowrap import SerialWrapper, wrapper_overhead


class _Products(wiring.Component):
    def __init__(self):
        super().__init__({"i": In(stream.Signature(data.ArrayLayout(unsigned(4), 4))), "o": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o[:8].eq(self.i.payload[0] * self.i.payload[1]),
                     self.o[8:].eq(self.i.payload[2] * self.i.payload[3]),
                     self.i.ready.eq(self.i.valid)]
        return m


def test_overhead_counts_bits_not_view_elements():
    # valid + 4x4-bit payload in; ready + 16 bits out
    assert wrapper_overhead(_Products()) == {"input_bits": 17, "output_bits": 17}


def test_inputs_are_shifted_in_and_outputs_xor_folded():
    dut = SerialWrapper(_Products())
    operands = [3, 5, 15, 9]  # products 15 and 135
    # input bits in signature order: payload (bits 0..15), then valid (bit 16); the last bit shifted in
    # ends at bit 0
    word = sum(v << (4 * k) for k, v in enumerate(operands)) | (1 << 16)
    out_bits = 15 | (135 << 8)
    expected = bin(out_bits | (1 << 16)).count("1") & 1  # ready = valid = 1 is an output too

    async def bench(ctx):
        ctx.set(dut.load, 1)
        for bit in reversed(range(17)):
            ctx.set(dut.sin, (word >> bit) & 1)
            await ctx.tick()
        ctx.set(dut.load, 0)
        await ctx.tick()
        assert ctx.get(dut.core.i.payload[2]) == 15 and ctx.get(dut.core.o) == out_bits
        await ctx.tick()
        assert ctx.get(dut.sout) == expected

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
