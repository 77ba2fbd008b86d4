"""The overlay engine (hw/overlay.py) runs a whole model on one array, bit-exact with the integer
reference; its analytic cycle model (sw/flow/overlay.py) equals simulation; what does not fit is refused.

Amaranth's simulator, random Dense stacks over the width grid (activations and weights 1, 2, 4, 8 bits,
signed and unsigned inputs with zero points, ±1 layers, requantization, multi-threshold and logits),
random idle cycles on the input and stalls on the output.
"""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lowbit.hw.overlay import BACK_FIELDS, OverlayConfig, OverlayEngine, back_fields, kept_fields
from lowbit.sim.streams import run_sim, stream_get, stream_put
from lowbit.sw.errors import LowbitError
from lowbit.sw.flow.overlay import compile_program, config_for, inference_cycles
from lowbit.sw.ir import arith
from lowbit.sw.ir.intref import run
from lowbit.sw.ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant, Thresholds


def input_bits(model, codes, cfg):
    """Raw lane bits of the input codes as the overlay's input stream takes them."""
    if model.input_q.binary:
        return [int(v > 0) for v in codes]
    return [int(v) & ((1 << cfg.act_bits) - 1) for v in codes]


def simulate(model, rows, cols, xs, idle=0.0, stall=0.0, seed=0, **fields):
    """Outputs of the overlay for inputs ``xs`` (codes, one row per inference) and the cycles between the
    last outputs of consecutive inferences."""
    cfg = config_for(model, rows, cols, **fields)
    prog = compile_program(model, cfg)
    dut = OverlayEngine(cfg, prog.descriptors, prog.weights, prog.params)
    got, ends = [], []
    n_out = prog.output_count

    async def feed(ctx):
        await stream_put(ctx, dut.i, [b for x in xs for b in input_bits(model, x, cfg)], idle=idle,
                         rng=random.Random(seed))

    # A design that deadlocks fails after a few inferences' worth of quiet cycles (idle inputs and output
    # stalls stretch an inference less than 4x), not after stream_get's default of 100 000 (~100 s each
    # example hypothesis shrinks).
    quiet = 4 * (inference_cycles(prog) + prog.input_count) + 1000

    async def drain(ctx):
        got.extend(await stream_get(ctx, dut.o, n_out * len(xs), stall=stall, rng=random.Random(seed + 1),
                                    timeout=quiet))

    async def watch(ctx):
        t = 0
        async for _, _, valid, ready in ctx.tick().sample(dut.o.valid, dut.o.ready):
            if valid and ready:
                ends.append(t)
            t += 1
            if len(ends) == n_out * len(xs):
                break

    run_sim(dut, feed, drain, watch)
    return np.array(got).reshape(len(xs), n_out), prog, ends


# -- random models over the width grid ------------------------------------------------------------

def random_model(rng, k, widths, in_q, last_logits=True):
    """A Dense stack with ``widths`` outputs per layer; layer formats drawn at random."""
    layers, q = [], in_q
    for i, n in enumerate(widths):
        last = i == len(widths) - 1
        binary_w = q.binary or rng.random() < 0.25     # ±1 weights on integer inputs too (TFC-w1a8)
        if binary_w:
            w_q = QuantSpec(1, True, 0, (1.0,), binary=True)
            w = rng.choice([-1, 1], (k, n))
        else:
            bits = int(rng.choice([1, 2, 4, 8]))
            w_q = QuantSpec(bits, True, 0, (1.0,))
            lo, hi = arith.int_range(bits, True)
            w = rng.integers(lo, hi + 1, (k, n))
        b = rng.integers(-40, 40, n)
        if last and last_logits:
            layers.append(Dense(w, b, w_q, None, None))
            break
        kind = rng.choice(["requant", "thresholds", "binary"])
        if kind == "binary":
            out_q = QuantSpec(1, True, 0, (1.0,), binary=True)
            rq = Thresholds(rng.integers(-20, 20, (n, 1)), out_lo=-1, out_step=2)
        elif kind == "thresholds":
            steps = int(rng.integers(1, 4))
            out_q = QuantSpec(2, False, 0, (1.0,))
            t = np.sort(rng.integers(-60, 60, (n, steps)), axis=1)
            rq = Thresholds(t, out_lo=0, out_step=1)
        else:
            bits = int(rng.choice([1, 2, 4, 8]))
            signed = bool(rng.random() < 0.4)
            lo, hi = arith.int_range(bits, signed)
            zp = int(rng.integers(lo, hi + 1))
            out_q = QuantSpec(bits, signed, zp, (1.0,))
            mult, shift = arith.quantize_multiplier(rng.uniform(0.001, 0.2, n))
            rq = Requant(mult, shift, zp, lo, hi, bool(rng.random() < 0.5))
        layers.append(Dense(w, b, w_q, out_q, rq))
        q, k = out_q, n
    return Model((layers[0].k,), in_q, layers, "random").validate()


def random_input_q(rng):
    kind = rng.choice(["binary", "unsigned", "signed"])
    if kind == "binary":
        return QuantSpec(1, True, 0, (1.0,), binary=True)
    bits = int(rng.choice([1, 2, 4, 8]))
    signed = kind == "signed"
    lo, hi = arith.int_range(bits, signed)
    return QuantSpec(bits, signed, int(rng.integers(lo, hi + 1)), (1.0,))


def random_codes(rng, q, shape):
    lo, hi = q.range
    if q.binary:
        return rng.choice([-1, 1], shape)
    return rng.integers(lo, hi + 1, shape)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), rows=st.sampled_from([1, 2, 3, 4, 8]), cols=st.sampled_from([1, 2, 3, 4]),
       depth=st.integers(1, 3), loadable=st.booleans(), array_regs=st.booleans())
def test_random_stacks_are_bit_exact_under_stalls(seed, rows, cols, depth, loadable, array_regs):
    rng = np.random.default_rng(seed)
    in_q = random_input_q(rng)
    k = int(rng.integers(1, 14))
    widths = [int(rng.integers(1, 10)) for _ in range(depth)]
    try:
        model = random_model(rng, k, widths, in_q, last_logits=bool(rng.random() < 0.6))
    except LowbitError:
        return          # a combination the IR refuses (e.g. binary inputs into integer weights)
    xs = random_codes(rng, in_q, (2, k))
    got, _, _ = simulate(model, rows, cols, xs, idle=0.3, stall=0.3, seed=seed % 1000, loadable=loadable,
                         array_regs=array_regs)
    assert np.array_equal(got, run(model, xs).reshape(2, -1))


