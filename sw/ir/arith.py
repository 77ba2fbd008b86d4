"""Integer arithmetic primitives: the contract every piece of lowbit hardware computes bit for bit.

``docs/arithmetic.md`` explains each step; this module is its executable form. Everything here works on
NumPy integer arrays (``int64``) and never touches floats, except :func:`quantize_multiplier`, which turns
a real rescaling factor into the integer (multiplier, shift) pair once, at model-conversion time.

The hardware (``lowbit.hw``), the reference model (``lowbit.sw.reference``) and the ROM generators all
call these functions; none of them restates the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "MULT_BITS", "DEFAULT_MULT_BITS", "MAX_SHIFT", "BIAS_BITS",
    "int_range", "check_int_range", "signed_bits_for",
    "OPERAND_MODES", "operand_mode", "dot_acc", "fold_zero_point", "binary_encode", "binary_decode",
    "round_shift", "requantize", "multithreshold", "quantize_multiplier",
    "im2col", "conv2d_out_shape", "conv2d_acc", "maxpool2d",
]

#: Widest unsigned fixed-point requantization multiplier ``M`` (``0 <= M < 2**MULT_BITS``). Hardware
#: sizes its multiplier from the largest ``M`` a layer actually uses.
MULT_BITS = 24
#: Precision :func:`quantize_multiplier` uses unless asked for more (post-training quantization).
DEFAULT_MULT_BITS = 16
#: Largest right shift ``s`` of the requantization (``0 <= s <= MAX_SHIFT``).
MAX_SHIFT = 47
#: Bias is a signed integer of this many bits (int32, as in TFLite and ONNX QLinear ops).
BIAS_BITS = 32


def int_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Inclusive integer range of a ``bits``-wide value.

    ``narrow`` drops the most negative code of a signed range (``[-127, 127]`` for 8 bits), as QONNX's
    ``narrow`` attribute does.

    >>> int_range(4, signed=True), int_range(4, signed=False), int_range(8, True, narrow=True)
    ((-8, 7), (0, 15), (-127, 127))
    """
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 32:
        raise ValueError(f"bit-width must be an integer from 1 to 32, not {bits!r}")
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if narrow:
            lo += 1
        return lo, hi
    return 0, (1 << bits) - 1


