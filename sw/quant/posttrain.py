"""Quantizers, calibration and post-training quantization of a :class:`FloatNet` into a :class:`Model`.

Quantizers (:func:`quantize_tensor`): symmetric or asymmetric, per tensor or per channel (last axis),
1..8 bits, binary (sign, ±1) and ternary ({-1, 0, 1}). Clipping ranges are calibrated by ``minmax``,
``percentile`` (99.99th) or ``mse`` (a search over clip ratios from 0.005 to 1 of the maximum minimising
the quantization MSE).

:func:`quantize_net` is the PTQ pass: weights symmetric (per channel with ``per_channel``), activations
calibrated on data, ReLU fused into the requantization clamp, int32 biases, fixed-point multipliers
from :func:`lowbit.sw.ir.arith.quantize_multiplier`. Two optional error-compensation steps run layer by layer
on the calibration data, each layer seeing the *integer* outputs of the layers already quantized:
``adaround`` chooses each weight's rounding direction (:mod:`lowbit.sw.quant.adaround`), ``bias_correction``
folds the mean pre-activation error per output channel into the integer bias. :func:`equalize_net`
(cross-layer range equalisation) is a separate float-to-float pass to run before. A network with 1-bit weights and activations becomes
a binary (XNOR-popcount) network whose hidden activations are sign thresholds. The last compute layer
outputs exact integer logits (``acc + bias``) so argmax needs no requantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import arith
from ..errors import LowbitError
from ..ir.floatnet import FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU
from ..ir.intref import run_layer
from ..ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant, Thresholds

__all__ = ["CALIBRATIONS", "clip_range", "quantize_tensor", "quantize_net", "error_report", "LayerError",
           "check_calibration_range", "CALIB_MAX_ABS", "CALIB_MIN_SPAN", "equalize_net", "compare_reports"]

CALIBRATIONS = ("minmax", "percentile", "mse")

#: Calibration tensors (inputs and the activations they produce) must stay within this magnitude and
#: inputs must span at least CALIB_MIN_SPAN: beyond, the scales degenerate (1e300 gives an input scale
#: of 6.7e298, so every real input quantizes to 0) and float rounding swamps the codes.
CALIB_MAX_ABS = 1e12
CALIB_MIN_SPAN = 1e-9


def check_calibration_range(values, what: str, need_span: bool = False) -> None:
    """LowbitError naming ``what`` and its range if ``values`` cannot be quantized meaningfully: not
    finite, beyond ±:data:`CALIB_MAX_ABS`, or (``need_span``) narrower than :data:`CALIB_MIN_SPAN`."""
    with np.errstate(all="ignore"):
        lo, hi = float(np.min(values)), float(np.max(values))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise LowbitError(f"{what} reach {lo:.3g}..{hi:.3g} (not finite) on the calibration data",
                          "the weights or inputs overflow float64; rescale them")
    if max(-lo, hi) > CALIB_MAX_ABS:
        raise LowbitError(f"{what} range [{lo:.3g}, {hi:.3g}] is beyond ±{CALIB_MAX_ABS:g}: quantization would "
                          "be degenerate", "rescale the data (e.g. to [0, 1]) as the model was trained")
    if need_span and hi - lo < CALIB_MIN_SPAN:
        raise LowbitError(f"{what} range [{lo:.6g}, {hi:.6g}] is empty or almost: quantization needs a spread "
                          "of values", "pass a few hundred representative, varied inputs")


def quantize_tensor(x, bits: int, *, symmetric: bool = True, per_channel: bool = False,
                    clip=None, mode: str = "int"):
    """Quantize ``x``; returns ``(codes, scale, zero_point)``.

    ``mode`` is ``"int"`` (``bits``-wide codes), ``"binary"`` (±1, scale = mean |x|) or ``"ternary"``
    ({-1, 0, 1}, threshold 0.7 mean |x|). ``clip`` overrides the range: a scalar (symmetric) or
    ``(lo, hi)``; per channel it broadcasts over the last axis.
    """
    x = np.asarray(x, dtype=np.float64)
    axis = tuple(range(x.ndim - 1)) if per_channel else None
    if mode == "binary":
        scale = np.maximum(np.mean(np.abs(x), axis=axis), 1e-12)
        return np.where(x >= 0, 1, -1).astype(np.int64), scale, 0
    if mode == "ternary":
        delta = 0.7 * np.mean(np.abs(x), axis=axis)
        codes = np.where(x > delta, 1, np.where(x < -delta, -1, 0)).astype(np.int64)
        mask = codes != 0
        scale = np.maximum(np.sum(np.abs(x) * mask, axis=axis) / np.maximum(np.sum(mask, axis=axis), 1), 1e-12)
        return codes, scale, 0
    if not 1 <= bits <= 8:
        raise LowbitError(f"bit-width {bits} is not supported", "choose 1 to 8 bits")
    if symmetric:
        if bits < 2:
            raise LowbitError("symmetric 1-bit quantization has no levels", "use binary mode for 1 bit")
        amax = np.max(np.abs(x), axis=axis) if clip is None else np.asarray(clip, dtype=np.float64)
        qmax = (1 << (bits - 1)) - 1                     # narrow range: -qmax..qmax
        scale = np.maximum(amax, 1e-12) / qmax
        codes = np.clip(np.round(x / scale), -qmax, qmax).astype(np.int64)
        return codes, scale, 0
    lo_x, hi_x = (np.min(x, axis=axis), np.max(x, axis=axis)) if clip is None else clip
    lo_x, hi_x = np.minimum(lo_x, 0.0), np.maximum(hi_x, 0.0)  # real 0 must be representable
    qmax = (1 << bits) - 1
    scale = np.maximum(hi_x - lo_x, 1e-12) / qmax
    zp = np.clip(np.round(-lo_x / scale), 0, qmax).astype(np.int64)
    codes = np.clip(np.round(x / scale) + zp, 0, qmax).astype(np.int64)
    return codes, scale, zp


def clip_range(values, bits: int, method: str, symmetric: bool) -> float:
    """Upper clip of non-negative ``values`` (or of ``|values|`` when ``symmetric``) by ``method``."""
    if method not in CALIBRATIONS:
        raise LowbitError(f"unknown calibration {method!r}", f"choose one of {', '.join(CALIBRATIONS)}")
    v = np.abs(values).ravel() if symmetric else np.maximum(values, 0).ravel()
    top = float(v.max()) if v.size else 0.0
    if top == 0.0:
        return 1.0
    if method == "minmax":
        return top
    if method == "percentile":
        return max(float(np.percentile(v, 99.99)), 1e-12)
    levels = ((1 << (bits - 1)) - 1) if symmetric else ((1 << bits) - 1)
    sample = v if v.size <= 200_000 else np.random.default_rng(0).choice(v, 200_000, replace=False)
    def err(c):
        s = c / levels
        return np.mean((np.clip(np.round(sample / s), 0, levels) * s - sample) ** 2)

    # Clip ratios 0.2..1 in steps of 0.01, and below 0.2 a geometric grid down to 0.005 (one far outlier
    # can put the best clip at a few per cent of the maximum); a clip found there is refined locally.
    ratios = np.concatenate([np.geomspace(0.005, 0.2, 40, endpoint=False), np.linspace(0.2, 1.0, 81)])
    errors = [err(top * r) for r in ratios]
    best = int(np.argmin(errors))
    if ratios[best] < 0.2:
        fine = np.linspace(ratios[max(best - 1, 0)], ratios[best + 1], 41)
        fine_errors = [err(top * r) for r in fine]
        if min(fine_errors) < errors[best]:
            return float(top * fine[int(np.argmin(fine_errors))])
    return float(top * ratios[best])


def _weight_scale(w, bits, per_channel, method):
    """Symmetric weight clip per output channel (last axis) or per tensor."""
    flat = w.reshape(-1, w.shape[-1])
    if per_channel:
        return np.array([clip_range(flat[:, n], bits, method, True) if method == "mse"
                         else np.max(np.abs(flat[:, n])) for n in range(flat.shape[1])])
    c = clip_range(flat, bits, method, True) if method == "mse" else np.max(np.abs(flat))
    return np.full(flat.shape[1], c)


def quantize_net(net: FloatNet, calib_x, *, weight_bits: int = 4, act_bits: int = 4, per_channel: bool = True,
                 calib: str = "mse", input_bits: int | None = None, bias_correction: bool = False,
                 adaround: bool = False, seed: int = 0) -> Model:
    """Post-training quantization of ``net`` with calibration inputs ``calib_x`` (float, N x input_shape).

    ``bias_correction`` and ``adaround`` (seeded by ``seed``) compensate the quantization error of each
    layer on ``calib_x``; both need integer (2 to 8-bit) weights: a binary network has no rounding to choose
    and thresholds instead of biases, so it is refused with a hint to train it (``lowbit train``).
    """
    for name, bits in (("weight", weight_bits), ("activation", act_bits)):
        if not isinstance(bits, int) or not 1 <= bits <= 8:
            raise LowbitError(f"{name} bit-width {bits!r} is not supported", "choose 1 to 8 bits")
    if calib not in CALIBRATIONS:
        raise LowbitError(f"unknown calibration {calib!r}", f"choose one of {', '.join(CALIBRATIONS)}")
    binary = weight_bits == 1 or act_bits == 1
    if binary and not (weight_bits == 1 and act_bits == 1):
        raise LowbitError(f"{weight_bits}-bit weights with {act_bits}-bit activations are not supported",
                          "1-bit means a binary (±1) network: use --weight-bits 1 --act-bits 1")
    if binary and (bias_correction or adaround):
        raise LowbitError("bias correction and AdaRound apply to integer weights, not a binary (1-bit) network",
                          "train the binary network instead: lowbit train MODEL --weight-bits 1 --act-bits 1")
    compensate = bias_correction or adaround
    calib_x = np.asarray(calib_x, dtype=np.float64)
    if calib_x.ndim < 2 or calib_x.shape[0] == 0:
        raise LowbitError("calibration data is empty", "pass a few hundred representative inputs")
    if calib_x.shape[1:] != tuple(net.input_shape):
        if int(np.prod(calib_x.shape[1:])) != int(np.prod(net.input_shape)):
            raise LowbitError(f"calibration data has shape {calib_x.shape[1:]} per sample, the model expects "
                              f"{tuple(net.input_shape)}")
        calib_x = calib_x.reshape((calib_x.shape[0], *net.input_shape))
    if not np.all(np.isfinite(calib_x)):
        raise LowbitError("calibration data contains NaN or infinity")
    check_calibration_range(calib_x, "calibration inputs x", need_span=True)

    # Input quantization.
    in_bits = 1 if binary else (input_bits or act_bits)
    if binary:
        centre = float(np.median(calib_x))
        in_q = QuantSpec(1, True, 0, (1.0,), binary=True)
        meta = {"input_offset": centre}
    else:
        unsigned = float(calib_x.min()) >= 0
        if unsigned:
            c = clip_range(calib_x, in_bits, calib if calib != "mse" else "minmax", False)
            in_q = QuantSpec(in_bits, False, 0, (c / ((1 << in_bits) - 1),))
        else:
            _, s, zp = quantize_tensor(calib_x, in_bits, symmetric=False)
            in_q = QuantSpec(in_bits, False, int(zp), (float(s),))
        meta = {}

    layers_f = net.layers
    compute_idx = [i for i, l in enumerate(layers_f) if isinstance(l, (FDense, FConv2d))]
    if not compute_idx:
        raise LowbitError("the model has no Dense or Conv2d layer", "lowbit needs at least one")
    last_compute = compute_idx[-1]
    with np.errstate(over="ignore", invalid="ignore"):    # overflow is reported by the range check
        float_outs = net.forward(calib_x, intermediates=True)

    out_layers = []
    cur_q = in_q
    # The integer codes the calibration inputs reach through the layers built so far (compensation only).
    cur_codes = in_q.quantize(calib_x - meta.get("input_offset", 0.0)) if compensate else None
    i = 0
    while i < len(layers_f):
        layer = layers_f[i]
        if isinstance(layer, (FDense, FConv2d)):
            fuse_relu = i + 1 < len(layers_f) and isinstance(layers_f[i + 1], FReLU)
            w = layer.weight
            n = w.shape[-1]
            s_in = cur_q.scale[0]
            if binary:
                codes, s_w, _ = quantize_tensor(w, 1, per_channel=True, mode="binary")
                s_w = np.broadcast_to(s_w, (n,))
                w_q = QuantSpec(1, True, 0, tuple(s_w), binary=True)
            else:
                # The final layer outputs integer logits, compared by argmax: they must share one unit,
                # so its weights get one scale even when the others are per channel.
                final = i == last_compute
                clip = _weight_scale(w, weight_bits, per_channel and not final, calib)
                codes, s_w, _ = quantize_tensor(w, weight_bits, per_channel=True, clip=clip)
                s_w = np.asarray(s_w)
                w_q = QuantSpec(weight_bits, True, 0, tuple(s_w))
            acc_scale = s_in * s_w
            bias = np.clip(np.round(layer.bias / acc_scale), -(1 << 31), (1 << 31) - 1).astype(np.int64)
            if compensate:
                x_float = calib_x if i == 0 else float_outs[i - 1]
                rows_q, rows_f = _layer_rows(layer, cur_codes, cur_q.zero_point, x_float)
                if adaround:
                    from .adaround import adaround_codes
                    codes = adaround_codes(w.reshape(-1, n), s_w, weight_bits, rows_q * s_in, rows_f,
                                           layer.bias, relu=fuse_relu, seed=seed + i).reshape(w.shape)
                if bias_correction:
                    # Mean error of the real pre-activation per output channel, in accumulator units.
                    acc = rows_q @ codes.reshape(-1, n)
                    err = (acc + bias) * acc_scale - (rows_f @ w.reshape(-1, n) + layer.bias)
                    bias = np.clip(bias - np.round(err.mean(axis=0) / acc_scale), -(1 << 31),
                                   (1 << 31) - 1).astype(np.int64)
            y_float = float_outs[i + 1] if fuse_relu else float_outs[i]
            kw = {}
            if i == last_compute:
                rq, out_q = None, None
            elif binary:
                # Sign of the real pre-activation: acc + bias >= 0 <=> +1 (ReLU before a sign is dropped).
                rq = Thresholds(np.zeros((n, 1), dtype=np.int64), out_lo=-1, out_step=2)
                out_q = QuantSpec(1, True, 0, (1.0,), binary=True)
            else:
                check_calibration_range(y_float, f"layer {i} ({layer.kind}) outputs")
                if fuse_relu:
                    c = clip_range(y_float, act_bits, calib, False)
                    out_q = QuantSpec(act_bits, False, 0, (c / ((1 << act_bits) - 1),))
                else:
                    _, s, zp = quantize_tensor(y_float, act_bits, symmetric=False)
                    out_q = QuantSpec(act_bits, False, int(zp), (float(s),))
                # One shift per layer: no variable shifter on the hardware's critical path.
                mult, shift = arith.quantize_multiplier(acc_scale / out_q.scale[0], common_shift=True)
                lo, hi = out_q.range
                rq = Requant(mult, shift, out_q.zero_point, lo, hi, relu=fuse_relu)
            if isinstance(layer, FDense):
                out_layers.append(Dense(codes, bias, w_q, out_q, rq))
            else:
                out_layers.append(Conv2d(codes, bias, w_q, out_q, rq, tuple(layer.stride), tuple(layer.padding)))
            if compensate:
                cur_codes = run_layer(out_layers[-1], cur_codes, cur_q.zero_point)[0]
            cur_q = out_q if out_q is not None else cur_q
            i += 2 if fuse_relu else 1
            continue
        if isinstance(layer, FReLU):
            raise LowbitError(f"layer {i}: ReLU must directly follow a Dense or Conv2d layer",
                              "lowbit fuses ReLU into the requantization of the layer before it")
        if isinstance(layer, FMaxPool2d):
            out_layers.append(MaxPool2d(tuple(layer.kernel), tuple(layer.stride) if layer.stride else None))
        elif isinstance(layer, FFlatten):
            out_layers.append(Flatten())
        else:
            raise LowbitError(f"layer {i}: {layer.kind} cannot be quantized")
        if compensate:
            cur_codes = run_layer(out_layers[-1], cur_codes, cur_q.zero_point)[0]
        i += 1
    # Layers after the last compute layer (e.g. a trailing ReLU on logits) have no integer meaning.
    model = Model(tuple(net.input_shape), in_q, out_layers, net.name,
                  {**meta, "weight_bits": weight_bits, "act_bits": act_bits, "per_channel": per_channel,
                   "calib": calib, **({"bias_correction": True} if bias_correction else {}),
                   **({"adaround": True, "seed": seed} if adaround else {})})
    return model.validate()


def _layer_rows(layer, codes, zero_point, x_float):
    """The rows a Dense or Conv2d layer multiplies by its (K, N) weight matrix: ``(codes - zero point)``
    of the integer input (int64) and the float input, im2col-unrolled for a convolution."""
    if isinstance(layer, FDense):
        return codes.reshape(len(codes), -1) - zero_point, np.asarray(x_float).reshape(len(x_float), -1)
    kernel = layer.weight.shape[:2]
    rows_q = arith.im2col(codes, kernel, layer.stride, layer.padding, pad_value=zero_point) - zero_point
    return rows_q, _float_im2col(np.asarray(x_float, dtype=np.float64), kernel, layer.stride, layer.padding)


def _float_im2col(x, kernel, stride, padding):
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = arith.conv2d_out_shape(h, w, kernel, stride, padding)
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    cols = np.empty((b, oh, ow, kh, kw, c))
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx, :] = xp[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :]
    return cols.reshape(b * oh * ow, kh * kw * c)


def equalize_net(net: FloatNet, sweeps: int = 8) -> tuple[FloatNet, list]:
    """Cross-layer range equalisation (Nagel et al., "Data-free quantization", 2019) of a ReLU network.

    For each compute layer followed by ReLU (then optionally MaxPool2d and Flatten) and another compute
    layer, output channel ``c`` of the first is divided by ``s_c`` and the weights that read channel ``c``
    in the second multiplied by it, with ``s_c = sqrt(r1_c / r2_c)`` (``r`` the channels' weight ranges),
    so both get the range ``sqrt(r1_c r2_c)``. ReLU and max pooling commute with a positive per-channel
    scale, so the float function is unchanged (up to float rounding); per-tensor weight quantization then
    wastes fewer levels on one wide channel. Repeated ``sweeps`` times for chains of more than two layers.

    Returns ``(equalised net, channel_scale)``: ``channel_scale[i]`` (for each compute layer index ``i``
    whose outputs were rescaled) holds ``s``: an equalised layer output times ``s`` is the original one.
    """
    import copy
    layers = copy.deepcopy(net.layers)
    pairs = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, (FDense, FConv2d)) or i + 1 >= len(layers) or not isinstance(layers[i + 1], FReLU):
            continue
        j = i + 2
        while j < len(layers) and isinstance(layers[j], (FMaxPool2d, FFlatten)):
            j += 1
        if j < len(layers) and isinstance(layers[j], (FDense, FConv2d)):
            pairs.append((i, j))
    scales = {i: np.ones(layers[i].weight.shape[-1]) for i, _ in pairs}
    for _ in range(sweeps if pairs else 0):
        for i, j in pairs:
            first, second = layers[i], layers[j]
            n = first.weight.shape[-1]
            r1 = np.max(np.abs(first.weight.reshape(-1, n)), axis=0)
            w2 = second.weight
            # Which rows of the second layer read channel c: the Cin axis of a conv, or every n-th row of
            # a Dense layer after a flattened (h, w, c) map (or exactly row c after a Dense layer).
            rows = w2.reshape(-1, n, w2.shape[-1]) if isinstance(second, FDense) else \
                np.moveaxis(w2, 2, -2).reshape(-1, n, w2.shape[-1])
            r2 = np.max(np.abs(rows), axis=(0, 2))
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
            first.weight = first.weight / s
            first.bias = first.bias / s
            if isinstance(second, FDense):
                second.weight = (rows * s[None, :, None]).reshape(w2.shape)
            else:
                second.weight = w2 * s[None, None, :, None]
            scales[i] = scales[i] * s
    return FloatNet(net.input_shape, layers, net.name), [scales.get(i) for i in range(len(layers))]


@dataclass
class LayerError:
    index: int
    kind: str
    mse: float
    max_abs: float
    sqnr_db: float

    def as_dict(self):
        return {"layer": self.index, "kind": self.kind, "mse": self.mse, "max_abs_error": self.max_abs,
                "sqnr_db": self.sqnr_db}


def error_report(net: FloatNet, model: Model, x, channel_scale=None) -> list[LayerError]:
    """Per compute layer: the float layer output (after a fused ReLU) against the dequantized integer
    output, on inputs ``x``: MSE, max abs error and SQNR in dB.

    ``channel_scale`` (from :func:`equalize_net`) maps an equalised net's outputs back to the units of
    the net it came from, so that ``net`` is the original and the errors compare with its report."""
    from ..ir.intref import run
    x = np.asarray(x, dtype=np.float64).reshape((len(x), *net.input_shape))
    float_outs = net.forward(x, intermediates=True)
    trace = run(model, model.quantize_input(x), intermediates=True)
    # Map each integer compute layer to the float output it approximates.
    f_idx, reports = [], []
    i = 0
    layers_f = net.layers
    while i < len(layers_f):
        if isinstance(layers_f[i], (FDense, FConv2d)):
            fuse = i + 1 < len(layers_f) and isinstance(layers_f[i + 1], FReLU)
            f_idx.append((i, i + 1 if fuse else i))
            i += 2 if fuse else 1
        else:
            i += 1
    compute = [(j, t) for j, t in enumerate(trace) if isinstance(t[0], (Dense, Conv2d))]
    for (j, (layer, y, acc)), (ci, fi) in zip(compute, f_idx):
        ref = float_outs[fi]
        if layer.out_q is None:  # integer logits, in units of input scale x weight scale
            deq = y * np.asarray(layer.weight_q.scale) * _in_scale(model, j)
        elif layer.out_q.binary:  # a sign activation: compare signs
            deq, ref = y.astype(np.float64), np.where(ref >= 0, 1.0, -1.0)
        else:
            deq = layer.out_q.dequantize(y)
        if channel_scale is not None and channel_scale[ci] is not None:
            deq = deq * channel_scale[ci]
        err = deq - ref
        mse = float(np.mean(err ** 2))
        sig = float(np.mean(ref ** 2))
        sqnr = float("inf") if mse == 0 else 10 * np.log10(max(sig, 1e-30) / mse)
        reports.append(LayerError(j, layer.kind, mse, float(np.max(np.abs(err))), round(sqnr, 2)))
    return reports


def _in_scale(model, index):
    q = model.input_q
    for layer in model.layers[:index]:
        if isinstance(layer, (Dense, Conv2d)) and layer.out_q is not None:
            q = layer.out_q
    return q.scale[0]


def compare_reports(before: list[LayerError], after: list[LayerError]) -> list[dict]:
    """Per layer: MSE and SQNR before and after a compensation step (two :func:`error_report` lists)."""
    return [{"layer": a.index, "kind": a.kind, "mse_before": b.mse, "mse_after": a.mse,
             "sqnr_db_before": b.sqnr_db, "sqnr_db_after": a.sqnr_db} for b, a in zip(before, after)]