@pytest.mark.parametrize("act_bits,act_signed", [(1, False), (2, False), (4, False), (8, False), (2, True),
                                                  (4, True), (8, True)])
@pytest.mark.parametrize("weight_bits", [1, 2, 4, 8])
def test_width_grid(act_bits, act_signed, weight_bits):
    rng = np.random.default_rng(act_bits * 100 + weight_bits * 10 + act_signed)
    model, in_q = grid_model(rng, act_bits, act_signed, weight_bits)
    xs = random_codes(rng, in_q, (3, 11))
    got, _, _ = simulate(model, 4, 2, xs, stall=0.2)
    assert np.array_equal(got, run(model, xs).reshape(3, -1))


@pytest.mark.parametrize("act_bits,act_signed,weight_bits,pairs", [(4, False, 4, 3), (4, True, 3, 4), (8, False, 2, 1)])
def test_products_packed_for_dsp_blocks_are_bit_exact(act_bits, act_signed, weight_bits, pairs):
    """OverlayConfig.dsp_pairs: some products as packed multiplies (the planner's choice on a UP5K)."""
    rng = np.random.default_rng(act_bits * 100 + weight_bits * 10 + pairs)
    model, in_q = grid_model(rng, act_bits, act_signed, weight_bits)
    xs = random_codes(rng, in_q, (3, 11))
    got, _, _ = simulate(model, 4, 2, xs, stall=0.2, dsp_pairs=pairs)
    assert np.array_equal(got, run(model, xs).reshape(3, -1))


def grid_model(rng, act_bits, act_signed, weight_bits):
    """11 -> 6 (requantized) -> 3 (logits) at the given widths, and its input format."""
    lo, hi = arith.int_range(act_bits, act_signed)
    in_q = QuantSpec(act_bits, act_signed, int(rng.integers(lo, hi + 1)), (1.0,))
    wlo, whi = arith.int_range(weight_bits, True)
    w = rng.integers(wlo, whi + 1, (11, 6))
    mult, shift = arith.quantize_multiplier(np.full(6, 0.05))
    out_q = QuantSpec(act_bits, False, 0, (1.0,))
    hidden = Dense(w, rng.integers(-30, 30, 6), QuantSpec(weight_bits, True, 0, (1.0,)), out_q,
                   Requant(mult, shift, 0, 0, (1 << act_bits) - 1, True))
    w2 = rng.integers(wlo, whi + 1, (6, 3))
    model = Model((11,), in_q, [hidden, Dense(w2, rng.integers(-9, 9, 3), QuantSpec(weight_bits, True, 0, (1.0,)),
                                             None, None)], "grid").validate()
    return model, in_q


def test_requantized_values_far_past_the_clamp_bounds():
    """The requantizer saturates the rounded value to 12 bits before zero point and clamp
    (hw.overlay.SAT_BITS): values around and far past +-2048, both signs, clamp as the reference's."""
    edges = np.array([-70000, -2600, -2049, -2048, -2047, -1000, 0, 1000, 2046, 2047, 2048, 2600, 70000])
    n = len(edges)
    mult, shift = arith.quantize_multiplier(np.full(n, 1.0))
    layers = [Dense(np.ones((1, n), dtype=np.int64), edges, QuantSpec(8, True, 0, (1.0,)),
                    QuantSpec(8, True, 5, (1.0,)), Requant(mult, shift, 5, -128, 127, False))]
    model = Model((1,), QuantSpec(8, True, 0, (1.0,)), layers, "edges").validate()
    xs = np.array([[0], [1], [-1], [127], [-128]])
    want = run(model, xs).reshape(len(xs), -1)
    assert (want == 127).any() and (want == -128).any() and ((want > -128) & (want < 127)).any()
    got, _, _ = simulate(model, 2, 4, xs)
    assert np.array_equal(got, want)


def test_thresholds_past_the_accumulator_range_in_narrow_parameter_fields():
    """A record's bias and thresholds are ``acc_bits + 1`` wide (OverlayConfig.field_bits), not 32: the
    compiler clamps a threshold past the range of ``acc + bias`` (reached always or never) into the field,
    so thresholds at, just inside and far past the extremes ``acc + bias`` takes count as the reference's."""
    w = np.array([[7, -8, 7, -8, 1, 0], [7, -8, -8, 7, 0, 1]])         # acc of 4-bit codes: -112 .. 112
    bias = np.array([100, -100, 0, 0, 1, -1])
    t = np.array([[-10 ** 6, 211, 212], [-212, -211, 10 ** 6], [-113, 0, 113], [-2 ** 20, 2 ** 20, 2 ** 30],
                  [-1, 0, 1], [-9, 8, 9]])
    layers = [Dense(w, bias, QuantSpec(4, True, 0, (1.0,)), QuantSpec(2, False, 0, (1.0,)), Thresholds(t, 0, 1))]
    model = Model((2,), QuantSpec(4, True, 0, (1.0,)), layers, "edges").validate()
    xs = np.array([[7, 7], [-8, -8], [7, -8], [-8, 7], [0, 0], [1, -1], [3, 5]])
    want = run(model, xs).reshape(len(xs), -1)
    assert {0, 3} <= set(want.ravel())
    got, prog, _ = simulate(model, 2, 2, xs)
    cfg = prog.config
    assert cfg.field_bits == cfg.acc_bits + 1 < 32 and cfg.param_bits == cfg.field_bits * 4
    assert np.array_equal(got, want)


def test_binary_network():
    """XNOR-popcount layers (±1 inputs and weights) run on the integer array as ±1 products."""
    rng = np.random.default_rng(5)
    b1 = QuantSpec(1, True, 0, (1.0,), binary=True)
    layers = [Dense(rng.choice([-1, 1], (20, 9)), rng.integers(-5, 5, 9), b1, b1,
                    Thresholds(rng.integers(-4, 4, (9, 1)), out_lo=-1, out_step=2)),
              Dense(rng.choice([-1, 1], (9, 4)), rng.integers(-5, 5, 4), b1, None, None)]
    model = Model((20,), b1, layers, "bnn").validate()
    xs = rng.choice([-1, 1], (3, 20))
    got, _, _ = simulate(model, 8, 2, xs, idle=0.2, stall=0.2)
    assert np.array_equal(got, run(model, xs).reshape(3, -1))


# -- the cycle model ------------------------------------------------------------------------------

