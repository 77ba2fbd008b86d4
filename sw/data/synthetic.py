"""Random quantized models of a given shape, for benches, tests and ``lowbit verilog --engine``."""

from __future__ import annotations

import numpy as np

from ..ir import arith
from ..ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant, Thresholds

__all__ = ["random_dense_model", "random_mlp", "random_cnn"]


def random_dense_model(k: int, n: int, bits: int = 4, seed: int = 0, requant: bool = False,
                       weight_signed: bool = True) -> Model:
    """One random Dense layer with ``bits``-bit weights and unsigned ``bits``-bit inputs."""
    rng = np.random.default_rng(seed)
    lo, hi = arith.int_range(bits, weight_signed)
    w = rng.integers(lo, hi + 1, (k, n))
    b = rng.integers(-100, 100, n)
    if requant:
        mult, shift = arith.quantize_multiplier(np.full(n, 0.01))
        layer = Dense(w, b, QuantSpec(bits, weight_signed), QuantSpec(bits, False),
                      Requant(mult, shift, 0, 0, (1 << bits) - 1, True))
    else:
        layer = Dense(w, b, QuantSpec(bits, weight_signed), None, None)
    return Model((k,), QuantSpec(bits, False), [layer], f"dense{k}x{n}").validate()


def random_mlp(shape, bits: int, seed: int = 0) -> Model:
    """A random Dense stack ``shape[0] -> ... -> shape[-1]`` at ``bits`` bits: signed weights and unsigned
    ReLU activations (requantized), or for ``bits=1`` ±1 weights and activations (sign thresholds);
    integer logits at the end."""
    rng = np.random.default_rng(seed)
    b1 = QuantSpec(1, True, 0, (1.0,), binary=True)
    act = b1 if bits == 1 else QuantSpec(bits, False, 0, (1.0,))
    layers = []
    for i, (k, n) in enumerate(zip(shape[:-1], shape[1:])):
        last = i == len(shape) - 2
        if bits == 1:
            w, w_q = rng.choice([-1, 1], (k, n)), b1
            rq = None if last else Thresholds(rng.integers(-8, 8, (n, 1)), out_lo=-1, out_step=2)
        else:
            lo, hi = arith.int_range(bits, True)
            w, w_q = rng.integers(lo, hi + 1, (k, n)), QuantSpec(bits, True, 0, (1.0,))
            mult, shift = arith.quantize_multiplier(np.full(n, 0.5 / k))
            rq = None if last else Requant(mult, shift, 0, 0, (1 << bits) - 1, True)
        layers.append(Dense(w, rng.integers(-20, 20, n), w_q, None if last else act, rq))
    return Model((shape[0],), act, layers, f"mlp{'-'.join(map(str, shape))}").validate()


def random_cnn(input_shape=(28, 28, 1), channels=(8, 16), classes: int = 10, bits: int = 2, seed: int = 0,
               thresholds: bool = False) -> Model:
    """A random CNN at ``bits`` bits (``bits`` >= 2): per entry of ``channels`` a 3x3 Conv2d (ReLU,
    requantized, or with ``thresholds`` ``2**bits - 1`` ascending thresholds a channel, as quantization-aware
    training gives) and a 2x2 MaxPool, then Flatten and a Dense layer of ``classes`` integer logits — the
    shape of the MNIST CNN (``lowbit.sw.data.digits.mnist_cnn``) by default."""
    rng = np.random.default_rng(seed)
    act = QuantSpec(bits, False, 0, (1.0,))
    lo, hi = arith.int_range(bits, True)
    w_q = QuantSpec(bits, True, 0, (1.0,))
    layers, shape = [], tuple(input_shape)
    for n in channels:
        k = 9 * shape[2]
        if thresholds:
            rq = Thresholds(np.sort(rng.integers(-k, k, (n, (1 << bits) - 1)), axis=1), out_lo=0, out_step=1)
        else:
            mult, shift = arith.quantize_multiplier(np.full(n, 0.5 / k))
            rq = Requant(mult, shift, 0, 0, (1 << bits) - 1, True)
        layers += [Conv2d(rng.integers(lo, hi + 1, (3, 3, shape[2], n)), rng.integers(-20, 20, n), w_q, act, rq),
                   MaxPool2d((2, 2))]
        shape = layers[-1].out_shape(layers[-2].out_shape(shape))
    k = int(np.prod(shape))
    layers += [Flatten(), Dense(rng.integers(lo, hi + 1, (k, classes)), rng.integers(-20, 20, classes), w_q, None, None)]
    return Model(tuple(input_shape), act, layers, f"cnn{'-'.join(map(str, channels))}").validate()
