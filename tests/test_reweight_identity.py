"""Re-weighting is exact or refused: the architecture record covers everything the netlist holds.

A reweightable build keeps weights, folded biases, multipliers, shifts and thresholds in patchable ROMs;
everything else is netlist. For pairs of models that differ in one value each, either the architecture
records are equal and then the reweightable core's netlist (with the same placeholder ROMs) is the same
text — so the patched bitstream is the fresh build's — or ``lowbit reweight`` refuses, naming the layer
and the field. No place-and-route here: the netlist is what placement sees (``tests/test_reweight.py``
proves the patched bitstream equals a fresh build for one pair, on both FPGA families).
"""

import dataclasses
import json

import numpy as np
import pytest

from lowbit.hw.accel import AccelCore, architecture, architecture_difference, architecture_hash
from lowbit.sw.ir import arith
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant, Thresholds
from lowbit.sw.flow.reweight import reweight
from lowbit.sw.flow.rom import random_contents, rom_init

ARRAYS = [(3, 2), (4, 2), (2, 2)]
ROM_BLOCK = 256


def base_model(in_zp=3, conv_zp=2, conv_relu=True, conv_bits=4, thr_lo=0, thr_step=1, shift=None, mult=None,
               bias=0, weight_seed=0, thresholds=None, dense_zp=None):
    rng = np.random.default_rng(weight_seed)
    in_q = QuantSpec(4, False, in_zp, (0.1,))
    conv_q = QuantSpec(conv_bits, False, conv_zp, (0.2,))
    m, s = arith.quantize_multiplier(np.full(4, 0.01), bits=arith.MULT_BITS)
    conv = Conv2d(rng.integers(-8, 8, (3, 3, 1, 4)), np.full(4, 5 + bias), QuantSpec(4, True, 0, (0.05,)), conv_q,
                  Requant(m if mult is None else np.full(4, mult), s if shift is None else np.full(4, shift),
                          conv_zp, 0, (1 << conv_bits) - 1, conv_relu), (1, 1), (1, 1))
    t = np.sort(rng.integers(-200, 200, (8, 2)), axis=1) if thresholds is None else thresholds
    thr_q = QuantSpec(2, False, 0, (1.0,))
    dense1 = Dense(rng.integers(-8, 8, (36, 8)), np.zeros(8, dtype=np.int64), QuantSpec(4, True, 0, (0.05,)),
                   thr_q, Thresholds(t, thr_lo, thr_step))
    layers = [conv, MaxPool2d((2, 2)), Flatten(), dense1]
    if dense_zp is not None:
        m2, s2 = arith.quantize_multiplier(np.full(4, 0.02), bits=arith.MULT_BITS)
        layers.append(Dense(rng.integers(-2, 2, (8, 4)), np.zeros(4, dtype=np.int64), QuantSpec(2, True, 0, (0.1,)),
                            QuantSpec(8, True, dense_zp, (0.3,)), Requant(m2, s2, dense_zp, -128, 127, False)))
    else:
        layers.append(Dense(rng.integers(-2, 2, (8, 4)), np.zeros(4, dtype=np.int64), QuantSpec(2, True, 0, (0.1,)),
                            None, None))
    return Model((6, 6, 1), in_q, layers, "pair").validate()


def netlist(model):
    from amaranth.back import rtlil
    placeholder = random_contents(base_model(), ARRAYS, 1, ROM_BLOCK)
    core = AccelCore(model, ARRAYS, 12e6, 3e6, 4, reweightable=True, rom_init=rom_init(placeholder),
                     rom_block=ROM_BLOCK)
    return rtlil.convert(core, name="top")


#: Pairs (base, variant) whose only differences live in ROMs: the netlists must be identical.
SAME_NETLIST = {
    "weights": dict(weight_seed=7),
    "bias": dict(bias=100),
    "multiplier": dict(mult=123457),
    "shift": dict(shift=20),
    "threshold values": dict(thresholds=np.tile(np.array([[-5, 5]]), (8, 1))),
    # ReLU with the zero point at the low clamp changes nothing: the clamp is [0, 15] either way.
    "relu at the clamp": dict(conv_zp=0, conv_relu=False),
}

#: Variants that need another netlist, with the field the refusal must name.
REFUSED = {
    "input zero point (the conv padding code)": (dict(in_zp=5), "layer 0 (conv2d) in_zero_point: 3 in the build, 5"),
    "output zero point": (dict(conv_zp=4), "layer 0 (conv2d) clamp"),
    "relu": (dict(conv_relu=False), "layer 0 (conv2d) clamp: [2, 15] in the build, [0, 15]"),
    "clamp (output width)": (dict(conv_bits=3), "layer 0 (conv2d) clamp: [2, 15] in the build, [2, 7]"),
    "threshold offset": (dict(thr_lo=1), "layer 3 (dense) out_lo: 0 in the build, 1"),
    "threshold step": (dict(thr_step=-1, thr_lo=3), "layer 3 (dense) out_lo"),
}