def mlp(ks, bits=4, seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    lo, hi = arith.int_range(bits, True)
    for i, (k, n) in enumerate(zip(ks[:-1], ks[1:])):
        w, b = rng.integers(lo, hi + 1, (k, n)), rng.integers(-50, 50, n)
        if i < len(ks) - 2:
            mult, shift = arith.quantize_multiplier(np.full(n, 0.02))
            layers.append(Dense(w, b, QuantSpec(bits, True), QuantSpec(bits, False),
                                Requant(mult, shift, 0, 0, (1 << bits) - 1, True)))
        else:
            layers.append(Dense(w, b, QuantSpec(bits, True), None, None))
    return Model((ks[0],), QuantSpec(bits, False), layers, "mlp").validate()


@pytest.mark.parametrize("ks,rows,cols,bits", [
    ([8, 4], 4, 4, 4), ([8, 4, 3], 4, 4, 4), ([16, 8, 3], 4, 2, 4), ([20, 12, 5], 4, 2, 4),
    ([9, 9, 9], 2, 8, 4), ([33, 17, 6], 8, 2, 4), ([5, 30, 7], 4, 8, 4), ([64, 16, 10], 16, 4, 4),
    ([40, 24, 10], 8, 8, 2), ([40, 24, 10], 8, 8, 8), ([30, 10], 16, 4, 1), ([64, 64, 10], 16, 1, 2),
    ([2, 12], 2, 4, 2)])
@pytest.mark.parametrize("loadable", [False, True])
@pytest.mark.parametrize("buffered", [True, False])
def test_cycle_model_equals_simulation(ks, rows, cols, bits, loadable, buffered):
    """Back-to-back inferences: the period between their last outputs is inference_cycles (a loadable
    overlay reads each descriptor in 32-bit words; with the input memory the next input loads while the
    layers run, so the period is the layers' cycles or, for a model of few, short layers and many inputs
    ([30, 10] on 16 x 4), the input's; without it the input loads from the last layer's drain on, all of
    it there when it is shorter, [2, 12])."""
    model = mlp(ks, bits)
    xs = np.random.default_rng(1).integers(0, 1 << bits, (3, ks[0]))
    got, prog, ends = simulate(model, rows, cols, xs, loadable=loadable, **({} if buffered else {"in_depth": 0}))
    assert np.array_equal(got, run(model, xs).reshape(3, -1))
    n_out = prog.output_count
    assert ends[2 * n_out - 1] - ends[n_out - 1] == ends[3 * n_out - 1] - ends[2 * n_out - 1] == inference_cycles(prog)
    layers = sum(p.cycles for p in prog.layers)
    assert inference_cycles(prog) == (max(layers, ks[0]) if buffered else layers + ks[0])


@pytest.mark.parametrize("ks,rows,cols,bits,pairs", [([16, 8, 3], 4, 2, 4, 0), ([40, 24, 10], 8, 8, 4, 7),
                                                  ([30, 10], 16, 4, 1, 0)])
def test_array_registers_take_two_cycles_more_a_layer(ks, rows, cols, bits, pairs):
    """OverlayConfig.array_regs (registered operands and column sums): the same outputs, and the cycle
    model, two cycles more a layer, equals simulation."""
    model = mlp(ks, bits)
    xs = np.random.default_rng(2).integers(0, 1 << bits, (2, ks[0]))
    got, prog, ends = simulate(model, rows, cols, xs, array_regs=True, dsp_pairs=pairs)
    assert np.array_equal(got, run(model, xs).reshape(2, -1))
    n_out = prog.output_count
    assert ends[2 * n_out - 1] - ends[n_out - 1] == inference_cycles(prog)
    # every layer's drain two cycles longer (without the input memory, where each counts), but the last's,
    # which the next input's load hides
    plain, regs = (compile_program(model, config_for(model, rows, cols, dsp_pairs=pairs, array_regs=on, in_depth=0))
                   for on in (False, True))
    assert sum(p.cycles for p in regs.layers) == sum(p.cycles for p in plain.layers) + 2 * (len(prog.layers) - 1)


def test_dense_layers_meet_the_weight_bandwidth_roof():
    """A batch-1 Dense layer streams ratio port words per step: with K and N filling the array, the
    layer runs at >= 90 % of max(compute roof, weight-bandwidth roof)."""
    model = mlp([256, 64, 64, 10], 4)
    cfg = config_for(model, 8, 8)          # 8x8 array of 4-bit weights: 4 port words of 64 bits a step
    prog = compile_program(model, cfg)
    for plan in prog.layers[:2]:
        assert plan.ratio == 4 and plan.roofline_fraction >= 0.9, plan


# -- refusals -------------------------------------------------------------------------------------

def test_weights_that_do_not_fit_are_refused_with_the_sizes():
    model = mlp([64, 32, 10])
    cfg = config_for(model, 4, 4).__class__(**{**config_for(model, 4, 4).__dict__, "weight_depth": 100})
    with pytest.raises(LowbitError, match=r"the weights need \d+ words of 64 bits \(\d+ bytes\), the overlay's "
                                          r"weight memory holds 100 \(800 bytes\)"):
        compile_program(model, cfg)


def test_activations_that_do_not_fit_are_refused():
    model = mlp([64, 32, 10])
    cfg = OverlayConfig(**{**config_for(model, 4, 4).__dict__, "act_depth": 8})
    with pytest.raises(LowbitError, match=r"layer 0 \(dense 64x32\): its input needs 16 activation words of 4 codes, "
                                          r"a bank holds 8"):
        compile_program(model, cfg)


def test_formats_the_overlay_was_not_built_for_are_refused():
    model = mlp([16, 8, 4], bits=4)
    cfg = config_for(mlp([16, 8, 4], bits=2), 4, 4)
    with pytest.raises(LowbitError, match=r"input format \(4, False, False\)"):
        compile_program(model, cfg)


def test_a_dense_overlay_refuses_convolutions():
    """An overlay built for vectors has no address generator for windows."""
    model = random_cnn(np.random.default_rng(0), (4, 4, 1), [("conv", 2, 3, 1, 0)], QuantSpec(4, False, 0, (1.0,)))
    cfg = config_for(mlp([16, 8, 3]), 4, 4)
    with pytest.raises(LowbitError, match=r"layer 0 \(conv2d\): this overlay was built for Dense layers on vectors"):
        compile_program(model, cfg)


# -- convolutions and pooling ----------------------------------------------------------------------

def random_requant(rng, n):
    """A random requantizer for ``n`` channels and its output QuantSpec (codes, thresholds or ±1)."""
    kind = rng.choice(["requant", "thresholds", "binary"], p=[0.6, 0.2, 0.2])
    if kind == "binary":
        return QuantSpec(1, True, 0, (1.0,), binary=True), Thresholds(rng.integers(-20, 20, (n, 1)), out_lo=-1,
                                                                       out_step=2)
    if kind == "thresholds":
        t = np.sort(rng.integers(-60, 60, (n, int(rng.integers(1, 4)))), axis=1)
        return QuantSpec(2, False, 0, (1.0,)), Thresholds(t, out_lo=0, out_step=1)
    bits = int(rng.choice([1, 2, 4, 8]))
    signed = bool(rng.random() < 0.4)
    lo, hi = arith.int_range(bits, signed)
    zp = int(rng.integers(lo, hi + 1))
    mult, shift = arith.quantize_multiplier(rng.uniform(0.001, 0.2, n))
    return QuantSpec(bits, signed, zp, (1.0,)), Requant(mult, shift, zp, lo, hi, bool(rng.random() < 0.5))


def random_weights(rng, shape, binary):
    if binary:
        return QuantSpec(1, True, 0, (1.0,), binary=True), rng.choice([-1, 1], shape)
    bits = int(rng.choice([1, 2, 4, 8]))
    lo, hi = arith.int_range(bits, True)
    return QuantSpec(bits, True, 0, (1.0,)), rng.integers(lo, hi + 1, shape)


def random_cnn(rng, in_shape, plan, in_q, dense=None):
    """Conv2d ("conv", channels, kernel, stride, padding) and MaxPool ("pool", kernel, stride) layers as
    ``plan`` says, then Flatten and a Dense layer of ``dense`` logits (or the last Conv2d's outputs)."""
    layers, q, shape = [], in_q, tuple(in_shape)
    for i, spec in enumerate(plan):
        if spec[0] == "pool":
            layers.append(MaxPool2d((spec[1], spec[1]), (spec[2], spec[2])))
        else:
            _, n, k, stride, padding = spec
            w_q, w = random_weights(rng, (k, k, shape[2], n), q.binary or rng.random() < 0.2)
            if dense is None and i == len(plan) - 1:
                layers.append(Conv2d(w, rng.integers(-40, 40, n), w_q, None, None, (stride, stride), (padding, padding)))
            else:
                out_q, rq = random_requant(rng, n)
                layers.append(Conv2d(w, rng.integers(-40, 40, n), w_q, out_q, rq, (stride, stride), (padding, padding)))
                q = out_q
        shape = layers[-1].out_shape(shape)
    if dense is not None:
        layers.append(Flatten())
        w_q, w = random_weights(rng, (int(np.prod(shape)), dense), q.binary)
        layers.append(Dense(w, rng.integers(-40, 40, dense), w_q, None, None))
    return Model(tuple(in_shape), in_q, layers, "cnn").validate()


def conv_plans():
    conv = st.tuples(st.just("conv"), st.integers(1, 6), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1))
    pool = st.tuples(st.just("pool"), st.integers(2, 3), st.integers(1, 2))
    return st.lists(st.one_of(conv, conv, pool), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), rows=st.sampled_from([1, 2, 3, 4, 8]), cols=st.sampled_from([1, 2, 3, 4]),
       plan=conv_plans(), size=st.tuples(st.integers(3, 7), st.integers(3, 7), st.integers(1, 5)),
       dense=st.sampled_from([None, 1, 4]), loadable=st.booleans())
