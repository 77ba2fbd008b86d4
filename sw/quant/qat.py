"""Quantization-aware training (QAT) of a :class:`FloatNet` into the same :class:`Model` that PTQ writes.

:func:`train_qat` fine-tunes a float network (BatchNorm already folded, so it trains folded) whose forward
pass is, number for number, the integer network it exports:

* inputs are quantized as the exported model quantizes them (``Model.quantize_input``): ``input_bits``
  (default ``act_bits``) unsigned codes, or ±1 around ``meta["input_offset"]`` for a binary network;
* each Dense/Conv2d layer multiplies the integer input codes by integer weight codes (``round(w / s_w)``,
  symmetric narrow range, one scale per output channel or per tensor) and so computes the exact
  accumulator ``acc`` of the integer reference;
* a hidden layer's output code is ``clip(floor((acc * s_in * s_w + b) / s_out + 1/2), lo, hi)``
  (``lo = 0`` with the ReLU fused, the signed range without). That is a monotone function of the integer
  ``acc``, so it is exported exactly as FINN-style thresholds (:class:`lowbit.sw.ir.model.Thresholds`,
  found by bisection of this very expression): the ``.lbm`` computes the trainer's codes bit for bit;
* the last layer outputs ``acc + round(b / (s_in s_w))`` (one weight scale: argmax compares them).

Gradients use the straight-through estimator through every rounding (zero where a clamp is active);
scales are learned as LSQ does (Esser et al., 2020; in log domain) or stay calibrated
(``scales="calibrated"``: the PTQ clip ranges). MaxPool2d and Flatten act on codes.

Binary networks (``weight_bits = act_bits = 1``) follow the FINN/BNN recipe: latent real weights in
``[-1, 1]`` whose signs are the ±1 weights, hidden outputs ``sign(acc + t)`` with integer thresholds
``t`` (STE inside a learned window per channel), inputs binarized around the mean of the training inputs.
A binary network keeps only the float net's topology: its latent weights start random, and by default
it learns the float net's softmax on inputs with Gaussian noise added before binarization
(``distill``, ``input_noise`` of :func:`train_qat`).

NumPy only, Adam, mini-batches from a seeded generator: the same inputs and seed give the same model.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..ir import arith
from .optim import Adam, small_blas
from ..errors import LowbitError
from ..ir.floatnet import FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU
from ..ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Thresholds
from .posttrain import _weight_scale, check_calibration_range, clip_range

__all__ = ["train_qat", "QATNet", "QATResult", "SCALES"]

#: How the quantization scales are chosen: learned (LSQ) from the calibrated start, or kept calibrated.
SCALES = ("learned", "calibrated")


def act_codes(acc, acc_scale, bias, out_scale, lo, hi):
    """Output codes of a hidden layer from its integer accumulators: the one expression the trainer
    evaluates and the export bisects into thresholds (it must stay monotone in ``acc``)."""
    return np.clip(np.floor((acc * acc_scale + bias) / out_scale + 0.5), lo, hi)


def _cols(x, kernel, stride, padding, pad_value):
    """im2col on float arrays (codes during training): (B, OH, OW, KH*KW*C), element order (ky, kx, c)."""
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = arith.conv2d_out_shape(h, w, kernel, stride, padding)
    xp = np.full((b, h + 2 * ph, w + 2 * pw, c), float(pad_value))
    xp[:, ph:ph + h, pw:pw + w, :] = x
    cols = np.empty((b, oh, ow, kh, kw, c))
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx, :] = xp[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :]
    return cols.reshape(b, oh, ow, kh * kw * c)


def _uncols(g, in_shape, kernel, stride, padding):
    """The adjoint of :func:`_cols`: sum each window's gradient back onto the (unpadded) input."""
    b, h, w, c = in_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = g.shape[1:3]
    g = g.reshape(b, oh, ow, kh, kw, c)
    gp = np.zeros((b, h + 2 * ph, w + 2 * pw, c))
    for ky in range(kh):
        for kx in range(kw):
            gp[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :] += g[:, :, :, ky, kx, :]
    return gp[:, ph:ph + h, pw:pw + w, :]


