"""AdaRound-style learned rounding of one layer's weights (Nagel et al., "Up or down?", ICML 2020).

Nearest rounding minimises each weight's own error, not the layer's output error. AdaRound keeps the
weight scale and lets every weight code be ``floor(w / s)`` or one more, chosen by gradient descent on a
soft relaxation: ``code = floor(w / s) + h(V)`` with the rectified sigmoid ``h(V) = clip(1.2 sigmoid(V) -
0.1, 0, 1)``, minimising the relative output error of the layer on calibration rows

    ``|f(Xq W~ + b) - f(X W + b)|^2 / |f(X W + b)|^2  +  lam * mean(1 - |2 h - 1|^beta)``  (lam = 1)

(``Xq`` the layer's dequantized *quantized* inputs, ``X`` the float ones, ``f`` the fused ReLU or the
identity). The regulariser pushes ``h`` to 0 or 1 as ``beta`` anneals from 20 to 2; the result is rounded
hard. Plain NumPy, Adam, mini-batches drawn from a seeded generator: the same inputs give the same codes.
:func:`lowbit.sw.quant.posttrain.quantize_net` calls it layer by layer (``adaround=True``).
"""

from __future__ import annotations

import numpy as np

from .optim import Adam, small_blas

__all__ = ["adaround_codes", "layer_output_mse"]


def _h(v):
    return np.clip(1.2 / (1 + np.exp(-v)) - 0.1, 0.0, 1.0)


def layer_output_mse(codes, scale, x_q, x_float, w, bias, relu) -> float:
    """Mean squared error of the layer output with weight ``codes`` (K, N) at ``scale`` (N,) on inputs
    ``x_q`` against the float layer ``w`` on ``x_float``."""
    out = x_q @ (codes * scale) + bias
    ref = x_float @ w + bias
    if relu:
        out, ref = np.maximum(out, 0), np.maximum(ref, 0)
    return float(np.mean((out - ref) ** 2))


def adaround_codes(w, scale, bits: int, x_q, x_float, bias, *, relu: bool = False, iters: int = 1500,
                   lam: float = 1.0, batch: int = 1024, lr: float = 3e-2, seed: int = 0) -> np.ndarray:
    """Learned rounding of ``w`` (K, N) at per-column ``scale`` to signed narrow-range ``bits`` codes.

    ``x_q`` (rows, K) are the layer's dequantized quantized inputs, ``x_float`` the float inputs the
    float layer sees; ``bias`` (N,) is the float bias. Returns int64 codes in ``[-(2^(bits-1) - 1),
    2^(bits-1) - 1]``. If the learned rounding has a larger output error on all the rows than rounding
    to nearest (it can, on very few rows), the nearest codes are returned: the result is never worse on
    the calibration data.
    """
    w = np.asarray(w, dtype=np.float64)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (w.shape[1],))
    qmax = (1 << (bits - 1)) - 1
    rng = np.random.default_rng(seed)
    base = np.floor(w / scale)
    frac = w / scale - base
    # Start where the soft codes equal the float weights: h(V) = frac.
    p = np.clip((frac + 0.1) / 1.2, 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p))
    target = x_float @ w + bias
    if relu:
        target = np.maximum(target, 0)
    norm = max(float(np.mean(target ** 2)), 1e-30)
    opt = Adam([v], lr)
    warmup = iters // 5
    with small_blas():
        _descend(v, opt, base, scale, qmax, x_q, target, bias, relu, norm, rng, iters, warmup, batch, lam)
    learned = np.clip(base + (_h(v) >= 0.5), -qmax, qmax).astype(np.int64)
    nearest = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int64)
    if layer_output_mse(learned, scale, x_q, x_float, w, bias, relu) > \
            layer_output_mse(nearest, scale, x_q, x_float, w, bias, relu):
        return nearest
    return learned


def _descend(v, opt, base, scale, qmax, x_q, target, bias, relu, norm, rng, iters, warmup, batch, lam):
    n_rows = len(x_q)
    for t in range(iters):
        idx = rng.integers(0, n_rows, min(batch, n_rows))
        sig = 1 / (1 + np.exp(-v))
        h_raw = 1.2 * sig - 0.1
        h = np.clip(h_raw, 0.0, 1.0)
        soft = base + h
        inside = (soft >= -qmax) & (soft <= qmax)
        out = x_q[idx] @ (np.clip(soft, -qmax, qmax) * scale) + bias
        err = out - target[idx]
        if relu:
            err = err * (out > 0)
        g_h = (2.0 / (err.size * norm)) * (x_q[idx].T @ err) * scale * inside
        if t >= warmup:
            beta = 20 + (2 - 20) * (t - warmup) / max(iters - warmup - 1, 1)
            d = 2 * h - 1
            g_h = g_h - lam / h.size * beta * np.abs(d) ** (beta - 1) * np.sign(d) * 2
        g_v = g_h * 1.2 * sig * (1 - sig) * ((h_raw > 0) & (h_raw < 1))
        opt.step([g_v])
