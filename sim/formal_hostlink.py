"""Formal specs for the frame handler (:class:`lowbit.hw.hostlink.HostLink`).

The handler is driven with free inputs: any received byte in any cycle (its receiver never stalls),
any network output beat (the producer obeys the stream rules: an offered beat stays offered,
unchanged, until taken), any ``mac_cycles`` and any back-pressure on both of its output streams.

:class:`HostLinkHandshakeSpec` asserts, for every such input sequence up to the BMC depth:

* **stable while stalled** on ``tx_byte`` and ``net_i``: a beat offered and not taken stays offered
  with the same payload;
* **the busy and in-body registers are the transmitter's state**: the flip-flop the receiver reads
  equals "out of IDLE, or a request waiting" as the transmitter's FSM defines it, and the one that
  enables the body bytes equals "in BODY";
* with ``lockstep=True``, **valid never depends on ready** on ``tx_byte``: a second copy sees the same
  inputs except ``tx_byte.ready`` flipped in one solver-chosen cycle, and offers the same ``valid``
  up to that cycle.

:class:`HostLinkCoverSpec` shows the depth is deep enough to matter: within it the solver must find
an input beat accepted by the network, a network output taken, and a response byte sent after that
(a whole INFER exchange), and an ERROR frame counted.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal, Value, signed, unsigned
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Assert, Assume, Cover

from ..hw.hostlink import HostLink
from ..sw.link import frames

__all__ = ["small_hostlink", "HostLinkHandshakeSpec", "HostLinkCoverSpec"]


def small_hostlink(timeout: int = 16) -> HostLink:
    """A frame handler for a network with 2 four-bit inputs and 2 one-byte outputs, batch 1 (the
    smallest configuration that still has every state: the logic does not depend on the sizes)."""
    ident = frames.Identity(0x1234ABCD, 2, 2, 1, 4, False, False, 1, True, ())
    return HostLink(ident, unsigned(4), signed(8), timeout=timeout)


def _drive(m, copies):
    """Free inputs shared by all copies; returns the free ``tx_byte.ready`` and the first copy."""
    rx_valid, rx_payload = AnySeq(1), AnySeq(8)
    no_valid, no_payload = AnySeq(1), AnySeq(8)
    tx_ready, ni_ready, mac = AnySeq(1), AnySeq(1), AnySeq(32)
    for c in copies:
        m.d.comb += [c.rx_byte.valid.eq(rx_valid), c.rx_byte.payload.eq(rx_payload),
                     c.net_o.valid.eq(no_valid), c.net_o.payload.eq(no_payload), c.mac_cycles.eq(mac),
                     c.net_i.ready.eq(ni_ready)]
    a = copies[0]
    prev_offer, prev_payload = Signal(), Signal(8)
    m.d.sync += [prev_offer.eq(a.net_o.valid & ~a.net_o.ready), prev_payload.eq(no_payload)]
    with m.If(prev_offer & ~Initial()):
        m.d.comb += [Assume(no_valid), Assume(no_payload == prev_payload)]
    return tx_ready


class HostLinkHandshakeSpec(Elaboratable):
    def __init__(self, make=small_hostlink, lockstep: bool = False):
        self.make, self.lockstep = make, lockstep

    def elaborate(self, platform):
        m = Module()
        m.submodules.a = a = self.make()
        copies = [a]
        if self.lockstep:
            m.submodules.b = b = self.make()
            copies.append(b)
        tx_ready = _drive(m, copies)
        m.d.comb += a.tx_byte.ready.eq(tx_ready)
        for c in copies:
            m.d.comb += [Assert(c._busy == c._busy_fsm), Assert(c._in_body == c._in_body_fsm)]
        for port in (a.tx_byte, a.net_i):
            bits = Value.cast(port.payload).as_unsigned()
            stalled, held = Signal(), Signal(len(bits))
            m.d.sync += [stalled.eq(port.valid & ~port.ready), held.eq(bits)]
            with m.If(stalled & ~Initial()):
                m.d.comb += [Assert(port.valid), Assert(bits == held)]
        if self.lockstep:
            cycle = Signal(7)
            m.d.sync += cycle.eq(cycle + 1)
            flip = AnyConst(7)
            m.d.comb += b.tx_byte.ready.eq(tx_ready ^ (cycle == flip))
            with m.If(cycle <= flip):
                m.d.comb += Assert(a.tx_byte.valid == b.tx_byte.valid)
        return m


class HostLinkCoverSpec(Elaboratable):
    def __init__(self, make=small_hostlink):
        self.make = make

    def elaborate(self, platform):
        m = Module()
        m.submodules.a = a = self.make()
        m.d.comb += a.tx_byte.ready.eq(_drive(m, [a]))
        took_input, took_output = Signal(), Signal()
        with m.If(a.net_i.valid & a.net_i.ready):
            m.d.sync += took_input.eq(1)
        with m.If(a.net_o.valid & a.net_o.ready):
            m.d.sync += took_output.eq(1)
        m.d.comb += [
            Cover(took_input & took_output & a.tx_byte.valid & a.tx_byte.ready),
            Cover(a.errors != 0),
            Cover(a.frames_ok != 0),
        ]
        return m
