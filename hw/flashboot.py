"""Boot a loadable overlay from SPI flash: after reset, copy the model blob through the host link.

SPRAM has no bitstream initialisation, so a stand-alone board fetches its model at power-up. The blob
(:func:`lowbit.sw.link.frames.flash_blob`) sits in the board's SPI flash at a fixed offset after the
bitstream: a 4-byte magic, a 4-byte length, then exactly the LOAD and COMMIT frames the host would send.
:class:`FlashBoot` reads it with :class:`SPIFlashReader` and feeds the frames, byte by byte, into the
host link's receiver while the link is idle (the link ignores bytes while it answers), discarding the
link's responses; so a model booted from flash is checked exactly as a loaded one (every chunk's CRC,
the COMMIT's read-back CRC-32), and a missing or damaged blob leaves the board empty. While it boots,
the UART is disconnected from the link; afterwards ``booting`` is low and the link is the host's.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.link import frames

__all__ = ["SPIFlashReader", "FlashBoot", "READ", "WAKE"]

#: SPI NOR commands: read data (24-bit address), release from deep power-down.
READ, WAKE = 0x03, 0xAB
#: Cycles after WAKE before the flash answers (tRES1 is 3 us at most; 64 cycles at up to 20 MHz).
WAKE_CYCLES = 64


class SPIFlashReader(wiring.Component):
    """Reads a SPI NOR flash (mode 0, MSB first, four clock cycles a bit) from byte ``offset`` on, one
    byte a beat of ``o``; the flash's clock pauses while ``o`` is not taken. ``cs`` is active high
    (the board's pin is inverted by the platform)."""

    def __init__(self, offset: int):
        self.offset = offset
        super().__init__({"cs": Out(1), "sck": Out(1), "copi": Out(1), "cipo": In(1),
                          "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        sr = Signal(32)                 # bits out (MSB first) and in
        nbits = Signal(range(33))
        phase = Signal(2)
        wait = Signal(range(WAKE_CYCLES + 1))

        def shift(then, on_sample=None):
            # One bit per four cycles: sck low for two (copi changes), high for two (cipo sampled on
            # the rising edge, copi held while the flash samples it).
            m.d.sync += phase.eq(phase + 1)
            with m.Switch(phase):
                with m.Case(0):
                    m.d.sync += [self.sck.eq(0), self.copi.eq(sr[31])]
                with m.Case(2):
                    m.d.sync += [self.sck.eq(1), sr.eq(Cat(self.cipo, sr[:31])), nbits.eq(nbits - 1)]
                with m.Case(3):
                    with m.If(nbits == 0):
                        then()

        with m.FSM(name="spi"):
            with m.State("WAKE"):
                m.d.sync += [self.cs.eq(1), sr.eq(WAKE << 24), nbits.eq(8), phase.eq(0)]
                m.next = "WAKE_BITS"
            with m.State("WAKE_BITS"):
                def woke():
                    m.d.sync += [self.cs.eq(0), self.sck.eq(0), wait.eq(WAKE_CYCLES)]
                    m.next = "WAKE_WAIT"
                shift(woke)
            with m.State("WAKE_WAIT"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += [self.cs.eq(1), sr.eq((READ << 24) | (self.offset & 0xFFFFFF)), nbits.eq(32),
                                 phase.eq(0)]
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                def sent():
                    m.d.sync += nbits.eq(8)
                    m.next = "BYTE"
                shift(sent)
            with m.State("BYTE"):
                def got():
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(sr[:8])]
                    m.next = "HAND"
                shift(got)
            with m.State("HAND"):
                with m.If(self.o.ready):
                    m.d.sync += [self.o.valid.eq(0), nbits.eq(8), phase.eq(0)]
                    m.next = "BYTE"
        return m


class FlashBoot(wiring.Component):
    """Reads the blob at ``offset`` and feeds its frames into the link (module docstring).

    ``rx`` is the stream into the link's receiver while ``booting``; ``link_busy`` is the link's
    "answering" flag (bytes sent meanwhile would be dropped)."""

    def __init__(self, offset: int):
        self.offset = offset
        super().__init__({"cs": Out(1), "sck": Out(1), "copi": Out(1), "cipo": In(1),
                          "rx": Out(stream.Signature(8)), "link_busy": In(1), "booting": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = SPIFlashReader(self.offset)
        m.d.comb += [self.cs.eq(reader.cs), self.sck.eq(reader.sck), self.copi.eq(reader.copi),
                     reader.cipo.eq(self.cipo)]
        head = len(frames.FLASH_MAGIC) + 4
        header = Signal(8 * head)
        got = Signal(range(head + 1))
        left = Signal(32)
        with m.FSM(name="boot"):
            with m.State("HEADER"):
                m.d.comb += reader.o.ready.eq(1)
                with m.If(reader.o.valid):
                    m.d.sync += [header.eq(Cat(header[8:], reader.o.payload)), got.eq(got + 1)]
                    with m.If(got == head - 1):
                        m.next = "CHECK"
            with m.State("CHECK"):
                magic = int.from_bytes(frames.FLASH_MAGIC, "little")
                length = header[8 * len(frames.FLASH_MAGIC):]
                with m.If((header[:8 * len(frames.FLASH_MAGIC)] == magic) & (length != 0) &
                          (length <= frames.FLASH_MAX_BLOB)):
                    m.d.sync += left.eq(length)
                    m.next = "FEED"
                with m.Else():
                    m.next = "DONE"         # no model in the flash: the board stays empty
            with m.State("FEED"):
                m.d.comb += [self.rx.valid.eq(reader.o.valid & ~self.link_busy), self.rx.payload.eq(reader.o.payload),
                             reader.o.ready.eq(self.rx.ready & ~self.link_busy)]
                with m.If(reader.o.valid & ~self.link_busy & self.rx.ready):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # The last frame's answer (COMMIT) is being sent: wait for it before the host takes over.
                with m.If(~self.link_busy):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += self.booting.eq(0)
        return m
