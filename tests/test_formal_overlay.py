"""Formal proof (SymbiYosys k-induction, Boolector) that the overlay's sequencer keeps every address inside
the layer's input in its activation bank and inside the layer's weights, for every descriptor the compiler
can write (sim/formal_overlay.py): Conv2d windows with stride and padding, MaxPool passes, Dense layers."""

import pytest

from lowbit.hw.overlay import OverlayConfig
from lowbit.sim.formal import check_formal
from lowbit.sim.formal_overlay import SequencerBoundsSpec


@pytest.mark.parametrize("conv", [True, False])
def test_sequencer_addresses_stay_inside_the_memories(tmp_path, conv):
    # 4x4 array of 4-bit weights on a 16-bit port: four port words a step (ratio 1 to 4 are free)
    cfg = OverlayConfig(rows=4, cols=4, port_bits=16, act_depth=16, weight_depth=64, param_depth=16, conv=conv)
    res = check_formal(SequencerBoundsSpec(cfg), tmp_path, mode="prove", depth=4, timeout=900)
    assert res.passed, (res.status, res.summary, res.workdir)
