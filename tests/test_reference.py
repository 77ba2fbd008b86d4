"""The integer reference (``intref.run``) against an independent, loop-by-loop oracle.

The oracle below is deliberately written from the *documented* contract (docs/arithmetic.md) with plain
Python integers and ``fractions.Fraction`` — no ``lowbit.sw.ir.arith`` call — so a bug in the vectorised
reference (zero-point handling, padding value, im2col order, per-channel broadcast, threshold counting,
max-pool windows, ReLU clamp) shows up as a mismatch. Models are random but seeded: every run checks the
same cases. Each model is also saved and loaded as ``.lbm`` and must give identical outputs.
"""

from fractions import Fraction

import numpy as np
import pytest

from lowbit.sw.ir import arith
from lowbit.sw.ir.intref import run
from lowbit.sw.ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant, Thresholds

N_MODELS = 40


# -- the oracle ---------------------------------------------------------------------------------

def _requant_one(acc, bias, mult, shift, zp, lo, hi, relu):
    r = Fraction((acc + bias) * mult, 2 ** shift) + Fraction(1, 2)   # round half up
    y = zp + r.__floor__()
    return min(max(y, max(lo, zp) if relu else lo), hi)


def _activation(layer, acc, n):
    """Output code of channel ``n`` for accumulator ``acc`` (without bias)."""
    rq, b = layer.requant, int(layer.bias[n])
    if rq is None:
        return acc + b
    if isinstance(rq, Requant):
        pick = lambda a: int(a[n] if len(a) > 1 else a[0])  # noqa: E731 — per channel or per tensor
        return _requant_one(acc, b, pick(rq.mult), pick(rq.shift), rq.zero_point, rq.lo, rq.hi, rq.relu)
    row = rq.thresholds[n if rq.thresholds.shape[0] > 1 else 0]
    return rq.out_lo + rq.out_step * sum(1 for t in row if acc + b >= int(t))


def _oracle(model, sample):
    """One sample (nested lists of ints, HWC or flat) through the model, loop by loop; returns every
    layer's output as a flat list of ints."""
    x = np.asarray(sample, dtype=object)
    zp = model.input_q.zero_point
    outs = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            flat = [int(v) for v in x.ravel()]
            x = np.array([_activation(layer, sum((flat[k] - zp) * int(layer.weight[k, n])
                                                  for k in range(layer.k)), n)
                          for n in range(layer.n)], dtype=object)
        elif isinstance(layer, Conv2d):
            kh, kw, cin, cout = layer.weight.shape
            (sh, sw), (ph, pw) = layer.stride, layer.padding
            h, w = x.shape[0], x.shape[1]
            oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            out = np.empty((oh, ow, cout), dtype=object)
            for oy in range(oh):
                for ox in range(ow):
                    for n in range(cout):
                        acc = 0
                        for ky in range(kh):
                            for kx in range(kw):
                                iy, ix = oy * sh + ky - ph, ox * sw + kx - pw
                                for c in range(cin):
                                    # Padding holds the input zero point, i.e. contributes exactly 0.
                                    v = int(x[iy, ix, c]) if 0 <= iy < h and 0 <= ix < w else zp
                                    acc += (v - zp) * int(layer.weight[ky, kx, c, n])
                        out[oy, ox, n] = _activation(layer, acc, n)
            x = out
        elif isinstance(layer, MaxPool2d):
            (kh, kw), (sh, sw) = layer.kernel, layer.stride or layer.kernel
            oh, ow = (x.shape[0] - kh) // sh + 1, (x.shape[1] - kw) // sw + 1
            x = np.array([[[max(int(x[oy * sh + ky, ox * sw + kx, c]) for ky in range(kh) for kx in range(kw))
                            for c in range(x.shape[2])] for ox in range(ow)] for oy in range(oh)], dtype=object)
        elif isinstance(layer, Flatten):
            x = x.ravel()
        if isinstance(layer, (Dense, Conv2d)) and layer.out_q is not None:
            zp = layer.out_q.zero_point
        outs.append([int(v) for v in np.asarray(x).ravel()])
    return outs


# -- random models --------------------------------------------------------------------------------

# Requantization factors and thresholds are scaled to the typical accumulator size, so outputs spread
# over the whole output range instead of saturating (a saturated output hides most reference bugs).

def _rand_requant(rng, n, out_q, acc_size):
    lo, hi = out_q.range
    size = n if rng.random() < 0.5 else 1          # per channel or per tensor
    real = (hi - lo + 1) / (2 * acc_size) * rng.uniform(0.5, 2.0, size)
    mult, shift = arith.quantize_multiplier(real)
    return Requant(mult, shift, out_q.zero_point, lo, hi, relu=bool(rng.random() < 0.5))


def _rand_thresholds(rng, n, bits, acc_size):
    steps = (1 << bits) - 1
    rows = n if rng.random() < 0.5 else 1
    t = np.sort(rng.integers(-acc_size, acc_size + 1, (rows, steps)), axis=1)
    return Thresholds(t, out_lo=0, out_step=1)