@dataclass
class _Compute:
    """One Dense/Conv2d layer with its fused activation, in training form."""
    kind: str                 # "dense" or "conv2d"
    w: np.ndarray             # latent float weights (K, N) (binary: in [-1, 1])
    b: np.ndarray             # float bias (binary: the threshold t in units of sqrt(K), the acc's spread)
    log_sw: np.ndarray        # log weight scale (N,) or (1,) (unused in binary mode)
    log_so: np.ndarray | None  # log output scale (1,), None for the last layer or binary
    lo: int = 0
    hi: int = 0
    relu: bool = False
    last: bool = False
    wshape: tuple = ()
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)


@dataclass
class QATResult:
    """What :func:`train_qat` returns: the exported ``model``, the trained :class:`QATNet`, per-epoch
    ``history`` (loss, train and validation accuracy of the quantized forward) and wall-clock ``seconds``."""
    model: Model
    net: "QATNet"
    history: list = field(default_factory=list)
    seconds: float = 0.0


class QATNet:
    """A float network in fake-quantized training form; :meth:`export` gives the integer :class:`Model`.

    Parameters
    ----------
    net : FloatNet
        The float model (Dense, Conv2d, ReLU fused after a compute layer, MaxPool2d, Flatten).
    calib_x : array
        Inputs the start scales are calibrated on (and, binary, the input offset taken from).
    weight_bits, act_bits : int
        2 to 8 each, or both 1 (binary).
    per_channel : bool
        One weight scale per output channel for hidden layers (the last layer always has one).
    input_bits : int, optional
        Bits of the input codes (default ``act_bits``; a binary network's inputs are ±1).
    input_offset : float, optional
        Binary only: the value inputs are binarized around (default: the mean of ``calib_x``; on the
        digits the median, 0.06, keeps too few pixels: a float MLP on inputs binarized there reaches
        89.8 %, at the mean, 0.31, 94.1 %).
    seed : int
        Seeds a binary network's initial latent weights.
    """

    def __init__(self, net: FloatNet, calib_x, weight_bits: int, act_bits: int, per_channel: bool = True,
                 input_bits: int | None = None, input_offset: float | None = None, seed: int = 0):
        for name, bits in (("weight", weight_bits), ("activation", act_bits)):
            if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
                raise LowbitError(f"{name} bit-width {bits!r} is not supported", "choose 1 to 8 bits")
        self.binary = weight_bits == 1 or act_bits == 1
        if self.binary and weight_bits != act_bits:
            raise LowbitError(f"{weight_bits}-bit weights with {act_bits}-bit activations are not supported",
                              "1-bit means a binary (±1) network: use --weight-bits 1 --act-bits 1")
        self.weight_bits, self.act_bits, self.per_channel = weight_bits, act_bits, per_channel
        self.input_shape, self.name = tuple(net.input_shape), net.name
        x = _as_inputs(calib_x, self.input_shape, "calibration inputs")
        check_calibration_range(x, "calibration inputs x", need_span=True)
        self.meta = {}
        if self.binary:
            self.meta["input_offset"] = float(np.mean(x) if input_offset is None else input_offset)
            self.input_q = QuantSpec(1, True, 0, (1.0,), binary=True)
        else:
            in_bits = input_bits or act_bits
            if float(x.min()) >= 0:
                self.input_q = QuantSpec(in_bits, False, 0, (clip_range(x, in_bits, "minmax", False)
                                                             / ((1 << in_bits) - 1),))
            else:
                from .posttrain import quantize_tensor
                _, s, zp = quantize_tensor(x, in_bits, symmetric=False)
                self.input_q = QuantSpec(in_bits, False, int(zp), (float(s),))
        self._rng = np.random.default_rng(seed)
        self.ops = self._build(net, x)

    # -- construction --------------------------------------------------------------------------

    def _build(self, net, x):
        layers = net.layers
        compute = [i for i, l in enumerate(layers) if isinstance(l, (FDense, FConv2d))]
        if not compute:
            raise LowbitError("the model has no Dense or Conv2d layer", "lowbit needs at least one")
        with np.errstate(over="ignore", invalid="ignore"):
            float_outs = net.forward(x, intermediates=True)
        ops, i = [], 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, (FDense, FConv2d)):
                relu = i + 1 < len(layers) and isinstance(layers[i + 1], FReLU)
                last = i == compute[-1]
                w = layer.weight.reshape(-1, layer.weight.shape[-1]).astype(np.float64)
                n = w.shape[1]
                kw = dict(kind=layer.kind, wshape=layer.weight.shape, relu=relu, last=last)
                if isinstance(layer, FConv2d):
                    if self.binary and any(layer.padding):
                        raise LowbitError(f"layer {i}: a binary convolution cannot pad (±1 has no zero code)",
                                          "use padding=0 for binary layers")
                    kw.update(stride=tuple(layer.stride), padding=tuple(layer.padding))
                if self.binary:
                    # Latent weights start uniform in the clip range [-1, 1]: the signs of the float weights
                    # are a worse start (digits MLP 1/1: 89.1 % against 90.6 %, 100 epochs). ``log_so``
                    # holds the STE window scale per hidden channel (a BatchNorm's scale: the sign does not
                    # depend on it) or, last, the logits' temperature (argmax does not depend on it).
                    latent = self._rng.uniform(-1, 1, w.shape)
                    k = w.shape[0]
                    ops.append(_Compute(w=latent, b=np.zeros(n), log_sw=np.zeros(1),
                                        log_so=np.full(1 if last else n, np.log((4.0 if last else 1.0) / np.sqrt(k))),
                                        **kw))
                else:
                    sw = _weight_scale(w, self.weight_bits, self.per_channel and not last, "mse")
                    sw = sw / ((1 << (self.weight_bits - 1)) - 1)
                    log_so, lo, hi = None, 0, 0
                    if not last:
                        y = float_outs[i + 1] if relu else float_outs[i]
                        check_calibration_range(y, f"layer {i} ({layer.kind}) outputs")
                        if relu:
                            lo, hi = 0, (1 << self.act_bits) - 1
                            c = clip_range(y, self.act_bits, "mse", False)
                        else:
                            lo, hi = -(1 << (self.act_bits - 1)), (1 << (self.act_bits - 1)) - 1
                            c = clip_range(y, self.act_bits, "mse", True) * (-lo) / hi
                        log_so = np.log([c / hi])
                    ops.append(_Compute(w=w.copy(), b=layer.bias.astype(np.float64).copy(),
                                        log_sw=np.log(sw if self.per_channel and not last else sw[:1]),
                                        log_so=log_so, lo=lo, hi=hi, **kw))
                i += 2 if relu else 1
                continue
            if isinstance(layer, FReLU):
                raise LowbitError(f"layer {i}: ReLU must directly follow a Dense or Conv2d layer",
                                  "lowbit fuses ReLU into the requantization of the layer before it")
            if isinstance(layer, FMaxPool2d):
                ops.append(("maxpool", tuple(layer.kernel), tuple(layer.stride) if layer.stride else None))
            elif isinstance(layer, FFlatten):
                ops.append(("flatten",))
            else:
                raise LowbitError(f"layer {i}: {layer.kind} cannot be trained quantized")
            if any(isinstance(o, _Compute) and o.last for o in ops):
                raise LowbitError(f"layer {i} ({layer.kind}) follows the last Dense/Conv2d layer",
                                  "the last compute layer outputs the integer logits")
            i += 1
        return ops

    def params(self):
        out = []
        for op in self.ops:
            if isinstance(op, _Compute):
                out += [op.w, op.b] + ([] if self.binary else [op.log_sw]) + \
                    ([op.log_so] if op.log_so is not None else [])
        return out

    # -- forward and backward ------------------------------------------------------------------

    def input_codes(self, x) -> np.ndarray:
        """The exported model's input codes, as floats for the matrix products."""
        x = _as_inputs(x, self.input_shape, "inputs") - self.meta.get("input_offset", 0.0)
        return self.input_q.quantize(x).astype(np.float64)

    def _wq(self, op):
        """Weight codes (K, N) and their scale (N,) or (1,)."""
        if self.binary:
            return np.where(op.w >= 0, 1.0, -1.0), np.ones(1)
        qmax = (1 << (self.weight_bits - 1)) - 1
        sw = np.exp(op.log_sw)
        return np.clip(np.round(op.w / sw), -qmax, qmax), sw

    def forward(self, x, train: bool = False):
        """Integer logits (float64 holding integers) of the quantized network; with ``train`` also the
        cache :meth:`backward` needs."""
        codes = self.input_codes(x)
        zp = self.input_q.zero_point
        s_in = self.input_q.scale[0]
        cache = []
        for op in self.ops:
            if isinstance(op, tuple):
                if op[0] == "flatten":
                    cache.append(("flatten", codes.shape))
                    codes = codes.reshape(len(codes), -1)
                else:
                    _, kernel, stride = op
                    win, pooled = _pool(codes, kernel, stride)
                    cache.append(("maxpool", codes.shape, win, pooled, kernel, stride))
                    codes = pooled
                continue
            in_shape = codes.shape
            if op.kind == "conv2d":
                rows = _cols(codes, op.wshape[:2], op.stride, op.padding, zp) - zp
            else:
                rows = codes.reshape(len(codes), -1) - zp
            wq, sw = self._wq(op)
            acc = rows @ wq
            if self.binary:
                t = np.round(op.b * np.sqrt(op.w.shape[0]))
                u = acc + t
                out = u if op.last else np.where(u >= 0, 1.0, -1.0)
                s_out, zp_out = 1.0, 0
            elif op.last:
                t = np.round(op.b / (s_in * sw))
                u, out, s_out, zp_out = None, acc + t, None, 0
            else:
                s_out, zp_out = float(np.exp(op.log_so[0])), 0
                u = acc * (s_in * sw) + op.b
                out = act_codes(acc, s_in * sw, op.b, s_out, op.lo, op.hi)
            cache.append((op, in_shape, rows, wq, sw, s_in, acc, u, out, s_out))
            codes, zp, s_in = out, zp_out, s_out if s_out is not None else s_in
        logits = codes.reshape(len(codes), -1)
        return (logits, cache) if train else logits

    def loss_and_grads(self, x, y, soft=None, distill: float = 0.0):
        """Cross-entropy of the quantized network's real logits and the gradients of :meth:`params`.

        With ``soft`` (teacher probabilities, one row per input) the target is
        ``(1 - distill) * onehot(y) + distill * soft`` (knowledge distillation at temperature 1)."""
        logits, cache = self.forward(x, train=True)
        # The real logits: integer logits times their unit (binary: a fixed temperature).
        op, _, _, _, sw, s_in = cache[-1][:6]
        unit = float(np.exp(op.log_so[0])) if self.binary else float(s_in * sw[0])
        z = logits * unit
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        target = np.zeros_like(p)
        target[np.arange(len(y)), y] = 1.0
        if soft is not None and distill:
            target = (1 - distill) * target + distill * np.asarray(soft, dtype=np.float64)
        loss = float(-np.mean(np.sum(target * np.log(np.maximum(p, 1e-30)), axis=1)))
        g = (p - target) / len(y)                   # gradient on the real logits
        grads = {}
        for entry in reversed(cache):
            tag = entry[0]
            if tag == "flatten":
                g = g.reshape(entry[1])
                continue
            if tag == "maxpool":
                _, shape, win, pooled, kernel, stride = entry
                g = _unpool(g, shape, win, pooled, kernel, stride)
                continue
            op, in_shape, rows, wq, sw, s_in, acc, u, out, s_out = entry
            g = g.reshape(out.shape)
            if self.binary:
                if op.last:
                    g_u = g * unit
                    grads[id(op.log_so)] = np.array([float(np.sum(g * u)) * unit])
                else:
                    alpha = np.exp(op.log_so)
                    inside = np.abs(u * alpha) <= 1
                    g_u = g * inside * alpha
                    grads[id(op.log_so)] = (g * inside * u).reshape(-1, u.shape[-1]).sum(0) * alpha
                g_acc = g_u
                g_b = g_u.reshape(-1, g_u.shape[-1]).sum(0)
                g_wq = rows.reshape(-1, rows.shape[-1]).T @ g_acc.reshape(-1, g_acc.shape[-1])
                grads[id(op.w)] = g_wq * (np.abs(op.w) <= 1)
                grads[id(op.b)] = g_b * np.sqrt(op.w.shape[0])
                g_rows = g_acc @ wq.T
            else:
                if op.last:
                    g_a = g                             # d real logit / d a = 1 (a = unit * (acc + t))
                else:
                    # Real output x = s_out * code: STE inside the clamp, LSQ for the scale.
                    a_s = u / s_out
                    inside = (a_s >= op.lo - 0.5) & (a_s <= op.hi + 0.5)
                    g_a = g * inside
                    d_s = np.where(inside, out - a_s, out)
                    lsq = 1 / np.sqrt(out[0].size * op.hi)
                    grads[id(op.log_so)] = np.array([float(np.sum(g * d_s)) * lsq * s_out])
                g2 = g_a.reshape(-1, g_a.shape[-1])
                r2 = rows.reshape(-1, rows.shape[-1]) * s_in     # real inputs
                grads[id(op.b)] = g2.sum(0)
                g_wreal = r2.T @ g2                             # d loss / d (sw * wq)
                qmax = (1 << (self.weight_bits - 1)) - 1
                wn = op.w / sw
                w_inside = np.abs(wn) <= qmax
                grads[id(op.w)] = g_wreal * w_inside
                d_sw = np.where(w_inside, wq - wn, wq)
                g_sw = (g_wreal * d_sw).sum(0) / np.sqrt(op.w.shape[0] * qmax)
                if op.log_sw.size == 1:
                    g_sw = np.array([g_sw.sum()])
                grads[id(op.log_sw)] = g_sw * sw
                g_rows = g_a @ (wq * sw).T              # d loss / d real input (s_in * codes)
            if op.kind == "conv2d":
                g = _uncols(g_rows, in_shape, op.wshape[:2], op.stride, op.padding)
            else:
                g = g_rows.reshape(in_shape)
        return loss, [grads.get(id(p), np.zeros_like(p)) for p in self.params()]

    def clamp(self):
        """Keep binary latent weights in the STE window [-1, 1] (after each step)."""
        if self.binary:
            for op in self.ops:
                if isinstance(op, _Compute):
                    np.clip(op.w, -1, 1, out=op.w)

    def predict_logits(self, x, batch: int = 512) -> np.ndarray:
        """The trainer's own quantized forward: integer logits (as int64) of the inputs ``x``."""
        x = np.asarray(x)
        with small_blas():
            out = [self.forward(x[i:i + batch]) for i in range(0, len(x), batch)]
        return np.concatenate(out).astype(np.int64)

    # -- export --------------------------------------------------------------------------------

    def export(self) -> Model:
        """The integer :class:`Model` whose reference output equals :meth:`predict_logits` exactly."""
        layers = []
        in_q = self.input_q
        for op in self.ops:
            if isinstance(op, tuple):
                layers.append(Flatten() if op[0] == "flatten" else MaxPool2d(op[1], op[2]))
                continue
            wq, sw = self._wq(op)
            n = wq.shape[1]
            codes = wq.astype(np.int64).reshape(op.wshape)
            if self.binary:
                w_q = QuantSpec(1, True, 0, (1.0,) * n, binary=True)
                bias = np.round(op.b * np.sqrt(op.w.shape[0])).astype(np.int64)
                if op.last:
                    out_q, rq = None, None
                else:
                    out_q = QuantSpec(1, True, 0, (1.0,), binary=True)
                    rq = Thresholds(np.zeros((n, 1), dtype=np.int64), out_lo=-1, out_step=2)
            else:
                sw_n = np.broadcast_to(sw, (n,))
                w_q = QuantSpec(self.weight_bits, True, 0, tuple(sw_n))
                s_in = in_q.scale[0]
                if op.last:
                    bias = np.round(op.b / (s_in * sw)).astype(np.int64)
                    out_q, rq = None, None
                else:
                    s_out = float(np.exp(op.log_so[0]))
                    out_q = QuantSpec(self.act_bits, op.lo < 0, 0, (s_out,))
                    lo_acc, hi_acc = _acc_bounds(codes.reshape(-1, n), in_q)
                    t = _thresholds(s_in * sw_n, op.b, s_out, op.lo, op.hi, lo_acc, hi_acc)
                    bias = np.zeros(n, dtype=np.int64)
                    rq = Thresholds(t, out_lo=op.lo, out_step=1)
            if np.any(np.abs(bias) > (1 << 31) - 1):
                raise LowbitError(f"a trained bias exceeds int32 in layer {len(layers)}",
                                  "train with a smaller learning rate")
            if op.kind == "dense":
                layers.append(Dense(codes, bias, w_q, out_q, rq))
            else:
                layers.append(Conv2d(codes, bias, w_q, out_q, rq, op.stride, op.padding))
            if out_q is not None:
                in_q = out_q
        meta = {**self.meta, "weight_bits": self.weight_bits, "act_bits": self.act_bits,
                "per_channel": self.per_channel, "trained": "qat"}
        return Model(self.input_shape, self.input_q, layers, self.name, meta).validate()


