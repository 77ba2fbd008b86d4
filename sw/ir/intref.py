"""The integer reference model: executes a :class:`lowbit.sw.ir.model.Model` with integers only.

This is the arithmetic contract in action: every step is a ``lowbit.sw.ir.arith`` function, vectorised
over the batch with NumPy ``int64``. Hardware outputs are compared with :func:`run` using ``==``.
"""

from __future__ import annotations

import numpy as np

from . import arith
from ..errors import LowbitError
from .model import Conv2d, Dense, Flatten, MaxPool2d, Model

__all__ = ["run", "run_layer", "predict"]


def run_layer(layer, x, in_zero_point: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One layer on a batch of codes; returns ``(output codes, accumulators or None)``."""
    if isinstance(layer, Dense):
        acc = arith.dot_acc(x.reshape(x.shape[0], -1), layer.weight, in_zero_point)
    elif isinstance(layer, Conv2d):
        acc = arith.conv2d_acc(x, layer.weight, layer.stride, layer.padding, in_zero_point)
    elif isinstance(layer, MaxPool2d):
        return arith.maxpool2d(x, layer.kernel, layer.stride), None
    elif isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1), None
    else:
        raise LowbitError(f"the integer reference cannot execute {type(layer).__name__}")
    if layer.requant is None:
        return acc + layer.bias, acc
    return layer.requant.apply(acc, layer.bias), acc


def run(model: Model, codes, intermediates: bool = False):
    """Run integer input ``codes`` (batch, *input_shape) through ``model``.

    Returns the final integer outputs, or with ``intermediates=True`` a list of ``(layer, output, acc)``
    for every layer (``acc`` is None for layers without accumulators).
    """
    x = np.asarray(codes, dtype=np.int64)
    if x.shape[1:] != tuple(model.input_shape):
        raise LowbitError(f"input codes have shape {x.shape[1:]}, the model expects {tuple(model.input_shape)}")
    lo, hi = model.input_q.range
    x = arith.check_int_range("input codes", x, lo, hi)
    zp = model.input_q.zero_point
    trace = []
    for layer in model.layers:
        y, acc = run_layer(layer, x, zp)
        if isinstance(layer, (Dense, Conv2d)) and layer.out_q is not None:
            zp = layer.out_q.zero_point
        trace.append((layer, y, acc))
        x = y
    return trace if intermediates else x


def predict(model: Model, x_float) -> tuple[np.ndarray, np.ndarray]:
    """Float inputs -> (integer outputs, argmax class per sample)."""
    out = run(model, model.quantize_input(x_float))
    return out, np.argmax(out.reshape(out.shape[0], -1), axis=1)