@pytest.fixture(scope="module")
def base_netlist():
    return netlist(base_model())


@pytest.mark.parametrize("what", list(SAME_NETLIST))
def test_equal_architecture_means_equal_netlist(base_netlist, what):
    base = base_model(**({"conv_zp": 0} if what == "relu at the clamp" else {}))
    variant = base_model(**SAME_NETLIST[what])
    assert architecture_difference(architecture(base, ARRAYS), architecture(variant, ARRAYS)) is None
    reference = base_netlist if what != "relu at the clamp" else netlist(base)
    assert netlist(variant) == reference


@pytest.mark.parametrize("what", list(REFUSED))
def test_a_value_compiled_into_the_netlist_is_part_of_the_architecture(base_netlist, what):
    changes, _ = REFUSED[what]
    variant = base_model(**changes)
    assert architecture_hash(variant, ARRAYS) != architecture_hash(base_model(), ARRAYS)
    assert netlist(variant) != base_netlist     # the record is not stricter than the netlist


def _fake_build(tmp_path, model):
    """A reweightable build folder as far as 'reweight' reads it before patching anything."""
    folder = tmp_path / "build"
    folder.mkdir()
    model.save(folder / "model.lbm")
    (folder / "build.json").write_text(json.dumps({
        "board": "icebreaker", "arch": "dataflow", "overlay": None, "arrays": [list(a) for a in ARRAYS], "clock_hz": 12e6, "baud": 1_000_000,
        "max_batch": 8, "reweightable": True, "rom_seed": 1, "family": "ice40", "rom_block": ROM_BLOCK,
        "timeout_bytes": 32, "mult": "lut", "requant_dsp": False, "pll": False, "divisor": 12}))
    return folder


@pytest.mark.parametrize("what", list(REFUSED))
def test_reweight_refuses_by_layer_and_field(tmp_path, what):
    changes, words = REFUSED[what]
    folder = _fake_build(tmp_path, base_model())
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(LowbitError, match="needs a different netlist") as info:
        reweight(folder, base_model(**changes))
    assert words in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_output_zero_point_of_a_requantized_dense_layer_is_refused(tmp_path):
    folder = _fake_build(tmp_path, base_model(dense_zp=0))
    with pytest.raises(LowbitError, match=r"layer 4 \(dense\) zero_point: 0 in the build, 3 in the new model"):
        reweight(folder, base_model(dense_zp=3))


def test_ptq_layer_without_relu_has_a_data_dependent_zero_point(tmp_path):
    """Post-training quantization of a layer without ReLU: its zero point follows the calibration data,
    so two calibrations make two netlists, and reweight says which field differs."""
    from lowbit.sw.ir.floatnet import FDense, FloatNet, FReLU
    from lowbit.sw.quant.posttrain import quantize_net
    rng = np.random.default_rng(0)
    net = FloatNet((8,), [FDense(rng.normal(0, 1, (8, 6)), rng.normal(0, 1, 6)),
                          FDense(rng.normal(0, 1, (6, 6)), rng.normal(0, 1, 6)), FReLU(),
                          FDense(rng.normal(0, 1, (6, 3)), np.zeros(3))])
    a = quantize_net(net, rng.normal(0.5, 1, (200, 8)))
    b = quantize_net(net, rng.normal(-0.5, 1, (200, 8)))
    arrays = [(2, 2)] * 3
    diff = architecture_difference(architecture(a, arrays), architecture(b, arrays))
    assert diff is not None and ("zero_point" in diff or "clamp" in diff or "input" in diff), diff


def test_qdq_models_differ_in_their_output_zero_point():
    """Two QDQ imports (onnxruntime's calibration picks each zero point): refused, naming the field."""
    pytest.importorskip("onnx")
    from pathlib import Path
    from lowbit.sw.importers.onnx_qdq import load_qdq
    fixtures = Path(__file__).parent / "fixtures" / "qdq"
    a = load_qdq(fixtures / "mlp_qdq_ort1.17.3.onnx")
    b = dataclasses.replace(a.layers[2], requant=dataclasses.replace(a.layers[2].requant, zero_point=100),
                            out_q=dataclasses.replace(a.layers[2].out_q, zero_point=100))
    b = Model(a.input_shape, a.input_q, [a.layers[0], a.layers[1], b], "b").validate()
    arrays = [(4, 2), (2, 2)]
    assert architecture_difference(architecture(a, arrays), architecture(b, arrays)) == \
        "layer 2 (dense) zero_point: 152 in the build, 100 in the new model"