def _acc_bounds(w, in_q):
    """Per output channel, the least and greatest accumulator any input codes can give."""
    lo, hi = in_q.range
    a, b = lo - in_q.zero_point, hi - in_q.zero_point
    return (np.minimum(a * w, b * w).sum(0).astype(np.int64) - 1,
            np.maximum(a * w, b * w).sum(0).astype(np.int64) + 1)


def _thresholds(acc_scale, bias, out_scale, lo, hi, lo_acc, hi_acc):
    """``T[c, j]``: the least integer ``acc`` whose :func:`act_codes` reach ``lo + j + 1`` (bisection on
    the expression itself, so ``lo + #{j : acc >= T[c, j]}`` equals it for every reachable ``acc``);
    a level no accumulator reaches gets ``hi_acc``, one above the largest."""
    n, steps = len(acc_scale), hi - lo
    target = lo + 1 + np.arange(steps)[None, :]              # (1, S)
    below = np.repeat(lo_acc[:, None], steps, 1)             # act_codes(below) < target (or below all)
    above = np.repeat(hi_acc[:, None], steps, 1)             # act_codes(above) >= target (or unreachable)
    scale_, bias_ = acc_scale[:, None], np.asarray(bias, dtype=np.float64)[:, None]
    while np.any(above - below > 1):
        mid = (below + above) // 2
        ok = act_codes(mid.astype(np.float64), scale_, bias_, out_scale, lo, hi) >= target
        above = np.where(ok, mid, above)
        below = np.where(ok, below, mid)
    return above.astype(np.int64)


