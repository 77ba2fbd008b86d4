"""The layer engine against the integer reference, bit for bit, in Amaranth's simulator.

Grid: activation and weight widths {1, 2, 4, 8} x signed/unsigned, array sizes R, C in {1, 2, 3, 4, 8},
binary (XNOR-popcount) layers, binary (±1) weights on integer activations, all three output modes,
extreme operands and zero points, hypothesis random shapes; random idle cycles on the input and stalls
on the output throughout.
"""

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lowbit.hw.config import ArrayConfig
from lowbit.hw.dense import DenseEngine, EngineParams
from lowbit.sim.streams import run_sim, stream_get, stream_put
from lowbit.sw.ir import arith
from lowbit.sw.ir.intref import run_layer
from lowbit.sw.ir.model import Dense, QuantSpec, Requant, Thresholds
from lowbit.hw.packing import pack_chunks

VECTORS = {"count": 0}


def check_engine(cfg, layer, in_q, x, idle=0.3, stall=0.3, seed=0):
    """Run vectors ``x`` (B, K) through the engine; assert equality with the reference; return cycles."""
    params = EngineParams.from_layer(layer, in_q)
    dut = DenseEngine(cfg, params)
    expected, _ = run_layer(layer, np.asarray(x), in_q.zero_point)
    if layer.out_q is not None and layer.out_q.binary:
        expected = (expected > 0).astype(np.int64)
    got = []
    abits = 1 if cfg.binary else cfg.act_bits
    cycles = {}

    async def source(ctx):
        rng = random.Random(seed)
        for row in x:
            await stream_put(ctx, dut.i, pack_chunks(row, cfg.rows, abits, cfg.binary), idle=idle, rng=rng)

    async def sink(ctx):
        got.extend(await stream_get(ctx, dut.o, x.shape[0] * layer.n, stall=stall, rng=random.Random(seed + 1)))
        cycles["mac"] = ctx.get(dut.mac_cycles)

    run_sim(dut, source, sink)
    got = np.array(got).reshape(x.shape[0], layer.n)
    assert np.array_equal(got, expected), f"\n{got}\n!=\n{expected}"
    VECTORS["count"] += x.shape[0]
    return cycles


def make_layer(rng, k, n, a_bits, a_signed, w_bits, w_signed, mode="requant", zx=None, relu=False):
    in_lo, in_hi = arith.int_range(a_bits, a_signed)
    zx = rng.integers(in_lo, in_hi + 1) if zx is None else zx
    in_q = QuantSpec(a_bits, a_signed, int(zx), (0.05,))
    wlo, whi = arith.int_range(w_bits, w_signed)
    w = rng.integers(wlo, whi + 1, (k, n))
    b = rng.integers(-200, 200, n)
    if mode == "requant":
        out_q = QuantSpec(4, False, 3, (0.1,))
        mult, shift = arith.quantize_multiplier(rng.uniform(0.002, 0.3, n))
        rq = Requant(mult, shift, 3, 0, 15, relu)
    elif mode == "thresholds":
        out_q = QuantSpec(2, False, 0, (0.1,))
        rq = Thresholds(np.sort(rng.integers(-60, 60, (n, 3)), axis=1), 0, 1)
    else:
        out_q, rq = None, None
    return Dense(w, b, QuantSpec(w_bits, w_signed), out_q, rq), in_q


#: Column reductions every grid runs with: adder tree, systolic chain, 2-D systolic array.
REDUCTIONS = [{}, {"systolic": True}, {"systolic": True, "systolic_2d": True}]

WIDTHS = list(itertools.product([1, 2, 4, 8], [False, True], [1, 2, 4, 8], [False, True]))


@pytest.mark.parametrize("systolic", REDUCTIONS, ids=["tree", "systolic", "systolic2d"])
@pytest.mark.parametrize("a_bits,a_signed,w_bits,w_signed", WIDTHS)
def test_operand_width_grid(a_bits, a_signed, w_bits, w_signed, systolic):
    rng = np.random.default_rng(a_bits * 100 + w_bits * 10 + 2 * a_signed + w_signed)
    k, n = 7, 5
    layer, in_q = make_layer(rng, k, n, a_bits, a_signed, w_bits, w_signed)
    lo, hi = in_q.range
    x = rng.integers(lo, hi + 1, (3, k))
    x[0] = hi  # all-max
    x[1] = lo  # all-min
    cfg = ArrayConfig(rows=3, cols=2, act_bits=a_bits, weight_bits=w_bits, act_signed=a_signed,
                      weight_signed=w_signed, max_k=k, **systolic)
    check_engine(cfg, layer, in_q, x)


