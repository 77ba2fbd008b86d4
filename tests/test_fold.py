import pytest

from lowbit.sw.errors import LowbitError
from lowbit.sw.flow.fold import COST_MODELS, LayerShape, fold, layer_cycles, rom_blocks

MLP = [LayerShape("fc1", 64, 32), LayerShape("fc2", 32, 10)]


def test_layer_cycles_count_partial_tiles():
    assert layer_cycles(LayerShape("d", 64, 32), 8, 8) == 8 * 4
    assert layer_cycles(LayerShape("d", 65, 33), 8, 8) == 9 * 5
    assert layer_cycles(LayerShape("c", 9, 8, positions=36), 4, 8) == 36 * 3


@pytest.mark.parametrize("family,width,depth,blocks", [
    ("ice40", 16, 256, 1), ("ice40", 32, 256, 2), ("ice40", 4, 1024, 1), ("ice40", 64, 8, 4),
    ("ecp5", 36, 512, 1), ("ecp5", 256, 8, 8), ("ecp5", 1, 16384, 1),
])
def test_rom_blocks(family, width, depth, blocks):
    assert rom_blocks(width, depth, family) == blocks


def test_fold_fits_the_budget_and_balances_the_pipeline():
    model = COST_MODELS["ice40"]
    folding = fold(MLP, model, 5280, 30)
    assert folding.logic <= 0.85 * 5280 and folding.brams <= 30
    cycles = [f.cycles for f in folding.layers]
    # widening stopped because the bottleneck could not grow: a bigger step would not fit
    assert max(cycles) == folding.bottleneck_cycles < layer_cycles(MLP[0], 1, 1)
    # a bigger device never gives a slower fold
    assert fold(MLP, COST_MODELS["ecp5"], 83640, 208).bottleneck_cycles <= folding.bottleneck_cycles


def test_fold_refuses_before_synthesis_with_the_estimate():
    huge = [LayerShape("fc", 4096, 4096, weight_bits=8, act_bits=8)]
    with pytest.raises(LowbitError, match=r"does not fit ice40-up5k even fully folded .* block RAMs of 30 "
                                          r"\(use fewer or smaller layers"):
        fold(huge, COST_MODELS["ice40"], 5280, 30, device_name="ice40-up5k")


def test_fold_needs_a_compute_layer():
    with pytest.raises(LowbitError, match="no Dense or Conv2d layer"):
        fold([], COST_MODELS["ice40"], 5280, 30)


def test_binary_weight_layers_are_folded_without_dsps():
    # ±1 weights on 8-bit codes are conditional negates (hw/array.product): mult="dsp" reserves no
    # DSP block for them, while the same layer with 8-bit weights would take one per product.
    from pathlib import Path
    from lowbit.sw.flow.build import _product_maps_to_dsp, layer_shapes
    from lowbit.sw.flow.synth import DEVICES
    from lowbit.sw.importers.onnx_qonnx import load_qonnx
    model = load_qonnx(Path(__file__).parent / "fixtures" / "brevitas" / "digits_tfc_w1a8.onnx")
    first, second = layer_shapes(model)
    assert (first.act_bits, first.weight_bits, first.weight_binary, first.binary) == (8, 1, True, False)
    assert second.binary and not second.weight_binary
    ecp5 = next(d for d in DEVICES.values() if d.family == "ecp5")
    assert not _product_maps_to_dsp(first, ecp5)
    assert _product_maps_to_dsp(LayerShape("fc", 64, 64, act_bits=8, weight_bits=8), ecp5)