def check_int_range(name: str, values, lo: int, hi: int) -> np.ndarray:
    """Return ``values`` as ``int64`` after checking every element lies in ``[lo, hi]``.

    Raises
    ------
    ValueError
        naming ``name``, the offending value and the allowed range.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinity; integers in [{lo}, {hi}] are required")
        if arr.size and not np.all(np.asarray(arr) == np.round(arr)):
            raise ValueError(f"{name} must hold integers, got non-integer values of dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size:
        amin, amax = int(arr.min()), int(arr.max())
        if amin < lo or amax > hi:
            bad = amin if amin < lo else amax
            raise ValueError(f"{name} has value {bad} outside the allowed range [{lo}, {hi}]")
    return arr


def signed_bits_for(lo: int, hi: int) -> int:
    """Smallest two's-complement width that holds every integer in ``[lo, hi]``.

    >>> signed_bits_for(-8, 7), signed_bits_for(0, 8), signed_bits_for(-1, 0)
    (4, 5, 1)
    """
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


# --- dot products -------------------------------------------------------------------------------

#: The operand kinds of a Dense/Conv2d layer (``docs/arithmetic.md`` §2), named by :func:`operand_mode`:
#: integer codes times integer weights; integer codes times ±1 weights (a conditional negate per
#: product); ±1 activations times ±1 weights (XNOR-popcount).
OPERAND_MODES = ("integer", "binary_weights", "binary")


def operand_mode(input_binary: bool, weight_binary: bool) -> str:
    """Which of :data:`OPERAND_MODES` a layer with these operands computes in.

    Binary (±1) inputs with integer weights have no mode: the contract defines no such product.

    >>> operand_mode(False, False), operand_mode(False, True), operand_mode(True, True)
    ('integer', 'binary_weights', 'binary')

    Raises
    ------
    ValueError
        for binary inputs with integer weights.
    """
    if input_binary and not weight_binary:
        raise ValueError("binary (±1) inputs need binary weights")
    if input_binary:
        return "binary"
    return "binary_weights" if weight_binary else "integer"


def dot_acc(x, w, x_zero_point=0) -> np.ndarray:
    """Exact integer dot products ``acc[b, n] = sum_k (x[b, k] - zx) * w[k, n]``.

    ``x`` is ``(B, K)``, ``w`` is ``(K, N)``; ``x_zero_point`` is a scalar. Binary (±1) weights and
    activations pass their ±1 values as they are: the XNOR-popcount hardware (both binary) and the
    conditional-negate hardware (binary weights, integer codes) compute the same sum.
    """
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    return (x - np.int64(x_zero_point)) @ w


def fold_zero_point(bias, w, x_zero_point) -> np.ndarray:
    """Bias with the input zero point folded in: ``bias[n] - zx * sum_k w[k, n]``.

    Hardware multiplies the raw codes (``x @ w``) and adds this folded bias, which equals
    ``(x - zx) @ w + bias`` exactly; the subtraction never widens the multiplier inputs.
    """
    w = np.asarray(w, dtype=np.int64)
    return np.asarray(bias, dtype=np.int64) - np.int64(x_zero_point) * w.sum(axis=0)


def binary_encode(values) -> np.ndarray:
    """±1 values to bits: ``+1 -> 1``, ``-1 -> 0`` (the XNOR-popcount encoding).

    >>> binary_encode([1, -1, -1, 1]).tolist()
    [1, 0, 0, 1]
    """
    values = np.asarray(values, dtype=np.int64)
    if values.size and not np.all(np.abs(values) == 1):
        raise ValueError("binary values must all be +1 or -1")
    return (values > 0).astype(np.int64)


def binary_decode(bits) -> np.ndarray:
    """Bits to ±1 values, the inverse of :func:`binary_encode`.

    >>> binary_decode([1, 0]).tolist()
    [1, -1]
    """
    return 2 * np.asarray(bits, dtype=np.int64) - 1


# --- requantization -----------------------------------------------------------------------------

def round_shift(value, shift) -> np.ndarray:
    """``value / 2**shift`` rounded half up (toward +infinity): ``(value + 2**(shift-1)) >> shift``.

    One adder and an arithmetic shift in hardware. ``shift`` may be a scalar or broadcast per channel;
    ``shift == 0`` returns ``value``.

    >>> round_shift([5, 6, -5, -6, 7], 1).tolist()   # 2.5 -> 3, -2.5 -> -2
    [3, 3, -2, -3, 4]
    """
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (value + half) >> shift


def requantize(acc, bias, mult, shift, zero_point, lo, hi, relu=False) -> np.ndarray:
    """Fixed-point requantization of accumulators to the next layer's integer codes.

    ``y = clamp(zero_point + round_shift((acc + bias) * mult, shift), lo', hi)`` where ``lo' = max(lo,
    zero_point)`` if ``relu`` else ``lo``. ``bias``, ``mult`` and ``shift`` broadcast over the last
    (channel) axis, so they may be per-tensor scalars or per-channel vectors. Every intermediate is exact
    (no saturation before the final clamp).
    """
    acc = np.asarray(acc, dtype=np.int64)
    total = (acc + np.asarray(bias, dtype=np.int64)) * np.asarray(mult, dtype=np.int64)
    y = np.int64(zero_point) + round_shift(total, shift)
    if relu:
        lo = max(lo, int(zero_point))
    return np.clip(y, lo, hi)


def multithreshold(acc, thresholds, out_lo, out_step=1) -> np.ndarray:
    """FINN-style multi-threshold activation: ``y = out_lo + out_step * #{i : acc >= T[n, i]}``.

    ``thresholds`` is ``(N, T)`` (per channel) or ``(1, T)`` (per tensor), ascending along ``T``; ``acc``
    is ``(..., N)``. ``out_step=2`` with ``out_lo=-1`` and one threshold gives a bipolar ±1 output.
    """
    acc = np.asarray(acc, dtype=np.int64)
    thr = np.asarray(thresholds, dtype=np.int64)
    if thr.ndim != 2:
        raise ValueError(f"thresholds must be 2-D (channels, steps), got shape {thr.shape}")
    counts = (acc[..., None] >= thr).sum(axis=-1)
    return np.int64(out_lo) + np.int64(out_step) * counts


def quantize_multiplier(real, bits: int = DEFAULT_MULT_BITS, common_shift: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``(mult, shift)`` with ``mult / 2**shift`` nearest to each positive ``real`` factor.

    ``mult`` is normalised into ``[2**(bits-1), 2**bits)`` for the largest precision (``bits`` up to
    :data:`MULT_BITS`), and ``shift`` is in ``[0, MAX_SHIFT]``. Factors too large (``>= 2**bits``)
    raise ``ValueError``; factors too small for full precision keep fewer bits; 0 gives ``(0, 0)``.

    ``common_shift=True`` gives every factor the shift of the largest one (which keeps full precision;
    the others get ``round(real * 2**shift)``), so hardware needs no per-channel variable shifter.
    """
    if not 2 <= bits <= MULT_BITS:
        raise ValueError(f"multiplier precision must be 2 to {MULT_BITS} bits, not {bits}")
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    mult = np.zeros(real.shape, dtype=np.int64)
    shift = np.zeros(real.shape, dtype=np.int64)
    for i, r in np.ndenumerate(real):
        if not math.isfinite(r) or r < 0:
            raise ValueError(f"requantization factor {r!r} must be finite and non-negative")
        if r == 0:
            continue
        mant, exp = math.frexp(r)  # r = mant * 2**exp, mant in [0.5, 1)
        s = bits - exp
        m = round(mant * (1 << bits))
        if m == 1 << bits:  # rounding carried out of the mantissa
            m >>= 1
            s -= 1
        if s < 0:
            raise ValueError(f"requantization factor {r:g} is too large (must be below 2**{bits})")
        if s > MAX_SHIFT:
            # Too small for full precision: use fewer mantissa bits rather than fail, down to zero.
            m = round(r * (1 << MAX_SHIFT))
            s = MAX_SHIFT
        mult[i], shift[i] = m, s
    if common_shift and np.any(real > 0):
        s = int(shift[real == real.max()][0])
        mult = np.array([math.floor(r * (1 << s) + 0.5) for r in real.ravel()], dtype=np.int64).reshape(real.shape)
        mult = np.minimum(mult, (1 << bits) - 1)
        shift = np.full(real.shape, s, dtype=np.int64)
    return mult, shift


# --- convolution and pooling (layout NHWC, weights (KH, KW, Cin, Cout)) --------------------------

def conv2d_out_shape(h, w, kernel, stride, padding) -> tuple[int, int]:
    """Output height and width of a convolution or pooling window."""
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} window with stride {sh}x{sw} and padding {ph}x{pw} does not fit "
                         f"a {h}x{w} input")
    return oh, ow