@pytest.mark.parametrize("a_bits,a_signed,w_bits,w_signed", [w for w in WIDTHS if w[0] > 1 and w[2] > 1])
@pytest.mark.parametrize("cols", [2, 3, 4])
def test_two_products_per_multiplier(a_bits, a_signed, w_bits, w_signed, cols):
    rng = np.random.default_rng(a_bits * 100 + w_bits * 10 + 2 * a_signed + w_signed + cols)
    k, n = 7, 2 * cols + 1
    layer, in_q = make_layer(rng, k, n, a_bits, a_signed, w_bits, w_signed)
    lo, hi = in_q.range
    x = rng.integers(lo, hi + 1, (3, k))
    x[0], x[1] = hi, lo
    w = layer.weight.copy()
    wlo, whi = arith.int_range(w_bits, w_signed)
    w[:, 0], w[:, 1] = wlo, whi            # extreme weights in a packed pair
    layer = Dense(w, layer.bias, layer.weight_q, layer.out_q, layer.requant)
    cfg = ArrayConfig(rows=2, cols=cols, act_bits=a_bits, weight_bits=w_bits, act_signed=a_signed,
                      weight_signed=w_signed, max_k=k, mult="dsp", dsp_pack=True)
    check_engine(cfg, layer, in_q, x)


def test_dsp_pack_needs_dsp_multipliers_and_the_tree():
    for bad in (dict(mult="lut"), dict(mult="dsp", systolic=True), dict(mult="dsp", binary=True, act_bits=1,
                                                                        weight_bits=1)):
        with pytest.raises(ValueError, match="dsp_pack"):
            ArrayConfig(dsp_pack=True, **bad)


@pytest.mark.parametrize("systolic", REDUCTIONS, ids=["tree", "systolic", "systolic2d"])
@pytest.mark.parametrize("rows,cols", list(itertools.product([1, 2, 3, 4, 8], [1, 2, 3, 4, 8])))
def test_array_size_grid(rows, cols, systolic):
    rng = np.random.default_rng(rows * 10 + cols)
    k, n = 10, 9   # neither a multiple of most R nor of most C
    layer, in_q = make_layer(rng, k, n, 4, False, 4, True, relu=True)
    x = rng.integers(0, 16, (2, k))
    cfg = ArrayConfig(rows=rows, cols=cols, act_bits=4, weight_bits=4, act_signed=False, weight_signed=True, max_k=k,
                      **systolic)
    check_engine(cfg, layer, in_q, x)


@pytest.mark.parametrize("mode", ["requant", "thresholds", "logits"])
def test_output_modes(mode):
    rng = np.random.default_rng(5)
    layer, in_q = make_layer(rng, 12, 6, 4, False, 4, True, mode=mode)
    x = rng.integers(0, 16, (4, 12))
    cfg = ArrayConfig(rows=4, cols=4, act_bits=4, weight_bits=4, act_signed=False, weight_signed=True, max_k=12)
    check_engine(cfg, layer, in_q, x)


@pytest.mark.parametrize("zx", ["min", "max"])
def test_zero_points_at_the_extremes(zx):
    rng = np.random.default_rng(9)
    lo, hi = arith.int_range(8, True)
    layer, in_q = make_layer(rng, 9, 4, 8, True, 8, True, zx=lo if zx == "min" else hi)
    x = np.vstack([np.full(9, lo), np.full(9, hi), rng.integers(lo, hi + 1, 9)])
    cfg = ArrayConfig(rows=4, cols=2, act_bits=8, weight_bits=8, act_signed=True, weight_signed=True, max_k=9)
    check_engine(cfg, layer, in_q, x)


@pytest.mark.parametrize("systolic", REDUCTIONS, ids=["tree", "systolic", "systolic2d"])
@pytest.mark.parametrize("rows,cols,k,n", [(4, 4, 16, 8), (3, 2, 7, 5), (8, 1, 13, 3)])
def test_binary_layers(rows, cols, k, n, systolic):
    rng = np.random.default_rng(k)
    binary = QuantSpec(1, True, binary=True)
    w = rng.choice([-1, 1], (k, n))
    b = rng.integers(-3, 4, n)
    hidden = Dense(w, b, binary, binary, Thresholds(rng.integers(-2, 3, (n, 1)), -1, 2))
    logits = Dense(w, b, binary, None, None)
    cfg = ArrayConfig(rows=rows, cols=cols, act_bits=1, weight_bits=1, binary=True, max_k=k, **systolic)
    x = rng.choice([-1, 1], (3, k))
    x[0] = 1
    x[1] = -1
    check_engine(cfg, hidden, binary, x)
    check_engine(cfg, logits, binary, x)


