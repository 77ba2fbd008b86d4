"""UART receiver and transmitter (8N1) with stream interfaces.

``divisor`` is clock cycles per bit (at least 4): 12 MHz / 3 Mbaud = 4, 12 MHz / 115200 = 104; a
simulated board may run at a few clocks per bit. The receiver synchronises ``rx`` through two
flip-flops, samples each bit in its middle, and drops a byte whose stop bit is 0 (a framing error,
counted in ``framing_errors``). It never stalls: a byte the consumer is not ready for is dropped and
counted in ``overruns`` (the link handler is always ready).
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "divisor_for"]


def divisor_for(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit; ValueError if the rate is off by more than 2 % or below 4 cycles."""
    div = round(clk_hz / baud)
    if div < 4:
        raise ValueError(f"{baud:.0f} baud needs at least 4 clocks per bit; {clk_hz / 1e6:g} MHz gives {div}")
    if abs(clk_hz / div - baud) / baud > 0.02:
        raise ValueError(f"{baud:.0f} baud is {abs(clk_hz / div - baud) / baud:.1%} off at {clk_hz / 1e6:g} MHz")
    return div


class UARTRx(wiring.Component):
    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor must be at least 4, not {divisor}")
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "framing_errors": Out(16), "overruns": Out(16)})

    def elaborate(self, platform):
        m = Module()
        sync1 = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(10))
        shreg = Signal(8)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += [timer.eq(self.divisor // 2 - 1), bit.eq(0)]
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(line):        # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += timer.eq(self.divisor - 1)
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(self.divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overruns.eq(self.overruns + 1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):          # wait for the line to return high before hunting again
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor must be at least 4, not {divisor}")
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)
        timer = Signal(range(self.divisor))
        bits = Signal(range(11))
        # The sender's byte goes into a holding register and the line is a flip-flop of its own, written
        # every cycle: the sender sees a ready that is a flip-flop, and its handshake logic, the
        # shifter's enable and the route to the pin are separate paths (as one, they were an iCEBreaker
        # overlay's critical path at 40 MHz). The next byte waits in the holding register while one is
        # sent.
        line = Signal(init=1)
        m.d.sync += line.eq(shreg[0])
        hold, full = Signal(8), Signal()
        m.d.comb += [self.tx.eq(line), self.i.ready.eq(~full)]
        with m.If(self.i.valid & ~full):
            m.d.sync += [hold.eq(self.i.payload), full.eq(1)]
        with m.If(bits == 0):
            with m.If(full):
                m.d.sync += [shreg.eq(Cat(0, hold, 1)), bits.eq(10), timer.eq(self.divisor - 1), full.eq(0)]
        with m.Elif(timer == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1), timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
