"""The small optimiser the trainers share (float, QAT, learned rounding): Adam, a softmax cross-entropy
gradient, and single-threaded BLAS for their many small matrix products."""

from __future__ import annotations

import numpy as np

__all__ = ["Adam", "small_blas", "softmax_grad"]


class Adam:
    """Adam over a list of NumPy arrays, updated in place (lr, betas 0.9 / 0.999, eps 1e-8)."""

    def __init__(self, params, lr):
        self.params, self.lr = params, lr
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= self.lr * (m / (1 - 0.9 ** self.t)) / (np.sqrt(v / (1 - 0.999 ** self.t)) + 1e-8)


def small_blas():
    """Context manager running BLAS single-threaded, if ``threadpoolctl`` is installed (else no-op).

    The training and rounding loops multiply small matrices thousands of times; on a shared 2-core machine
    OpenBLAS's thread hand-off makes each product several times slower than one thread computing it.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def softmax_grad(logits, y):
    """Gradient of the mean cross-entropy with respect to the logits."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return p / len(y)