def make_binary_weight_layer(rng, k, n, a_bits, a_signed, mode="requant", relu=False):
    """A layer with ±1 weights on ``a_bits`` integer codes whose zero point is not 0; columns 0 and 1
    are all +1 and all -1, so extreme codes reach both ends of the accumulator range."""
    lo, hi = arith.int_range(a_bits, a_signed)
    zx = int(rng.choice([v for v in range(lo, hi + 1) if v != 0]))
    layer, in_q = make_layer(rng, k, n, a_bits, a_signed, 4, True, mode=mode, zx=zx, relu=relu)
    w = rng.choice([-1, 1], (k, n))
    w[:, 0] = 1
    if n > 1:
        w[:, 1] = -1
    return Dense(w, layer.bias, QuantSpec(1, True, binary=True), layer.out_q, layer.requant), in_q


def binary_weight_config(rows, cols, a_bits, a_signed, k, **kw):
    return ArrayConfig(rows=rows, cols=cols, act_bits=a_bits, weight_bits=1, act_signed=a_signed,
                       weight_binary=True, max_k=k, **kw)


@pytest.mark.parametrize("systolic", REDUCTIONS, ids=["tree", "systolic", "systolic2d"])
@pytest.mark.parametrize("a_bits,a_signed", list(itertools.product([1, 2, 4, 8], [False, True])))
def test_binary_weights_on_integer_inputs(a_bits, a_signed, systolic):
    rng = np.random.default_rng(a_bits * 10 + a_signed)
    k, n = 7, 5           # K = 7 on 3 rows: the last chunk has two padded lanes
    for mode in ("requant", "thresholds", "logits"):
        layer, in_q = make_binary_weight_layer(rng, k, n, a_bits, a_signed, mode=mode)
        lo, hi = in_q.range
        x = rng.integers(lo, hi + 1, (4, k))
        x[0], x[1] = hi, lo
        cfg = binary_weight_config(3, 2, a_bits, a_signed, k, **systolic)
        check_engine(cfg, layer, in_q, x)


@pytest.mark.parametrize("a_bits,a_signed", list(itertools.product([1, 2, 4, 8], [False, True])))
def test_binary_weight_accumulators_are_derived_and_reach_both_ends(a_bits, a_signed):
    # The accumulator is exactly wide enough for K products of [-m, m], m = max|code|; the all-+1 and
    # all--1 columns on the extreme codes reach those ends (logits mode shows the raw acc + bias).
    from lowbit.hw.dense import engine_layout
    rng = np.random.default_rng(a_bits)
    k = 9
    layer, in_q = make_binary_weight_layer(rng, k, 3, a_bits, a_signed, mode="logits")
    lo, hi = in_q.range
    m = max(abs(lo), abs(hi))
    cfg = binary_weight_config(4, 3, a_bits, a_signed, k)
    assert cfg.product_range == (-m, m) and cfg.product_bits == a_bits + 1
    assert cfg.acc_bits == arith.signed_bits_for(-k * m, k * m)
    assert engine_layout(cfg, EngineParams.from_layer(layer, in_q)).acc_bits == cfg.acc_bits
    ext = hi if abs(hi) >= abs(lo) else lo
    x = np.array([np.full(k, ext), np.full(k, -ext if -ext in (lo, hi) else lo)])
    layer = Dense(layer.weight, np.zeros(3, np.int64), layer.weight_q, None, None)
    in_q = QuantSpec(a_bits, a_signed, 0, (0.05,))
    check_engine(cfg, layer, in_q, x)
    acc, _ = run_layer(layer, x, 0)
    assert {int(acc[0, 0]), int(acc[0, 1])} == {k * ext, -k * ext}


def test_binary_weights_need_no_multiplier_and_refuse_contradictions():
    from amaranth.back import rtlil
    from lowbit.hw.array import MacArray
    for mult in ("lut", "dsp"):
        assert "cell $mul " not in rtlil.convert(MacArray(binary_weight_config(4, 4, 8, False, 16, mult=mult)))
    assert "cell $mul " in rtlil.convert(MacArray(ArrayConfig(rows=4, cols=4, act_bits=8, weight_bits=8, mult="dsp")))
    with pytest.raises(ValueError, match="weight_binary .* needs weight_bits=1 and binary=False"):
        ArrayConfig(act_bits=8, weight_bits=4, weight_binary=True)
    with pytest.raises(ValueError, match="weight_binary .* needs weight_bits=1 and binary=False"):
        ArrayConfig(act_bits=1, weight_bits=1, binary=True, weight_binary=True)
    with pytest.raises(ValueError, match="dsp_pack"):
        binary_weight_config(2, 2, 8, False, 4, mult="dsp", dsp_pack=True)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.integers(1, 10), st.integers(1, 5), st.integers(1, 5),
       st.integers(1, 8), st.booleans(), st.sampled_from(["requant", "thresholds", "logits"]),
       st.sampled_from(["tree", "tree+reg", "systolic", "systolic2d"]), st.integers(0, 2**32 - 1))
