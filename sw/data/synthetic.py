"""Random quantized models of a given shape, for benches, tests and ``lowbit verilog --engine``."""

from __future__ import annotations

import numpy as np

from ..ir import arith
from ..ir.model import Dense, Model, QuantSpec, Requant

__all__ = ["random_dense_model"]


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
