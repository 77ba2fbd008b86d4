"""A simulated board: the real board core behind a host-side UART pair and byte FIFOs.

The host side of a real board is a USB-UART; here it is gateware too (:class:`lowbit.hw.serial.UARTTx`
into the core's ``rx`` pin, :class:`~lowbit.hw.serial.UARTRx` from its ``tx`` pin), with FIFOs so that
a testbench only moves bytes: ``h_w_*`` queues bytes to send, ``h_r_*`` takes received bytes (``h_r_data`` is valid while ``h_r_rdy``; ``h_r_en`` pops). Every
bit still crosses the core's UART pins at the configured clocks per bit. A core that boots from SPI
flash (``flash_*`` pins) gets :class:`lowbit.sim.spi_flash.SPIFlashModel` holding ``flash``.

``clk`` and ``rst`` are ports of the harness. The core runs in a domain of its own whose reset is ``rst``
registered; the harness's FIFOs and UARTs take ``rst`` directly, so a byte queued in the cycle after reset
is kept. Verilator evaluates the logic a top-level input reaches combinationally at every evaluation, each
clock edge included, and a reset port straight into the core reaches all of its next-state logic.
Registered, that logic is evaluated when a register changes. 16 MNIST inputs through a TFC W2A2 board
(2.32 M cycles): 21.8 s of simulation with the reset port, 11.8 s registered
(:func:`lowbit.sim.verilator.cocotb_run` gives VPI the top-level ports only; with every signal public it
took 62.5 s).
"""

from __future__ import annotations

from amaranth import ClockDomain, DomainRenamer, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..hw.serial import UARTRx, UARTTx

__all__ = ["BoardHarness"]


class BoardHarness(wiring.Component):
    def __init__(self, core, divisor: int, depth: int = 2048, flash: bytes = b""):
        self.core, self.divisor, self.depth, self.flash = core, divisor, depth, flash
        super().__init__({
            "h_w_data": In(8), "h_w_en": In(1), "h_w_level": Out(range(depth + 1)),
            "h_r_data": Out(8), "h_r_rdy": Out(1), "h_r_en": In(1), "h_r_level": Out(range(depth + 1)),
            "leds": Out(2), "clk": In(1), "rst": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain()
        m.domains.core = core_domain = ClockDomain()
        core_rst = Signal(init=1, reset_less=True)
        m.d.comb += [sync.clk.eq(self.clk), sync.rst.eq(self.rst), core_domain.clk.eq(self.clk),
                     core_domain.rst.eq(core_rst)]
        m.d.sync += core_rst.eq(self.rst)
        core = self.core
        m.submodules.core = DomainRenamer("core")(core)
        m.submodules.host_tx = htx = UARTTx(self.divisor)
        m.submodules.host_rx = hrx = UARTRx(self.divisor)
        m.submodules.wq = wq = SyncFIFOBuffered(width=8, depth=self.depth)
        m.submodules.rq = rq = SyncFIFOBuffered(width=8, depth=self.depth)
        m.d.comb += [wq.w_data.eq(self.h_w_data), wq.w_en.eq(self.h_w_en), self.h_w_level.eq(wq.level),
                     htx.i.payload.eq(wq.r_data), htx.i.valid.eq(wq.r_rdy), wq.r_en.eq(htx.i.ready),
                     core.rx.eq(htx.tx), hrx.rx.eq(core.tx),
                     rq.w_data.eq(hrx.o.payload), rq.w_en.eq(hrx.o.valid), hrx.o.ready.eq(rq.w_rdy),
                     self.h_r_data.eq(rq.r_data), self.h_r_rdy.eq(rq.r_rdy), rq.r_en.eq(self.h_r_en),
                     self.h_r_level.eq(rq.level),
                     self.leds.eq(core.leds)]
        if "flash_cs" in core.signature.members:
            # The board's SPI flash, holding ``flash`` at the core's boot offset (erased elsewhere).
            from .spi_flash import SPIFlashModel
            m.submodules.flash = flash = SPIFlashModel(self.flash, core.flash_boot)
            m.d.comb += [flash.cs.eq(core.flash_cs), flash.sck.eq(core.flash_clk), flash.copi.eq(core.flash_copi),
                         core.flash_cipo.eq(flash.cipo)]
        return m