def _pool(codes, kernel, stride):
    kh, kw = kernel
    sh, sw = stride or kernel
    oh, ow = arith.conv2d_out_shape(codes.shape[1], codes.shape[2], kernel, (sh, sw), (0, 0))
    win = np.stack([codes[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :] for ky in range(kh) for kx in range(kw)],
                   axis=3)
    return win, win.max(axis=3)


def _unpool(g, shape, win, pooled, kernel, stride):
    kh, kw = kernel
    sh, sw = stride or kernel
    oh, ow = pooled.shape[1:3]
    mask = win == pooled[:, :, :, None, :]
    mask = mask / mask.sum(axis=3, keepdims=True)             # ties share the gradient
    gw = mask * g.reshape(pooled.shape)[:, :, :, None, :]
    out = np.zeros(shape)
    for j, (ky, kx) in enumerate((ky, kx) for ky in range(kh) for kx in range(kw)):
        out[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :] += gw[:, :, :, j, :]
    return out


def _as_inputs(x, shape, what):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise LowbitError(f"{what} are empty", "pass a few hundred representative inputs")
    if x.shape[1:] != tuple(shape):
        if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise LowbitError(f"{what} have shape {x.shape[1:]} per sample, the model expects {tuple(shape)}")
        x = x.reshape((len(x), *shape))
    if not np.all(np.isfinite(x)):
        raise LowbitError(f"{what} contain NaN or infinity")
    return x


