"""Formal specs for any one-in-one-out stream stage (``amaranth.lib.stream`` ports ``i`` and ``o``).

:class:`StreamStageSpec` wraps a stage and asserts, for all inputs and all back-pressure patterns:

* **stable while stalled** — once ``o.valid`` is high and the beat is not taken, ``o.valid`` stays
  high and ``o.payload`` does not change;
* **valid never depends on ready** — two copies of the stage see identical inputs, and their
  ``o.ready`` differ in one solver-chosen cycle; their ``o.valid`` must agree in that cycle;
* **no lost, duplicated or reordered beats** — the solver picks one input beat (its index is an
  ``AnyConst``); the output beat with the same index must equal ``model(input beat)``, and no more
  output beats than input beats ever leave.

``model`` is the stage's function written independently in Amaranth (for arithmetic stages, straight
from ``docs/arithmetic.md``). Run it with :func:`lowbit.sim.formal.check_formal` in ``bmc`` mode; a depth
of a few cycles beyond the stage's latency covers every ordering of stalls up to that depth.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal, Value
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Assert, Assume

__all__ = ["StreamStageSpec"]


class StreamStageSpec(Elaboratable):
    """Parameters
    ----------
    make_stage : callable
        Returns a fresh stage (called twice, for the lockstep pair).
    model : callable
        ``model(m, payload_value) -> Value``: the expected output payload for one input payload,
        built with Amaranth operators in module ``m``.
    count_bits : int
        Width of the beat counters (the BMC depth must stay below ``2**count_bits``).
    model=None
        Check only the handshake rules (for stages whose beats do not map one to one).
    sink_ready : bool
        Assume the consumer is always ready (for stages that, like a UART receiver, cannot stall).
    """

    def __init__(self, make_stage, model=None, count_bits: int = 6, sink_ready: bool = False):
        self.make_stage = make_stage
        self.model = model
        self.count_bits = count_bits
        self.sink_ready = sink_ready

    def elaborate(self, platform):
        m = Module()
        m.submodules.a = a = self.make_stage()
        m.submodules.b = b = self.make_stage()

        # Free inputs, shared by both copies. The producer obeys the stream rules: a beat offered
        # stays offered, unchanged, until it is taken.
        in_valid = AnySeq(1)
        in_payload = AnySeq(len(Value.cast(a.i.payload)))
        out_ready = AnySeq(1)
        m.d.comb += [a.i.valid.eq(in_valid), a.i.payload.eq(in_payload), a.o.ready.eq(out_ready),
                     b.i.valid.eq(in_valid), b.i.payload.eq(in_payload)]
        if self.sink_ready:
            m.d.comb += Assume(out_ready)
        prev_offer = Signal()
        prev_payload = Signal(len(in_payload))
        m.d.sync += [prev_offer.eq(a.i.valid & ~a.i.ready), prev_payload.eq(in_payload)]
        with m.If(prev_offer & ~Initial()):
            m.d.comb += [Assume(in_valid), Assume(in_payload == prev_payload)]

        # Copy b sees the same ready as a, except in one chosen cycle (and is not compared after it).
        cycle = Signal(self.count_bits)
        m.d.sync += cycle.eq(cycle + 1)
        flip_at = AnyConst(self.count_bits)
        m.d.comb += b.o.ready.eq(out_ready ^ (cycle == flip_at))
        with m.If(cycle <= flip_at):
            m.d.comb += Assert(a.o.valid == b.o.valid)

        # Stable while stalled. Payloads are compared as raw bits (signed outputs included).
        out_bits = Value.cast(a.o.payload).as_unsigned()
        prev_stall = Signal()
        prev_out = Signal(len(out_bits))
        m.d.sync += [prev_stall.eq(a.o.valid & ~a.o.ready), prev_out.eq(out_bits)]
        with m.If(prev_stall & ~Initial()):
            m.d.comb += [Assert(a.o.valid), Assert(out_bits == prev_out)]

        if self.model is None:
            return m
        # Tracked beat: record input beat number `pick`, compare with output beat number `pick`.
        n_in = Signal(self.count_bits)
        n_out = Signal(self.count_bits)
        pick = AnyConst(self.count_bits)
        tracked = Signal(len(out_bits))     # the model's value, truncated to the payload's bits
        have = Signal()
        in_fire = a.i.valid & a.i.ready
        out_fire = a.o.valid & a.o.ready
        with m.If(in_fire):
            m.d.sync += n_in.eq(n_in + 1)
            with m.If(n_in == pick):
                m.d.sync += [tracked.eq(self.model(m, Value.cast(a.i.payload))), have.eq(1)]
        # A combinational stage may pass the tracked beat through in the cycle it arrives.
        arriving = in_fire & (n_in == pick)
        expected = Signal.like(tracked)
        m.d.comb += expected.eq(tracked)
        with m.If(~have):
            m.d.comb += expected.eq(self.model(m, Value.cast(a.i.payload)))
        with m.If(out_fire):
            m.d.sync += n_out.eq(n_out + 1)
            m.d.comb += Assert(n_out < n_in + in_fire)   # never more beats out than in (no duplicates)
            with m.If(n_out == pick):
                m.d.comb += [Assert(have | arriving), Assert(out_bits == expected)]
        return m