def test_random_conv_stacks_are_bit_exact_under_stalls(seed, rows, cols, plan, size, dense, loadable):
    """Conv2d (kernel 1-3, stride 1-2, padding at the zero point), MaxPool and Dense stacks, random
    formats, channels more and fewer than the array's rows."""
    rng = np.random.default_rng(seed)
    in_q = random_input_q(rng)
    if dense is None and plan[-1][0] == "pool":
        plan = plan + [("conv", 2, 1, 1, 0)]       # the outputs come from a compute layer
    try:
        model = random_cnn(rng, size, plan, in_q, dense)
    except (LowbitError, ValueError):
        return          # a window that does not fit the image, or a combination the IR refuses
    xs = random_codes(rng, in_q, (2, *size))
    got, prog, ends = simulate(model, rows, cols, xs.reshape(2, -1), idle=0.3, stall=0.3, seed=seed % 1000,
                               loadable=loadable)
    assert np.array_equal(got, run(model, xs).reshape(2, -1))


@pytest.mark.parametrize("rows,cols", [(8, 4), (8, 8)])
def test_a_stalled_last_step_keeps_its_layers_formats_when_layer_0_starts_early(rows, cols):
    """Found by the hypothesis test above (seed 271551666): the last layer's final step waits in front
    of the array (result slots full) while the next inference's layer 0, its input already in the input
    memory, latches its descriptor. The step must still be decoded with its own layer's padding value
    and formats (this model's last layer pads with -1 and reads signed 4-bit codes, layer 0 pads with 0
    and reads unsigned ones); decoded with layer 0's, the last position's last group was 1 off."""
    rng = np.random.default_rng(271551666)
    in_q = random_input_q(rng)
    model = random_cnn(rng, (3, 3, 1), [("conv", 1, 1, 1, 0), ("conv", 3, 1, 1, 0), ("conv", 6, 1, 1, 1)], in_q, None)
    xs = random_codes(rng, in_q, (2, 3, 3, 1))
    got, prog, _ = simulate(model, rows, cols, xs.reshape(2, -1))
    assert prog.config.in_depth and prog.descriptors[0]["pad"] != prog.descriptors[-1]["pad"]
    assert np.array_equal(got, run(model, xs).reshape(2, -1))


@pytest.mark.parametrize("rows,cols", [(4, 2), (1, 1), (8, 4), (2, 3)])
def test_conv_cycle_model_equals_simulation(rows, cols):
    """A padded Conv2d, MaxPool, Flatten and Dense: the period between inferences is inference_cycles."""
    rng = np.random.default_rng(rows * 10 + cols)
    model = random_cnn(rng, (6, 5, 3), [("conv", 5, 3, 1, 1), ("pool", 2, 2)], QuantSpec(4, False, 3, (1.0,)), 3)
    xs = rng.integers(0, 16, (2, 90))
    got, prog, ends = simulate(model, rows, cols, xs)
    assert np.array_equal(got, run(model, xs.reshape(2, 6, 5, 3)).reshape(2, -1))
    n_out = prog.output_count
    assert ends[2 * n_out - 1] - ends[n_out - 1] == inference_cycles(prog)
    assert [p.kind for p in prog.layers] == ["conv2d", "maxpool2d", "dense"]


