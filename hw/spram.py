"""A single-port RAM with byte-lane writes: iCE40 UltraPlus SPRAM blocks when synthesised for one.

:class:`SinglePortRAM` has one address for reads and writes (what an SB_SPRAM256KA has): ``ren`` reads
word ``addr`` into ``rdata`` the cycle after (held until the next read), ``wen`` (one bit a byte lane)
writes the lanes of ``wdata`` at ``addr``; a cycle does one or the other. Its contents start undefined
(an SPRAM has no bitstream initialisation), so whatever is read has been written first.

Elaborated with a platform whose device is an iCE40 UltraPlus (``iCE40UP…``), it is ``width / 16``
SB_SPRAM256KA side by side (16K words of 16 bits each, 4-bit write masks: a byte lane is two of
them); otherwise (Amaranth's simulator, Verilator on ``verilog.convert`` without a platform, other
devices) it is an Amaranth :class:`~amaranth.lib.memory.Memory` with the same behaviour.
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SinglePortRAM", "SPRAM_WORDS", "SPRAM_BITS", "is_ultraplus"]

#: One SB_SPRAM256KA: 16K words of 16 bits.
SPRAM_WORDS, SPRAM_BITS = 16384, 16


def is_ultraplus(platform) -> bool:
    return platform is not None and str(getattr(platform, "device", "")).startswith("iCE40UP")


class SinglePortRAM(wiring.Component):
    def __init__(self, width: int, depth: int):
        if width % SPRAM_BITS or not 1 <= depth <= SPRAM_WORDS:
            raise ValueError(f"a single-port RAM of {width} x {depth} is not whole SPRAM blocks of "
                             f"{SPRAM_BITS} x {SPRAM_WORDS}")
        self.width, self.depth = width, depth
        super().__init__({"addr": In(range(depth)), "ren": In(1), "wen": In(width // 8), "wdata": In(width),
                          "rdata": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if not is_ultraplus(platform):
            m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
            rp, wp = mem.read_port(), mem.write_port(granularity=8)
            m.d.comb += [rp.addr.eq(self.addr), rp.en.eq(self.ren), wp.addr.eq(self.addr), wp.data.eq(self.wdata),
                         wp.en.eq(self.wen), self.rdata.eq(rp.data)]
            return m
        outs = []
        address = Cat(self.addr, Const(0, 14 - len(self.addr)))
        for b in range(self.width // SPRAM_BITS):
            lanes = self.wen[2 * b:2 * b + 2]
            dataout = Signal(SPRAM_BITS, name=f"spram{b}_out")
            m.submodules[f"spram{b}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=address, i_DATAIN=self.wdata[SPRAM_BITS * b:SPRAM_BITS * (b + 1)],
                i_MASKWREN=Cat(lanes[0], lanes[0], lanes[1], lanes[1]),
                i_WREN=lanes.any(), i_CHIPSELECT=self.ren | lanes.any(), i_CLOCK=ClockSignal("sync"),
                i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=dataout)
            outs.append(dataout)
        m.d.comb += self.rdata.eq(Cat(*outs))
        return m
