"""A SPI NOR flash model for simulated boards: READ (0x03, 24-bit address) and WAKE (0xAB), mode 0.

It holds ``contents`` from byte ``base`` on (reads elsewhere give 0xFF, an erased flash), samples
``copi`` on the rising edge of ``sck`` and changes ``cipo`` after each falling edge, as a real part
does; being synchronous logic, it sees the pins one clock late, which :class:`lowbit.hw.flashboot.SPIFlashReader`'s
four clocks a bit allow for.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SPIFlashModel"]


class SPIFlashModel(wiring.Component):
    def __init__(self, contents: bytes, base: int):
        self.contents, self.base = bytes(contents) or b"\xff\xff", base
        super().__init__({"cs": In(1), "sck": In(1), "copi": In(1), "cipo": Out(1)})

    def elaborate(self, platform):
        m = Module()
        n = len(self.contents)
        m.submodules.mem = mem = Memory(shape=8, depth=n, init=list(self.contents))
        rd = mem.read_port(domain="comb")
        prev = Signal()
        m.d.sync += prev.eq(self.sck)
        rise, fall = self.sck & ~prev, ~self.sck & prev
        shift_in = Signal(32)
        count = Signal(range(41))            # bits of command and address seen
        addr = Signal(24)
        bit = Signal(range(8))
        reading = Signal()
        index = Signal(25)
        m.d.comb += [index.eq(addr - self.base), rd.addr.eq(index)]
        byte = Mux((addr >= self.base) & (index < n), rd.data, 0xFF)
        with m.If(~self.cs):
            m.d.sync += [count.eq(0), reading.eq(0), bit.eq(0)]
        with m.Elif(rise & ~reading):
            m.d.sync += [shift_in.eq(Cat(self.copi, shift_in[:31])), count.eq(count + 1)]
            with m.If(count == 31):
                with m.If(shift_in[23:31] == 0x03):
                    m.d.sync += [addr.eq(Cat(self.copi, shift_in[:23])), reading.eq(1), bit.eq(0)]
        with m.Elif(fall & reading):
            m.d.sync += self.cipo.eq(byte.bit_select((7 - bit).as_unsigned()[:3], 1))
            m.d.sync += bit.eq(bit + 1)
            with m.If(bit == 7):
                m.d.sync += addr.eq(addr + 1)
        return m
