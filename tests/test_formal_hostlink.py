"""Formal checks of the frame handler (HostLink) for every input byte sequence and back-pressure pattern.

Bounded model checks up to the depths below; the cover check shows those depths contain whole
exchanges (an ERROR frame by step 4, a good frame by step 6, an INFER's input consumed, output taken and
a response byte sent by step 10). Mutants of the handler's transmit stream must fail the same specs.
"""

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring

from lowbit.sim.formal import check_formal
from lowbit.sim.formal_hostlink import HostLinkCoverSpec, HostLinkHandshakeSpec, small_hostlink


class _Mutant(wiring.Component):
    """The handler with a broken transmit stream: ``unstable`` changes the payload while stalled,
    ``valid_on_ready`` withdraws valid when ready is low."""

    def __init__(self, bug):
        self.bug = bug
        self.inner = small_hostlink()
        super().__init__(dict(self.inner.signature.members))
        self._busy, self._busy_fsm = self.inner._busy, self.inner._busy_fsm
        self._in_body, self._in_body_fsm = self.inner._in_body, self.inner._in_body_fsm

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        for name in ("rx_byte", "net_o"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(inner, name))
        wiring.connect(m, inner.net_i, wiring.flipped(self.net_i))
        m.d.comb += [inner.mac_cycles.eq(self.mac_cycles), self.frames_ok.eq(inner.frames_ok),
                     self.errors.eq(inner.errors), inner.tx_byte.ready.eq(self.tx_byte.ready),
                     self.tx_byte.payload.eq(inner.tx_byte.payload), self.tx_byte.valid.eq(inner.tx_byte.valid)]
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        if self.bug == "unstable":
            m.d.comb += self.tx_byte.payload.eq(inner.tx_byte.payload ^ toggle)
        else:
            m.d.comb += self.tx_byte.valid.eq(inner.tx_byte.valid & self.tx_byte.ready)
        return m


def test_stable_while_stalled_on_both_output_streams(tmp_path):
    result = check_formal(HostLinkHandshakeSpec(), tmp_path, depth=24)
    assert result.passed, result.summary


def test_transmit_valid_never_depends_on_ready(tmp_path):
    result = check_formal(HostLinkHandshakeSpec(lockstep=True), tmp_path, depth=14)
    assert result.passed, result.summary


def test_the_depths_reach_whole_exchanges(tmp_path):
    result = check_formal(HostLinkCoverSpec(), tmp_path, mode="cover", depth=12)
    assert result.passed, result.summary


@pytest.mark.parametrize("bug,lockstep", [("unstable", False), ("valid_on_ready", True)])
def test_mutants_fail_the_specs(tmp_path, bug, lockstep):
    assert not check_formal(HostLinkHandshakeSpec(lambda: _Mutant(bug), lockstep=lockstep), tmp_path, depth=14).passed


def _cleared_while_sending(register):
    """The handler with one of its state registers (``_busy``, ``_in_body``) cleared whenever a response
    byte is offered: busy would let the receiver take bytes meant to be ignored, in_body would stop a
    response halfway."""
    def make():
        link = small_hostlink()
        elaborate = link.elaborate

        def broken(platform):
            m = elaborate(platform)
            with m.If(link.tx_byte.valid):
                m.d.sync += getattr(link, register).eq(0)
            return m
        link.elaborate = broken
        return link
    return make


@pytest.mark.parametrize("register", ["_busy", "_in_body"])
def test_a_state_register_out_of_step_with_the_transmitter_fails_the_spec(tmp_path, register):
    assert not check_formal(HostLinkHandshakeSpec(_cleared_while_sending(register)), tmp_path, depth=14).passed


@pytest.mark.slow
@pytest.mark.parametrize("depth,lockstep", [(32, False), (18, True)])
def test_deeper_bounds(tmp_path, depth, lockstep):
    result = check_formal(HostLinkHandshakeSpec(lockstep=lockstep), tmp_path, depth=depth, timeout=1800)
    assert result.passed, result.summary