def _accuracy(qnet, x, y):
    return float(np.mean(np.argmax(qnet.predict_logits(x), axis=1) == y))


def train_qat(net: FloatNet, x, y, *, weight_bits: int, act_bits: int, epochs: int = 30, lr: float | None = None,
              seed: int = 0, batch: int = 64, per_channel: bool = True, scales: str = "learned",
              input_bits: int | None = None, input_offset: float | None = None, val=None, log=None,
              distill: float | None = None, input_noise: float | None = None) -> QATResult:
    """Quantization-aware fine-tuning of ``net`` on inputs ``x`` and integer labels ``y``.

    ``lr`` (the start of a cosine decay over the epochs) defaults to 1e-3 (integer) or 3e-2 (binary;
    latent weights live in [-1, 1]).

    ``distill`` (0 to 1) mixes the float ``net``'s own softmax on each batch into the one-hot target
    (knowledge distillation, temperature 1); ``input_noise`` adds Gaussian noise of that standard
    deviation (in input units, clipped to the training inputs' range) to each batch before it is
    quantized, the teacher labelling the noisy inputs. Both default to off for integer networks and
    to ``distill=1``, ``input_noise=0.1`` for binary ones: on the digits MLP at 1/1 (64-32-10, 300
    epochs) they raise the validation accuracy (last 200 training images held out, 6 seeds) from 87.9 %
    to 89.9 % (test split, trained on all of it: 92.22 % at seed 0), as the noisy binarized inputs near the threshold teach the ±1 network where the float
    one draws its boundaries. With ``val`` =
    ``(x_val, y_val)`` the epoch with the best validation accuracy of the quantized forward is exported,
    else the last. ``log`` is a callable for progress lines (the CLI passes one writing to stderr).
    Returns a :class:`QATResult`; its ``model`` validates and the integer reference executes it.
    """
    if scales not in SCALES:
        raise LowbitError(f"unknown scale mode {scales!r}", f"choose one of {', '.join(SCALES)}")
    for name, v, least in (("epochs", epochs, 0), ("batch", batch, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise LowbitError(f"{name} {v!r} must be an integer of at least {least}")
    if lr is not None and not (np.isfinite(lr) and 0 < lr < 1):
        raise LowbitError(f"learning rate {lr!r} must be between 0 and 1", "e.g. 1e-3")
    start = time.perf_counter()
    x = np.asarray(x)
    y = _labels(y, len(x), "training")
    qnet = QATNet(net, x, weight_bits, act_bits, per_channel, input_bits, input_offset, seed)
    n_out = int(np.prod(net.forward(np.asarray(x[:1], dtype=np.float64)).shape[1:]))
    if y.max() >= n_out:
        raise LowbitError(f"label {int(y.max())} is not one of the model's {n_out} outputs",
                          "pass the labels of this model's classes")
    if val is not None:
        val = (np.asarray(val[0]), _labels(val[1], len(val[0]), "validation"))
    lr = lr if lr is not None else (3e-2 if qnet.binary else 1e-3)
    distill = float(distill if distill is not None else (1.0 if qnet.binary else 0.0))
    input_noise = float(input_noise if input_noise is not None else (0.1 if qnet.binary else 0.0))
    if not 0 <= distill <= 1:
        raise LowbitError(f"distillation weight {distill!r} must be between 0 and 1", "e.g. 1 (all soft targets)")
    if not (np.isfinite(input_noise) and input_noise >= 0):
        raise LowbitError(f"input noise {input_noise!r} must be a non-negative standard deviation", "e.g. 0.1")
    x_lo, x_hi = float(np.min(x)), float(np.max(x))
    noise_rng = np.random.default_rng([seed, 1])          # apart from the batch order: off changes nothing
    params = qnet.params()
    learned = [p for p in params if scales == "learned" or not _is_scale(qnet, p)]
    opt = Adam(learned, lr)
    rng = np.random.default_rng(seed)
    history, best, best_state = [], -1.0, None
    with small_blas():
        for epoch in range(epochs):
            opt.lr = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))   # cosine decay: a settled last epoch
            order = rng.permutation(len(x))
            losses = []
            for s in range(0, len(x), batch):
                idx = order[s:s + batch]
                xb = x[idx]
                if input_noise:
                    xb = np.clip(xb + noise_rng.normal(0, input_noise, xb.shape), x_lo, x_hi)
                soft = _softmax(net.forward(np.asarray(xb, dtype=np.float64))) if distill else None
                loss, grads = qnet.loss_and_grads(xb, y[idx], soft, distill)
                by_id = {id(p): g for p, g in zip(params, grads)}
                opt.step([by_id[id(p)] for p in learned])
                qnet.clamp()
                losses.append(loss)
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
            if val is not None:
                entry["val_accuracy"] = _accuracy(qnet, *val)
                if entry["val_accuracy"] > best:
                    best, best_state = entry["val_accuracy"], [p.copy() for p in params]
            history.append(entry)
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}"
                    + (f", validation accuracy {entry['val_accuracy']:.2%}" if val is not None else ""))
    if best_state is not None:
        for p, v in zip(params, best_state):
            p[...] = v
    model = qnet.export()
    model.meta.update(epochs=epochs, seed=seed, lr=lr, scales=scales, distill=distill, input_noise=input_noise)
    return QATResult(model, qnet, history, time.perf_counter() - start)


def _softmax(z):
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _is_scale(qnet, p):
    return any(isinstance(op, _Compute) and (p is op.log_sw or p is op.log_so) for op in qnet.ops)


def _labels(y, n, what):
    if y is None:
        raise LowbitError(f"the {what} data has no labels 'y'", "training needs integer labels y")
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise LowbitError(f"{what} labels must be {n} integers, got {y.dtype} {y.shape}")
    if n and y.min() < 0:
        raise LowbitError(f"{what} label {int(y.min())} is negative", "labels are class indices 0, 1, ...")
    return y.astype(np.int64)


def stderr_log(message: str) -> None:
    print(f"[lowbit] {message}", file=sys.stderr, flush=True)
