"""A binary (±1) demo network for the digits task, trained as a binary network.

Post-training quantization of the float digits MLP to 1-bit weights and activations keeps only about a
quarter of the test accuracy (a float ReLU network does not survive binarization). A binary network has
to be *trained* binary: :func:`train_binary_mlp` trains a 64-``hidden``-10 network whose forward pass is
exactly the one lowbit executes for ``--weight-bits 1 --act-bits 1`` (see
:func:`lowbit.sw.quant.posttrain.quantize_net`):

* inputs binarized around the median of the training inputs: ``xb = +1 if x >= median else -1``;
* hidden ``h = +1 if xb @ W1 + t1 >= 0 else -1`` with ``W1`` in ±1 and integer thresholds ``t1``;
* integer logits ``h @ W2 + t2``.

It uses latent real weights with a straight-through estimator (gradients pass where ``|w| <= 1`` and
where the scaled pre-activation lies in ``[-1, 1]``) and Adam; deterministic for a seed, about a second.
The returned :class:`FloatNet` holds the ±1 weights and the *integer* thresholds as biases, so
``quantize_net(net, x_train, weight_bits=1, act_bits=1)`` reproduces the trained network bit for bit
(every weight scale is 1). Its *float* forward pass (ReLU on real inputs) is not the binary network and
means nothing; evaluate the quantized model.
"""

from __future__ import annotations

import numpy as np

from ..quant.optim import Adam, softmax_grad
from ..ir.floatnet import FDense, FFlatten, FloatNet, FReLU

__all__ = ["train_binary_mlp", "binary_mlp_forward"]


def _sign(a):
    return np.where(a >= 0, 1, -1)


def train_binary_mlp(x, y, hidden: int = 32, epochs: int = 150, seed: int = 0, lr: float = 1e-2) -> FloatNet:
    """Train a binary 64-``hidden``-10 MLP on ``x`` (N, 8, 8, 1) in [0, 1] and labels ``y``.

    Quantize the result with the same ``x`` as calibration data: the input binarization threshold is the
    median of the calibration inputs, as during training.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    k = x.shape[1]
    xb = _sign(x - np.median(x)).astype(np.float64)
    w1, t1 = rng.uniform(-1, 1, (k, hidden)), np.zeros(hidden)
    w2, t2 = rng.uniform(-1, 1, (hidden, 10)), np.zeros(10)
    s1, s2 = 1 / np.sqrt(k), 4 / np.sqrt(hidden)   # keep pre-activations near the STE window / softmax range
    opt = Adam([w1, t1, w2, t2], lr)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            u1 = (xb[idx] @ _sign(w1) + t1) * s1
            h = _sign(u1)
            g = softmax_grad((h @ _sign(w2) + t2) * s2, y[idx]) * s2
            g_u1 = (g @ _sign(w2).T) * (np.abs(u1) <= 1) * s1
            opt.step([xb[idx].T @ g_u1 * (np.abs(w1) <= 1), g_u1.sum(0), h.T @ g * (np.abs(w2) <= 1), g.sum(0)])
            np.clip(w1, -1, 1, out=w1)
            np.clip(w2, -1, 1, out=w2)
    # Round thresholds to integers: the integer network is then exactly what quantize_net builds.
    return FloatNet((8, 8, 1), [FFlatten(), FDense(_sign(w1).astype(np.float64), np.round(t1)), FReLU(),
                                FDense(_sign(w2).astype(np.float64), np.round(t2))], "digits-bnn")


def binary_mlp_forward(net: FloatNet, x, offset: float) -> np.ndarray:
    """The binary network's integer logits, computed directly (an oracle for the quantized model)."""
    d1, d2 = net.layers[1], net.layers[3]
    xb = _sign(np.asarray(x, dtype=np.float64).reshape(len(x), -1) - offset)
    h = _sign(xb @ d1.weight.astype(np.int64) + d1.bias.astype(np.int64))
    return h @ d2.weight.astype(np.int64) + d2.bias.astype(np.int64)