def test_random_binary_weight_layers(k, n, rows, cols, a_bits, a_signed, mode, reduction, seed):
    rng = np.random.default_rng(seed)
    layer, in_q = make_binary_weight_layer(rng, k, n, a_bits, a_signed, mode=mode, relu=bool(seed & 1))
    lo, hi = in_q.range
    x = rng.integers(lo, hi + 1, (2, k))
    cfg = binary_weight_config(rows, cols, a_bits, a_signed, k, product_reg=reduction == "tree+reg",
                               systolic=reduction.startswith("systolic"), systolic_2d=reduction == "systolic2d")
    check_engine(cfg, layer, in_q, x, seed=seed % 1000)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.integers(1, 10), st.integers(1, 5), st.integers(1, 5),
       st.sampled_from([2, 4, 8]), st.booleans(), st.sampled_from(["requant", "thresholds", "logits"]),
       st.sampled_from(["tree", "tree+reg", "systolic", "systolic2d"]), st.integers(0, 2**32 - 1))
def test_random_layers(k, n, rows, cols, bits, a_signed, mode, reduction, seed):
    rng = np.random.default_rng(seed)
    layer, in_q = make_layer(rng, k, n, bits, a_signed, bits, True, mode=mode, relu=bool(seed & 1))
    lo, hi = in_q.range
    x = rng.integers(lo, hi + 1, (2, k))
    cfg = ArrayConfig(rows=rows, cols=cols, act_bits=bits, weight_bits=bits, act_signed=a_signed,
                      weight_signed=True, max_k=k, product_reg=reduction == "tree+reg",
                      systolic=reduction.startswith("systolic"), systolic_2d=reduction == "systolic2d")
    check_engine(cfg, layer, in_q, x, seed=seed % 1000)


def test_the_check_counts_its_vectors_and_fails_on_a_wrong_reference(monkeypatch):
    # The grids above pass only if check_engine can fail: one output of the reference off by one must
    # be caught, and a passing check has compared every vector it was given.
    rng = np.random.default_rng(3)
    layer, in_q = make_layer(rng, 6, 3, 4, False, 4, True)
    x = rng.integers(0, 16, (5, 6))
    cfg = ArrayConfig(rows=2, cols=2, act_bits=4, weight_bits=4, act_signed=False, weight_signed=True, max_k=6)
    before = VECTORS["count"]
    check_engine(cfg, layer, in_q, x)
    assert VECTORS["count"] == before + len(x)

    reference = run_layer

    def off_by_one(*args):
        out, acc = reference(*args)
        out = out.copy()
        out[len(x) - 1, 2] += 1
        return out, acc

    monkeypatch.setitem(globals(), "run_layer", off_by_one)
    with pytest.raises(AssertionError):
        check_engine(cfg, layer, in_q, x)
    assert VECTORS["count"] == before + len(x)


@pytest.mark.parametrize("bits", [8, 24])
def test_requantizer_multiplier_width_follows_the_parameters(bits):
    rng = np.random.default_rng(bits)
    layer, in_q = make_layer(rng, 9, 5, 4, False, 4, True)
    mult, shift = arith.quantize_multiplier(rng.uniform(0.002, 0.3, 5), bits=bits)
    layer = Dense(layer.weight, layer.bias, layer.weight_q, layer.out_q, Requant(mult, shift, 3, 0, 15, False))
    cfg = ArrayConfig(rows=3, cols=2, act_bits=4, weight_bits=4, act_signed=False, weight_signed=True, max_k=9)
    params = EngineParams.from_layer(layer, in_q)
    assert DenseEngine(cfg, params).mult_bits == int(params.mult.max()).bit_length() >= bits
    check_engine(cfg, layer, in_q, rng.integers(0, 16, (4, 9)))


def test_per_channel_shifts_become_one_shift_with_identical_results():
    from lowbit.hw.requant import _common_shift
    rng = np.random.default_rng(11)
    mult, shift = arith.quantize_multiplier(rng.uniform(0.001, 0.5, 8))
    assert len(set(shift.tolist())) > 1
    m2, s2 = _common_shift(mult, shift)
    assert len(set(s2.tolist())) == 1 and m2.max() < 2 ** arith.MULT_BITS
    acc = rng.integers(-10**6, 10**6, (1000, 8))
    assert np.array_equal(arith.round_shift(acc * m2, s2), arith.round_shift(acc * mult, shift))
    layer, in_q = make_layer(rng, 10, 8, 4, False, 4, True)
    layer = Dense(layer.weight, layer.bias, layer.weight_q, layer.out_q, Requant(mult, shift, 3, 0, 15, True))
    cfg = ArrayConfig(rows=4, cols=3, act_bits=4, weight_bits=4, act_signed=False, weight_signed=True, max_k=10)
    assert DenseEngine(cfg, EngineParams.from_layer(layer, in_q)).const_shift is not None
    check_engine(cfg, layer, in_q, rng.integers(0, 16, (4, 10)))