def test_a_fixed_program_keeps_only_the_last_layers_fields_that_differ_from_layer_0():
    """While the last layer drains, the back end runs on its own copy of that layer's fields: in a fixed
    program only of those that differ from layer 0's (the running descriptor then), in a loadable one all."""
    model = random_model(np.random.default_rng(3), 12, [8, 6], QuantSpec(4, False, 0, (1.0,)))
    cfg = config_for(model, 4, 2)
    prog = compile_program(model, cfg)
    first, last = prog.descriptors[0], prog.descriptors[-1]
    kept = kept_fields(cfg, prog.descriptors)
    assert set(kept) == {f for f in back_fields(cfg) if first[f] != last[f]} and "outs" not in back_fields(cfg)
    assert "p_base" in kept and "mode" in kept and len(kept) < len(BACK_FIELDS) - 2
    assert kept_fields(cfg, prog.descriptors[:1]) == ()
    loadable = config_for(model, 4, 2, loadable=True)
    assert len(kept_fields(loadable, compile_program(model, loadable).descriptors)) == len(BACK_FIELDS) - 2


@pytest.mark.parametrize("loadable", [False, True])
def test_the_next_descriptor_is_read_while_a_layer_runs(loadable):
    """The next layer starts the cycle after this one's last output is latched: its descriptor was read
    while this one ran. A loadable conv overlay's descriptor takes several 32-bit words; a one-window
    MaxPool pass is shorter than reading them, and waits: the cycle model counts both."""
    from lowbit.sw.flow.overlay import LAYER_OVERHEAD, fetch_cycles
    rng = np.random.default_rng(5)
    model = random_cnn(rng, (2, 2, 3), [("conv", 2, 1, 1, 0), ("pool", 2, 2)], QuantSpec(4, False, 3, (1.0,)), 3)
    xs = rng.integers(0, 16, (2, 12))
    got, prog, ends = simulate(model, 4, 2, xs, loadable=loadable)
    assert np.array_equal(got, run(model, xs.reshape(2, 2, 2, 3)).reshape(2, -1))
    n_out = prog.output_count
    assert ends[2 * n_out - 1] - ends[n_out - 1] == inference_cycles(prog)
    cfg = config_for(model, 4, 2, loadable=loadable)
    pool = prog.layers[1]
    assert pool.kind == "maxpool2d" and pool.kc == 4
    if loadable:
        assert cfg.program_word_count > 5 and pool.cycles == fetch_cycles(cfg) + LAYER_OVERHEAD
    else:
        assert cfg.program_word_count == 1 and pool.cycles == 4 + 1 + LAYER_OVERHEAD


def test_a_model_ending_in_a_pool_is_refused():
    model = Model((4, 4, 1), QuantSpec(4, False), [MaxPool2d((2, 2))], "pool").validate()
    with pytest.raises(LowbitError, match=r"layer 0 \(maxpool2d\) is the model's last"):
        config_for(model, 2, 2)


def test_binary_weights_on_multibit_inputs():
    """FINN TFC-w1a8's first layer: ±1 weights on 8-bit unsigned inputs with a zero point."""
    rng = np.random.default_rng(8)
    in_q = QuantSpec(8, False, 17, (1.0,))
    w_b = QuantSpec(1, True, 0, (1.0,), binary=True)
    out_q = QuantSpec(4, False, 0, (1.0,))
    mult, shift = arith.quantize_multiplier(np.full(7, 0.003))
    layers = [Dense(rng.choice([-1, 1], (30, 7)), rng.integers(-99, 99, 7), w_b, out_q,
                    Requant(mult, shift, 0, 0, 15, True)),
              Dense(rng.choice([-1, 1], (7, 3)), rng.integers(-9, 9, 3), w_b, None, None)]
    model = Model((30,), in_q, layers, "w1a8").validate()
    xs = rng.integers(0, 256, (3, 30))
    got, _, _ = simulate(model, 4, 4, xs, idle=0.2, stall=0.2)
    assert np.array_equal(got, run(model, xs).reshape(3, -1))