def _rand_compute(rng, make, n, in_q, k, last):
    wbits = int(rng.integers(2, 9))
    w_q = QuantSpec(wbits, True, 0, (0.1,))
    lo, hi = w_q.range
    weight = rng.integers(lo, hi + 1, make)
    in_lo, in_hi = in_q.range
    acc_size = max(2, int(np.sqrt(k) * max(hi, 1) * (in_hi - in_lo) / 4))
    bias = rng.integers(-acc_size // 2, acc_size // 2 + 1, n)
    if last:
        return weight, bias, w_q, None, None
    obits = int(rng.integers(1, 9)) if rng.random() < 0.7 else int(rng.integers(1, 4))
    if rng.random() < 0.3:
        out_q = QuantSpec(obits, False, 0, (0.1,))
        return weight, bias, w_q, out_q, _rand_thresholds(rng, n, obits, acc_size)
    signed = bool(rng.random() < 0.5) and obits > 1
    olo, ohi = arith.int_range(obits, signed)
    out_q = QuantSpec(obits, signed, int(rng.integers(olo, ohi + 1)), (0.1,))
    return weight, bias, w_q, out_q, _rand_requant(rng, n, out_q, acc_size)


def random_model(seed):
    rng = np.random.default_rng(seed)
    h, w, cin = int(rng.integers(4, 8)), int(rng.integers(4, 8)), int(rng.integers(1, 4))
    ibits = int(rng.integers(2, 9))
    isigned = bool(rng.random() < 0.3)
    ilo, ihi = arith.int_range(ibits, isigned)
    in_q = QuantSpec(ibits, isigned, int(rng.integers(ilo, ihi + 1)), (0.05,))
    layers, q = [], in_q
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    cout = int(rng.integers(1, 6))
    conv = Conv2d(*_rand_compute(rng, (kh, kw, cin, cout), cout, q, kh * kw * cin, last=False),
                  stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                  padding=(int(rng.integers(0, 2)), int(rng.integers(0, 2))))
    layers.append(conv)
    shape = conv.out_shape((h, w, cin))
    if shape[0] >= 2 and shape[1] >= 2 and rng.random() < 0.6:
        pool = MaxPool2d((2, 2), None if rng.random() < 0.5 else (1, 1))
        layers.append(pool)
        shape = pool.out_shape(shape)
    layers.append(Flatten())
    k = int(np.prod(shape))
    n_hidden = int(rng.integers(1, 9))
    layers.append(Dense(*_rand_compute(rng, (k, n_hidden), n_hidden, conv.out_q, k, last=False)))
    layers.append(Dense(*_rand_compute(rng, (n_hidden, 3), 3, layers[-1].out_q, n_hidden, last=True)))
    model = Model((h, w, cin), in_q, layers, f"random-{seed}").validate()
    codes = rng.integers(ilo, ihi + 1, (3, h, w, cin))
    return model, codes


@pytest.mark.parametrize("seed", range(N_MODELS))
def test_reference_matches_loop_oracle(seed, tmp_path):
    model, codes = random_model(seed)
    got = run(model, codes)
    trace = run(model, codes, intermediates=True)
    for b in range(len(codes)):
        expected = _oracle(model, codes[b].tolist())
        for i, (layer, y, _) in enumerate(trace):   # every layer, not only the (often saturated) logits
            assert y[b].ravel().tolist() == expected[i], f"sample {b}, layer {i} ({layer.kind})"
    # The same model through the file format gives the same integers.
    model.save(tmp_path / "m.lbm")
    assert np.array_equal(run(Model.load(tmp_path / "m.lbm"), codes), got)


def test_intermediates_chain_and_accumulators_are_raw():
    model, codes = random_model(1234)
    trace = run(model, codes, intermediates=True)
    assert len(trace) == len(model.layers)
    assert np.array_equal(trace[-1][1], run(model, codes))
    for (layer, y, acc) in trace:
        if isinstance(layer, (Dense, Conv2d)):
            # Output codes are the requantizer applied to the raw accumulators (without bias).
            expected = acc + layer.bias if layer.requant is None else layer.requant.apply(acc, layer.bias)
            assert np.array_equal(y, expected)
            if layer.out_q is not None:
                lo, hi = layer.out_q.range
                assert y.min() >= lo and y.max() <= hi
        else:
            assert acc is None


def test_binary_network_matches_oracle():
    """±1 inputs and weights, sign thresholds, integer logits: XNOR-popcount semantics."""
    rng = np.random.default_rng(7)
    b = QuantSpec(1, True, binary=True)
    w1 = rng.choice([-1, 1], (16, 12))
    w2 = rng.choice([-1, 1], (12, 4))
    hidden = Dense(w1, rng.integers(-3, 4, 12), b, b, Thresholds(np.zeros((12, 1), np.int64), -1, 2))
    logits = Dense(w2, rng.integers(-3, 4, 4), b, None, None)
    model = Model((16,), b, [hidden, logits]).validate()
    codes = rng.choice([-1, 1], (20, 16))
    got = run(model, codes)
    for i in range(len(codes)):
        assert got[i].tolist() == _oracle(model, codes[i].tolist())[-1]
    # Hidden outputs are exactly ±1, never 0.
    assert set(np.unique(run(model, codes, intermediates=True)[0][1]).tolist()) <= {-1, 1}


def test_input_codes_outside_the_input_range_are_refused():
    model, codes = random_model(3)
    lo, hi = model.input_q.range
    with pytest.raises(ValueError, match="input codes"):
        run(model, np.full_like(codes, hi + 1))
