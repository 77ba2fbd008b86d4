"""The arithmetic contract checked against exact rational arithmetic and naive loops."""

import doctest
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lowbit.sw.ir import arith
from lowbit.sw.ir.arith import (conv2d_acc, dot_acc, fold_zero_point, im2col, int_range, maxpool2d,
                             multithreshold, quantize_multiplier, requantize, round_shift)


def test_doctests():
    assert doctest.testmod(arith).failed == 0


@given(st.integers(-2**40, 2**40), st.integers(0, 47))
def test_round_shift_is_round_half_up(v, s):
    exact = Fraction(v, 2**s)
    expected = int((exact + Fraction(1, 2)).__floor__())
    assert int(round_shift(v, s)) == expected


@given(st.lists(st.integers(-2**24, 2**24), min_size=1, max_size=8), st.integers(-2**31, 2**31 - 1),
       st.integers(1, 2**16 - 1), st.integers(0, 47), st.integers(1, 8), st.booleans(), st.booleans())
def test_requantize_matches_the_written_formula(acc, bias, mult, shift, bits, signed, relu):
    lo, hi = int_range(bits, signed)
    zp = lo  # extreme zero point
    got = requantize(np.array(acc), bias, mult, shift, zp, lo, hi, relu)
    for a, y in zip(acc, got):
        r = int((Fraction((a + bias) * mult, 2**shift) + Fraction(1, 2)).__floor__())
        expected = min(max(zp + r, max(lo, zp) if relu else lo), hi)
        assert int(y) == expected


def test_requantize_per_channel_broadcasts_over_last_axis():
    acc = np.array([[10, 10], [-10, -10]])
    y = requantize(acc, [0, 1], [1 << 15, 1 << 15], [16, 15], 0, -8, 7)
    # channel 0: 10/2 = 5; channel 1: 11 * 2**15 / 2**15 = 11 -> clamp 7; negatives: -5, -9 -> -8
    assert y.tolist() == [[5, 7], [-5, -8]]


@given(st.floats(1e-9, 65535.0, allow_nan=False))
def test_quantize_multiplier_is_accurate(real):
    m, s = quantize_multiplier(real)
    m, s = int(m[0]), int(s[0])
    assert 0 < m < 2**16 and 0 <= s <= 47
    if s < 47:
        assert 2**15 <= m  # normalised: full 16-bit precision
        assert abs(m / 2**s - real) <= real * 2**-15
    else:
        assert abs(m / 2**s - real) <= 2**-48


def test_quantize_multiplier_rejects_what_it_cannot_represent():
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(70000.0)
    with pytest.raises(ValueError, match="finite and non-negative"):
        quantize_multiplier(float("nan"))
    assert quantize_multiplier(0.0) == (np.array([0]), np.array([0]))


def test_multithreshold_counts_thresholds_reached():
    acc = np.array([[-5, 0, 3, 100]]).T  # (4, 1): 4 samples, 1 channel
    thr = np.array([[0, 3, 50]])
    assert multithreshold(acc, thr, out_lo=0).ravel().tolist() == [0, 1, 2, 3]
    bipolar = multithreshold(acc, np.array([[1]]), out_lo=-1, out_step=2)
    assert bipolar.ravel().tolist() == [-1, -1, 1, 1]


def test_fold_zero_point_equals_subtracting_it():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (5, 7))
    w = rng.integers(-8, 8, (7, 3))
    b = rng.integers(-1000, 1000, 3)
    zx = 9
    assert np.array_equal(dot_acc(x, w) + fold_zero_point(b, w, zx), dot_acc(x, w, zx) + b)


def test_binary_dot_is_xnor_popcount():
    rng = np.random.default_rng(1)
    x = rng.choice([-1, 1], (4, 13))
    w = rng.choice([-1, 1], (13, 5))
    xb, wb = arith.binary_encode(x), arith.binary_encode(w)
    pop = np.array([[np.sum(1 - (xb[i] ^ wb[:, n])) for n in range(5)] for i in range(4)])
    assert np.array_equal(dot_acc(x, w), 2 * pop - 13)