def expected_addresses(prog, inference=0):
    """The address sequences the compiler's layout implies (a Python model of the sequencer) for the
    ``inference``-th input: front-end reads (memory, word, weight port word; None for a MaxPool, which
    reads no weights) in issue order, the memory "in" (the input memory) or "act"; parameter records in
    requantizer order; activation words written (the input into bank 0 without an input memory, then
    each layer's outputs); input memory words written (its halves in turn). A padding tap reads the
    first word."""
    cfg = prog.config
    reads, params = [], []
    first = prog.descriptors[0]
    inputs = list(range(first.get("in_h", 1) * first.get("in_w", 1) * -(-first.get("cin", first["k"]) // cfg.rows)))
    half = (inference % 2) * cfg.in_depth
    in_writes = [half + a for a in inputs] if cfg.in_depth else []
    writes = [] if cfg.in_depth else inputs
    for li, d in enumerate(prog.descriptors):
        mem, bank = ("in", half) if li == 0 and cfg.in_depth else ("act", (li % 2) * cfg.act_depth)
        h, w, cw = d.get("in_h", 1), d.get("in_w", 1), d.get("cc_n", d["kc"])
        kh, kw, oh, ow = (d.get(f, 1) for f in ("kh", "kw", "oh", "ow"))
        sh, sw, ph, pw = (d.get(f, v) for f, v in (("sh", 1), ("sw", 1), ("ph", 0), ("pw", 0)))
        pool = d.get("pool", 0)
        words = -(-d.get("cin", 1) // cfg.rows) if pool else cw
        for oy in range(oh):
            for ox in range(ow):
                for g in range(d["groups"]):
                    # a pool's groups are the pixel's words, its steps the taps; a layer's steps are
                    # (kernel row, kernel column, word of the pixel)
                    taps = [(ky, kx, g) for ky in range(kh) for kx in range(kw)] if pool else \
                           [(ky, kx, c) for ky in range(kh) for kx in range(kw) for c in range(cw)]
                    for step, (ky, kx, c) in enumerate(taps):
                        iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
                        act = bank + ((iy * w + ix) * words + c if 0 <= iy < h and 0 <= ix < w else 0)
                        for s in range(d["ratio"]):
                            w_addr = None if pool else d["w_base"] + (g * d["kc"] + step) * d["ratio"] + s
                            reads.append((mem, act, w_addr))
                if not pool and not d.get("wide"):     # the wide back end's thresholds are constants
                    params += [d["p_base"] + ch for ch in range(d["n"])]
        if not d["last"]:
            out_bank = cfg.act_depth * (1 - li % 2)
            writes += [out_bank + i for i in range(oh * ow * -(-d["n"] // cfg.rows))]
    return reads, params, writes, in_writes


def expected_runs(prog, count):
    """:func:`expected_addresses` of ``count`` inferences, each sequence joined."""
    runs = [expected_addresses(prog, j) for j in range(count)]
    return [sum((r[i] for r in runs), []) for i in range(4)]


def watch_addresses(dut, prog, xs):
    """The addresses the engine drives over two back-to-back inferences, stalls on the output."""
    seen = {"reads": [], "params": [], "writes": [], "in_writes": []}
    total = prog.output_count * len(xs)

    async def feed(ctx):
        await stream_put(ctx, dut.i, [int(v) for x in xs for v in x])

    async def drain(ctx):
        await stream_get(ctx, dut.o, total, stall=0.4, rng=random.Random(7))

    async def watch(ctx):
        p = dut.probes
        got = 0
        async for _, _, issue, act, w, take, pa, wb, wba, ov, ordy, pool, inp, ie, ia in ctx.tick().sample(
                p["issue"], p["act_addr"], p["w_addr"], p["take"], p["p_addr"], p["wb_en"], p["wb_addr"],
                dut.o.valid, dut.o.ready, p["pool"], p["from_input"], p["in_en"], p["in_addr"]):
            if issue:
                seen["reads"].append(("in" if inp else "act", act, None if pool else w))
            if ie:
                seen["in_writes"].append(ia)
            if take:
                seen["params"].append(pa)
            if wb:
                seen["writes"].append(wba)
            got += ov and ordy
            if got == total:
                break

    run_sim(dut, feed, drain, watch)
    return seen


@pytest.mark.parametrize("ks,rows,cols,bits", [([20, 12, 5], 4, 2, 4), ([5, 30, 7], 4, 8, 4),
                                               ([40, 24, 10], 8, 8, 2), ([9, 9, 9], 2, 8, 8)])
@pytest.mark.parametrize("buffered", [True, False])
def test_sequencer_addresses_follow_the_layout(ks, rows, cols, bits, buffered):
    """Every memory address the sequencer and the requantizer drive, cycle by cycle, against the Python
    model of the layout (two back-to-back inferences, stalls on the output), with the input memory and
    without (the input loaded into bank 0)."""
    model = mlp(ks, bits)
    cfg = config_for(model, rows, cols, **({} if buffered else {"in_depth": 0}))
    prog = compile_program(model, cfg)
    dut = OverlayEngine(cfg, prog.descriptors, prog.weights, prog.params)
    xs = np.random.default_rng(2).integers(0, 1 << bits, (2, ks[0]))
    seen = watch_addresses(dut, prog, xs)
    reads, params, writes, in_writes = expected_runs(prog, 2)
    assert (seen["reads"], seen["params"], seen["writes"], seen["in_writes"]) == (reads, params, writes, in_writes)
    assert max(w for _, _, w in reads) < len(prog.weights) <= cfg.weight_depth
    assert max(params) < len(prog.params) <= cfg.param_depth


@pytest.mark.parametrize("plan,size,rows,cols", [
    ([("conv", 5, 3, 1, 1), ("pool", 2, 2)], (6, 5, 3), 2, 2),        # padded, three words a pixel
    ([("conv", 3, 3, 2, 1), ("conv", 4, 2, 1, 0)], (7, 6, 2), 4, 2),  # stride 2, then 2x2 on 3 channels
    ([("pool", 3, 2), ("conv", 2, 1, 1, 0)], (7, 7, 5), 2, 1),         # a pool first, 3 words a pixel
])
def test_window_addresses_follow_the_layout(plan, size, rows, cols):
    """The address generator against the Python model: every window tap of every output position (padding
    taps read nothing the array uses), pool windows a word of the pixel at a time, the weights again for
    every position, and the pixels written back."""
    rng = np.random.default_rng(3)
    model = random_cnn(rng, size, plan, QuantSpec(4, False, 5, (1.0,)), 3)
    cfg = config_for(model, rows, cols)
    prog = compile_program(model, cfg)
    dut = OverlayEngine(cfg, prog.descriptors, prog.weights, prog.params)
    xs = rng.integers(0, 16, (2, int(np.prod(size))))
    seen = watch_addresses(dut, prog, xs)
    reads, params, writes, in_writes = expected_runs(prog, 2)
    assert (seen["reads"], seen["params"], seen["writes"], seen["in_writes"]) == (reads, params, writes, in_writes)
    assert max(a for m, a, _ in reads if m == "act") < 2 * cfg.act_depth
    assert max(a for m, a, _ in reads if m == "in") < 2 * cfg.in_depth


# -- layer 0 as patches, a result slot a cycle ----------------------------------------------------

def first_conv_model(rng, size, n, kernel, out, in_q=None, then=("pool", 2, 1)):
    """A first Conv2d of ``n`` channels (``out``: "thresholds", "binary" or "requant"), then ``then`` and
    a Dense layer of 3 logits."""
    in_q = in_q or QuantSpec(4, False, 3, (1.0,))
    w_q, w = random_weights(rng, (kernel, kernel, size[2], n), False)
    if out == "binary":
        out_q, rq = QuantSpec(1, True, 0, (1.0,), binary=True), Thresholds(rng.integers(-20, 20, (n, 1)), -1, 2)
    elif out == "thresholds":
        # thresholds past the accumulator's range, a negative step
        t = np.sort(rng.integers(-60, 60, (n, 3)), axis=1)
        t[0] = [-10 ** 6, 0, 10 ** 6]
        out_q, rq = QuantSpec(2, True, 0, (1.0,)), Thresholds(t, out_lo=1, out_step=-1)
    else:
        mult, shift = arith.quantize_multiplier(np.full(n, 0.02))
        out_q, rq = QuantSpec(4, False, 0, (1.0,)), Requant(mult, shift, 0, 0, 15, True)
    layers = [Conv2d(w, rng.integers(-40, 40, n), w_q, out_q, rq)]
    shape = layers[0].out_shape(tuple(size))
    if then:
        layers.append(MaxPool2d((then[1], then[1]), (then[2], then[2])))
        shape = layers[-1].out_shape(shape)
    w_q, w = random_weights(rng, (int(np.prod(shape)), 3), out == "binary")
    layers += [Flatten(), Dense(w, rng.integers(-40, 40, 3), w_q, None, None)]
    return Model(tuple(size), in_q, layers, "first-conv").validate()


def ties(model, xs, rng):
    """``model`` with layer 0's thresholds set to sums ``acc + bias`` that its inputs ``xs`` reach, so that
    some are met exactly (a compare off by one changes a code); channel 0 keeps a threshold past either
    end of the accumulator's range."""
    import dataclasses
    layer = model.layers[0]
    totals = (run(model, xs, intermediates=True)[0][2] + layer.bias).reshape(-1, layer.n)
    steps = layer.requant.thresholds.shape[1]
    t = np.sort(np.stack([rng.choice(totals[:, j], steps) for j in range(layer.n)]), axis=1)
    if steps == 3:
        t[0, 0], t[0, 2] = -10 ** 6, 10 ** 6
    rq = dataclasses.replace(layer.requant, thresholds=t)
    layers = [dataclasses.replace(layer, requant=rq), *model.layers[1:]]
    return Model(model.input_shape, model.input_q, layers, model.name).validate()


@pytest.mark.parametrize("size,n,kernel,out,rows,cols", [
    ((6, 5, 1), 4, 3, "thresholds", 9, 4),      # 9 taps in 9 lanes, one step a position, a slot a cycle
    ((5, 6, 2), 3, 2, "binary", 8, 4),          # 2x2 on 2 channels: 8 taps; ±1 codes written back
    ((6, 5, 1), 4, 3, "requant", 16, 4),        # patches, the one-channel requantizer
    ((4, 7, 1), 2, 3, "thresholds", 9, 1),      # two groups: not wide, patches only
])
@pytest.mark.parametrize("in_depth", [None, 0])
def test_patches_and_the_wide_back_end_are_bit_exact(size, n, kernel, out, rows, cols, in_depth):
    """Layer 0 read as one patch word a position (the loader's shift register) and, for a multi-threshold
    layer of at most a slot of channels, requantized a slot a cycle: bit-exact under idle inputs and a
    stalled output, with the input memory and without; the cycle model equals simulation."""
    rng = np.random.default_rng(sum(size) * 10 + n + rows)
    model = first_conv_model(rng, size, n, kernel, out)
    xs = rng.integers(0, 16, (3, int(np.prod(size))))
    if out != "requant":
        model = ties(model, xs.reshape(3, *size), rng)
    fields = {} if in_depth is None else {"in_depth": in_depth}
    cfg = config_for(model, rows, cols, **fields)
    assert cfg.patch == (size[1], size[2], kernel, kernel)
    assert cfg.wide == (out != "requant" and n <= cols)
    got, prog, _ = simulate(model, rows, cols, xs, idle=0.3, stall=0.3, seed=3, **fields)
    assert np.array_equal(got, run(model, xs.reshape(3, *size)).reshape(3, -1))
    assert prog.descriptors[0]["kc"] == 1 and prog.descriptors[0]["k"] == int(np.prod(size))
    _, prog, ends = simulate(model, rows, cols, xs[:2], **fields)
    n_out = prog.output_count
    assert ends[2 * n_out - 1] - ends[n_out - 1] == inference_cycles(prog)


def test_patches_and_the_wide_back_end_meet_the_conv_roof():
    """The MNIST CNN's first layer (3x3, 1 -> 8 channels, 2-bit thresholds) on a 9x8 array: one step and
    one slot a position, at least 95 % of its compute roof (it was 12 % on 8x8: a tap a step, a channel a
    cycle), and the other convolution still above 80 %."""
    rng = np.random.default_rng(9)
    w_q, a_q = QuantSpec(2, True, 0, (1.0,)), QuantSpec(2, False, 0, (1.0,))
    thr = lambda n: Thresholds(np.sort(rng.integers(-9, 9, (n, 3)), axis=1), out_lo=0, out_step=1)
    layers = [Conv2d(rng.integers(-2, 2, (3, 3, 1, 8)), rng.integers(-5, 5, 8), w_q, a_q, thr(8)), MaxPool2d((2, 2)),
              Conv2d(rng.integers(-2, 2, (3, 3, 8, 16)), rng.integers(-5, 5, 16), w_q, a_q, thr(16)),
              MaxPool2d((2, 2)), Flatten(), Dense(rng.integers(-2, 2, (400, 10)), rng.integers(-5, 5, 10), w_q, None, None)]
    model = Model((28, 28, 1), a_q, layers, "mnist-cnn").validate()
    prog = compile_program(model, config_for(model, 9, 8, port_bits=144))
    conv = [p for p in prog.layers if p.kind == "conv2d"]
    assert prog.config.patch == (28, 1, 3, 3) and conv[0].wide
    assert conv[0].roofline_fraction >= 0.95 and conv[1].roofline_fraction >= 0.8
    assert conv[0].output_roof == conv[0].positions


def test_a_cnn_shaped_for_its_array_meets_every_layer_roof():
    """The MNIST CNN with 9 and 18 channels on 9x10 (`lowbit build --array 9x10`, docs/hardware.md): 9
    channels fill a pixel's word of 9 lanes, so conv2 and the Dense layer waste no row, and its 10 outputs
    fill the 10 columns; with the next input loaded while it drains, the Dense layer is within 90 % of its
    roofline and both convolutions within 80 % of their compute roof. With 8 and 16 channels on 9x8 the
    Dense layer's 10 outputs take two groups of 8 columns: at most 10/16 of the roof."""
    rng = np.random.default_rng(9)
    w_q, a_q = QuantSpec(2, True, 0, (1.0,)), QuantSpec(2, False, 0, (1.0,))
    thr = lambda n: Thresholds(np.sort(rng.integers(-9, 9, (n, 3)), axis=1), out_lo=0, out_step=1)

    def cnn(c1, c2):
        layers = [Conv2d(rng.integers(-2, 2, (3, 3, 1, c1)), rng.integers(-5, 5, c1), w_q, a_q, thr(c1)),
                  MaxPool2d((2, 2)), Conv2d(rng.integers(-2, 2, (3, 3, c1, c2)), rng.integers(-5, 5, c2), w_q, a_q,
                                            thr(c2)), MaxPool2d((2, 2)), Flatten(),
                  Dense(rng.integers(-2, 2, (25 * c2, 10)), rng.integers(-5, 5, 10), w_q, None, None)]
        return Model((28, 28, 1), a_q, layers, "mnist-cnn").validate()

    prog = compile_program(cnn(9, 18), config_for(cnn(9, 18), 9, 10, port_bits=180))
    assert prog.config.wide and [p.kind for p in prog.layers][-1] == "dense"
    assert all(p.roofline_fraction >= (0.9 if p.kind == "dense" else 0.8) for p in prog.layers)
    narrow = compile_program(cnn(8, 16), config_for(cnn(8, 16), 9, 8, port_bits=144))
    assert narrow.layers[-1].roofline_fraction <= 10 / 16


def test_patch_window_addresses_follow_the_layout():
    """The patch words the loader writes (one a position, in order) and the sequencer's reads of them, and a
    wide layer that reads no parameter records, against the Python model of the layout."""
    rng = np.random.default_rng(4)
    model = first_conv_model(rng, (6, 5, 1), 4, 3, "thresholds")
    cfg = config_for(model, 9, 4)
    prog = compile_program(model, cfg)
    assert cfg.wide and cfg.patch
    dut = OverlayEngine(cfg, prog.descriptors, prog.weights, prog.params)
    xs = rng.integers(0, 16, (2, 30))
    seen = watch_addresses(dut, prog, xs)
    reads, params, writes, in_writes = expected_runs(prog, 2)
    assert (seen["reads"], seen["params"], seen["writes"], seen["in_writes"]) == (reads, params, writes, in_writes)
    assert len(in_writes) == 2 * 4 * 3


def test_patches_and_the_wide_back_end_are_for_fixed_overlays():
    rng = np.random.default_rng(6)
    model = first_conv_model(rng, (6, 5, 1), 4, 3, "thresholds")
    cfg = config_for(model, 9, 4, loadable=True)
    assert cfg.patch == () and not cfg.wide
    with pytest.raises(ValueError, match="fixed overlay"):
        config_for(model, 9, 4, loadable=True, patch=(5, 1, 3, 3))
    with pytest.raises(ValueError, match="kh\\*kw\\*cin taps fit rows=8"):
        config_for(model, 8, 4, patch=(5, 1, 3, 3))
    other = first_conv_model(rng, (6, 6, 1), 4, 3, "thresholds")
    with pytest.raises(LowbitError, match="loader stores patches"):
        compile_program(other, config_for(model, 9, 4))
    with pytest.raises(ValueError, match="layer 0 is wide"):
        OverlayEngine(config_for(model, 9, 4), [], [], [])


def test_dead_channels_of_a_ptq_model_fit_the_accumulators():
    """PTQ gives a channel whose weights are all zero a bias of 2**31; the overlay runs it as the
    constant it is, so the 4-bit digits MLP fits 24-bit accumulators and stays bit-exact."""
    from lowbit.sw.data.digits import digits_split, train_mlp
    from lowbit.sw.quant.posttrain import quantize_net
    xtr, ytr, xte, _ = digits_split()
    model = quantize_net(train_mlp(xtr, ytr), xtr, weight_bits=4, act_bits=4)     # the demo's model
    first = model.compute_layers()[0]
    assert np.abs(first.bias).max() >= 1 << 30 and not np.any(first.matrix()[:, np.argmax(np.abs(first.bias))])
    xs = model.quantize_input(xte[:2]).reshape(2, -1)
    got, prog, _ = simulate(model, 8, 4, xs)
    assert prog.config.acc_bits <= 24
    assert np.array_equal(got, run(model, xs.reshape(2, *model.input_shape)).reshape(2, -1))


def test_padding_beyond_the_address_range_is_refused():
    """The window registers span two banks of words: a padded image larger than that is refused by name
    (config_for sizes the banks for it; an overlay built for smaller images is what refuses)."""
    q = QuantSpec(4, False, 0, (1.0,))
    rng = np.random.default_rng(1)
    model = random_cnn(rng, (2, 2, 1), [("conv", 2, 5, 1, 4)], q, 2)       # 10x10 padded words of a 4-word image
    assert config_for(model, 4, 4).act_depth == 50
    compile_program(model, config_for(model, 4, 4))
    cfg = OverlayConfig(**{**config_for(model, 4, 4).__dict__, "act_depth": 36})      # the 6x6 output's words
    with pytest.raises(LowbitError, match=r"layer 0 \(conv2d 25x2\): its padded input spans 100 activation words"):
        compile_program(model, cfg)


@pytest.mark.parametrize("loadable", [False, True])
def test_the_memories_the_planner_counts_as_block_ram_are_block_ram(loadable):
    """The planner counts the activation, weight and parameter memories (and a loadable program) as block
    RAMs; Yosys put a 32x1 array's shallow activation memory (4 words of 128 bits) into flip-flops, 1200
    logic cells the estimate did not have. Only a fixed program stays in logic (folded per field)."""
    import re
    from amaranth.back import rtlil
    model = mlp([64, 32, 10], 4)
    cfg = config_for(model, 32, 1, loadable=loadable)
    prog = compile_program(model, cfg)
    text = rtlil.convert(OverlayEngine(cfg, prog.descriptors, prog.weights, prog.params))
    styles = dict((name, style) for style, name in
                  re.findall(r'attribute \\ram_style "(\w+)"\s+memory width \d+ size \d+ \\(\w+)', text))
    assert styles == {"act": "block", "inm": "block", "wmem": "block", "pmem": "block",
                      "prog": "block" if loadable else "logic"}


def test_the_overlay_hash_of_a_loadable_overlay_is_what_boards_built_before_patches_report():
    """A board answers its overlay's hash and `lowbit load` refuses a board whose hash differs from its build.
    The fields added with patches and the wide back end, never set in a loadable overlay, stay out of it:
    these are the hashes the code before them (e392d95) computes for the same configurations."""
    from lowbit.hw.accel import overlay_hash
    assert overlay_hash(OverlayConfig()) == 0xF22AC304
    assert overlay_hash(OverlayConfig(loadable=True, weight_store="spram", weight_depth=16384)) == 0xA17C9303
    rng = np.random.default_rng(6)
    cfg = config_for(first_conv_model(rng, (6, 5, 1), 4, 3, "thresholds"), 9, 4)
    assert cfg.wide and overlay_hash(cfg) != overlay_hash(OverlayConfig(**{**cfg.__dict__, "wide": False}))
