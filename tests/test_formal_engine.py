"""Formal proofs (SymbiYosys BMC, Boolector) on the real layer engine for small configurations.

With K <= R and N = 1 one input beat yields one output beat, so the generic stream-stage spec applies:
for every input and every back-pressure pattern within the bound, ``valid`` never depends on ``ready``,
a stalled output holds, no beat is lost, duplicated or reordered, and every output equals the
arithmetic contract (docs/arithmetic.md) written here independently with Amaranth operators.
"""

import numpy as np
import pytest
from amaranth import Mux

from lowbit.hw.config import ArrayConfig
from lowbit.hw.dense import DenseEngine, EngineParams
from lowbit.sim.formal import check_formal
from lowbit.sim.formal_stream import StreamStageSpec
from lowbit.sw.ir.model import Dense, QuantSpec, Requant


def _engine(weights, bias, a_bits, w_bits, requant, zx=0, **variant):
    k = len(weights)
    w = np.array(weights).reshape(k, 1)
    in_q = QuantSpec(a_bits, False, zx, (0.1,))
    if requant is None:
        layer = Dense(w, np.array([bias]), QuantSpec(w_bits, True), None, None)
    else:
        mult, shift, zp, lo, hi, relu = requant
        layer = Dense(w, np.array([bias]), QuantSpec(w_bits, True), QuantSpec(4, False, zp, (0.1,)),
                      Requant(np.array([mult]), np.array([shift]), zp, lo, hi, relu))
    cfg = ArrayConfig(rows=k, cols=1, act_bits=a_bits, weight_bits=w_bits, act_signed=False, weight_signed=True,
                      max_k=k, **variant)
    return lambda: DenseEngine(cfg, EngineParams.from_layer(layer, in_q))


def _dot(payload, weights, a_bits, zx):
    # sum_k (x_k - zx) * w_k, from the raw lane bits, in wide signed arithmetic
    total = 0
    for k, w in enumerate(weights):
        x = payload[a_bits * k:a_bits * (k + 1)]
        total = total + x * w - zx * w
    return total


@pytest.mark.parametrize("variant", [{}, {"systolic": True}], ids=["tree", "systolic"])
def test_requantizing_engine_is_proven_for_all_inputs(tmp_path, variant):
    weights, bias, a_bits, zx = [3, -2], 5, 3, 2
    mult, shift, zp, lo, hi = 40000, 17, 1, 0, 15

    def model(m, payload):
        t = (_dot(payload, weights, a_bits, zx) + bias) * mult
        r = (t + (1 << (shift - 1))) >> shift
        y = r + zp
        y = Mux(y < max(lo, zp), max(lo, zp), Mux(y > hi, hi, y))
        return y[:4]

    spec = StreamStageSpec(_engine(weights, bias, a_bits, 3, (mult, shift, zp, lo, hi, True), zx, **variant), model)
    result = check_formal(spec, tmp_path, depth=18)
    assert result.passed, result.summary


def test_accumulator_width_cannot_overflow(tmp_path):
    # 4 lanes of 4-bit unsigned inputs times the most negative 4-bit weight: the extreme sum is exact.
    weights, a_bits = [-8, -8, -8, -8], 4

    def model(m, payload):
        return _dot(payload, weights, a_bits, 0) - 7

    spec = StreamStageSpec(_engine(weights, -7, a_bits, 4, None), model)
    result = check_formal(spec, tmp_path, depth=14)
    assert result.passed, result.summary


def test_the_proof_catches_a_wrong_specification(tmp_path):
    weights, a_bits = [1, 1], 2

    def forgets_the_bias(m, payload):
        return _dot(payload, weights, a_bits, 0)

    spec = StreamStageSpec(_engine(weights, 3, a_bits, 2, None), forgets_the_bias)
    assert not check_formal(spec, tmp_path, depth=12).passed