def _naive_conv(x, w, stride, padding, zx):
    b, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (wd + 2 * padding[1] - kw) // stride[1] + 1
    out = np.zeros((b, oh, ow, co), dtype=np.int64)
    for n in range(b):
        for oy in range(oh):
            for ox in range(ow):
                for ky in range(kh):
                    for kx in range(kw):
                        iy, ix = oy * stride[0] - padding[0] + ky, ox * stride[1] - padding[1] + kx
                        if 0 <= iy < h and 0 <= ix < wd:
                            out[n, oy, ox] += (x[n, iy, ix] - zx) @ w[ky, kx]
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(3, 7), st.integers(3, 7), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from([(1, 1), (3, 3), (2, 3)]), st.sampled_from([(1, 1), (2, 2), (1, 2)]),
       st.sampled_from([(0, 0), (1, 1), (2, 1)]), st.integers(0, 15), st.integers(0, 2**32 - 1))
def test_conv2d_acc_matches_naive_loops(b, h, wd, cin, cout, kernel, stride, padding, zx, seed):
    if h + 2 * padding[0] < kernel[0] or wd + 2 * padding[1] < kernel[1]:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 16, (b, h, wd, cin))
    w = rng.integers(-8, 8, (*kernel, cin, cout))
    assert np.array_equal(conv2d_acc(x, w, stride, padding, zx), _naive_conv(x, w, stride, padding, zx))


def test_im2col_pads_with_zero_point_and_orders_ky_kx_ci():
    x = np.arange(2 * 2 * 2).reshape(1, 2, 2, 2)
    rows = im2col(x, (2, 2), (1, 1), (1, 1), pad_value=-7)
    assert rows.shape == (9, 8)
    # first output pixel: window at (-1..0, -1..0): only (0,0) is real, in the last tap (ky=1, kx=1)
    assert rows[0].tolist() == [-7, -7, -7, -7, -7, -7, 0, 1]


def test_maxpool2d():
    x = np.array([[1, 5, 2, 0], [3, -4, 9, 9], [0, 0, 1, 2], [7, 1, 3, 4]]).reshape(1, 4, 4, 1)
    assert maxpool2d(x, (2, 2))[0, :, :, 0].tolist() == [[5, 9], [7, 4]]


def test_conv_shape_errors_are_clear():
    with pytest.raises(ValueError, match="does not fit a 2x2 input"):
        conv2d_acc(np.zeros((1, 2, 2, 1), int), np.zeros((3, 3, 1, 1), int))
    with pytest.raises(ValueError, match="input has 2 channels but the weights expect 1"):
        conv2d_acc(np.zeros((1, 4, 4, 2), int), np.zeros((3, 3, 1, 1), int))


@given(st.floats(1e-6, 100.0, allow_nan=False), st.integers(8, 24))
def test_quantize_multiplier_precision_is_selectable(real, bits):  # factors below 2**bits
    m, s = quantize_multiplier(real, bits=bits)
    assert 2 ** (bits - 1) <= int(m[0]) < 2 ** bits
    assert abs(int(m[0]) / 2 ** int(s[0]) - real) <= real * 2.0 ** -bits


def test_quantize_multiplier_rejects_unsupported_precision():
    with pytest.raises(ValueError, match="multiplier precision must be 2 to 24 bits"):
        quantize_multiplier(0.5, bits=25)


def test_common_shift_keeps_the_largest_factor_exact_and_the_rest_rounded():
    real = np.array([0.5, 0.01, 1e-9, 0.25])
    m, s = quantize_multiplier(real, common_shift=True)
    assert len(set(s.tolist())) == 1
    assert (m[0], s[0]) == tuple(int(v[0]) for v in quantize_multiplier(0.5))
    assert np.all(np.abs(m / 2.0 ** s - real) <= 2.0 ** -(s[0] + 1))