def im2col(x, kernel, stride, padding, pad_value=0) -> np.ndarray:
    """Unfold NHWC ``x`` into rows of ``(B*OH*OW, KH*KW*Cin)``, element order ``(ky, kx, ci)``.

    Output pixels are in row-major ``(b, oy, ox)`` order; padded positions hold ``pad_value`` (the input
    zero point, the code of real 0). This order matches weights reshaped from ``(KH, KW, Cin, Cout)`` to
    ``(KH*KW*Cin, Cout)``.
    """
    x = np.asarray(x, dtype=np.int64)
    b, h, w, c = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    oh, ow = conv2d_out_shape(h, w, kernel, stride, padding)
    xp = np.full((b, h + 2 * ph, w + 2 * pw, c), pad_value, dtype=np.int64)
    xp[:, ph:ph + h, pw:pw + w, :] = x
    cols = np.empty((b, oh, ow, kh, kw, c), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx, :] = xp[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :]
    return cols.reshape(b * oh * ow, kh * kw * c)


def conv2d_acc(x, w, stride=(1, 1), padding=(0, 0), x_zero_point=0) -> np.ndarray:
    """Exact integer convolution accumulators, NHWC in, ``(B, OH, OW, Cout)`` out.

    Equal to :func:`dot_acc` over :func:`im2col` rows with padding at the zero point, so padded taps
    contribute exactly 0.
    """
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    kh, kw, cin, cout = w.shape
    if x.shape[3] != cin:
        raise ValueError(f"input has {x.shape[3]} channels but the weights expect {cin}")
    oh, ow = conv2d_out_shape(x.shape[1], x.shape[2], (kh, kw), stride, padding)
    rows = im2col(x, (kh, kw), stride, padding, pad_value=x_zero_point)
    acc = dot_acc(rows, w.reshape(kh * kw * cin, cout), x_zero_point)
    return acc.reshape(x.shape[0], oh, ow, cout)


def maxpool2d(x, kernel, stride=None) -> np.ndarray:
    """Integer max pooling over NHWC ``x`` without padding (``stride`` defaults to ``kernel``)."""
    x = np.asarray(x, dtype=np.int64)
    kh, kw = kernel
    sh, sw = stride or kernel
    oh, ow = conv2d_out_shape(x.shape[1], x.shape[2], kernel, (sh, sw), (0, 0))
    out = np.full((x.shape[0], oh, ow, x.shape[3]), np.iinfo(np.int64).min, dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            out = np.maximum(out, x[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :])
    return out
