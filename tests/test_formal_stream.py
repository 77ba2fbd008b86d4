"""The generic stream-stage proof: it passes a correct stage and catches each kind of handshake bug."""

import pytest
from amaranth import Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.sim.formal import check_formal
from lowbit.sim.formal_stream import StreamStageSpec

LAYOUT = data.ArrayLayout(signed(4), 2)


class _Stage(wiring.Component):
    """A registered stage adding 1 to each lane, with switchable bugs."""

    def __init__(self, bug=None):
        self.bug = bug
        super().__init__({"i": In(stream.Signature(LAYOUT)), "o": Out(stream.Signature(LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        m.d.comb += self.i.ready.eq(~full | self.o.ready)
        if self.bug == "drops":  # accepts while full and stalled: overwrites a beat
            m.d.comb += self.i.ready.eq(1)
        if self.bug == "valid_needs_ready":
            m.d.comb += self.o.valid.eq(full & self.o.ready)
        else:
            m.d.comb += self.o.valid.eq(full)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        if self.bug == "wobbles":  # payload changes while stalled
            with m.If(full & ~self.o.ready):
                m.d.sync += self.o.payload[0].eq(self.o.payload[0] + 1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += full.eq(1)
            for k in range(2):
                m.d.sync += self.o.payload[k].eq(self.i.payload[k] + 1)
        return m


def _plus_one(m, payload):
    return Cat(*[(payload[4 * k:4 * k + 4].as_signed() + 1)[:4] for k in range(2)])


def test_correct_stage_is_proven(tmp_path):
    result = check_formal(StreamStageSpec(lambda: _Stage(), _plus_one), tmp_path, depth=12)
    assert result.passed, result.summary


@pytest.mark.parametrize("bug", ["drops", "valid_needs_ready", "wobbles"])
def test_each_handshake_bug_is_caught(tmp_path, bug):
    result = check_formal(StreamStageSpec(lambda: _Stage(bug), _plus_one), tmp_path, depth=12)
    assert not result.passed and "failed assertion" in result.summary


def test_wrong_arithmetic_is_caught(tmp_path):
    def plus_two(m, payload):
        return Cat(*[(payload[4 * k:4 * k + 4].as_signed() + 2)[:4] for k in range(2)])
    assert not check_formal(StreamStageSpec(lambda: _Stage(), plus_two), tmp_path, depth=8).passed
