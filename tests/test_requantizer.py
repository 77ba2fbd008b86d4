"""The requantization unit alone, against ``arith.requantize`` / ``arith.multithreshold``, exactly.

Column results (``sums``, group ``g``) are drawn over the accumulator's whole reachable range, extremes
included, for every output mode (per-channel and common shift, ReLU, zero points at the extremes,
multi-threshold with integer and binary outputs, logits), with N not a multiple of C, random idle
cycles on the input and stalls on the output.
"""

import random

import numpy as np
import pytest
from lowbit.hw.config import ArrayConfig
from lowbit.hw.dense import DenseEngine, EngineParams, Requantizer
from lowbit.sim.streams import run_sim, stream_get, stream_put
from lowbit.sw.ir import arith

# The engine only lends its widths and parameter ROM to the unit; it is never elaborated here.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def make_params(rng, k, n, mode, *, out_bits=4, out_signed=False, zero_point=None, relu=False,
                common_shift=False, binary_out=False):
    bias = rng.integers(-300, 300, n)
    w = np.zeros((k, n), dtype=np.int64)
    if mode == "requant":
        lo, hi = arith.int_range(out_bits, out_signed)
        zp = int(rng.integers(lo, hi + 1)) if zero_point is None else zero_point
        mult, shift = arith.quantize_multiplier(rng.uniform(0.001, 0.5, n), common_shift=common_shift)
        return EngineParams(k, n, w, bias, "requant", out_bits, out_signed, mult=mult, shift=shift,
                            zero_point=zp, lo=max(lo, zp) if relu else lo, hi=hi)
    if mode == "thresholds":
        steps = 1 if binary_out else 3
        t = np.sort(rng.integers(-150, 150, (n, steps)), axis=1)
        if binary_out:
            return EngineParams(k, n, w, bias, "thresholds", 1, False, out_binary=True, thresholds=t,
                                out_lo=-1, out_step=2)
        return EngineParams(k, n, w, bias, "thresholds", 2, False, thresholds=t, out_lo=0, out_step=1)
    return EngineParams(k, n, w, bias, "logits", 32, True)


def expected(engine, sums_by_group):
    """What the unit must emit for column results ``sums_by_group`` [(g, sums[C])], channel by channel."""
    p, C = engine.params, engine.config.cols
    out = []
    for g, sums in sums_by_group:
        cols = min(C, p.n - g * C)
        ch = np.arange(g * C, g * C + cols)
        acc = np.asarray(sums[:cols], dtype=np.int64) * (2 if engine.config.binary else 1)
        if p.mode == "requant":
            y = arith.requantize(acc, p.bias[ch], p.mult[ch], p.shift[ch], p.zero_point, p.lo, p.hi)
        elif p.mode == "thresholds":
            y = arith.multithreshold(acc + p.bias[ch], p.thresholds[ch], p.out_lo, p.out_step)
            if p.out_binary:
                y = (y > 0).astype(np.int64)
        else:
            y = acc + p.bias[ch]
        out.extend(int(v) for v in y)
    return out


def check_requantizer(cfg, params, vectors=12, idle=0.3, stall=0.3, seed=0):
    engine = DenseEngine(cfg, params)
    dut = Requantizer(engine)
    rng = np.random.default_rng(seed)
    if cfg.binary:
        lo, hi = 0, params.k                                   # popcounts
    else:
        plo, phi = cfg.product_range
        lo, hi = min(0, params.k * plo), max(0, params.k * phi)
    items = []
    for v in range(vectors):
        for g in range(engine.groups):
            sums = rng.integers(lo, hi + 1, cfg.cols)
            if v == 0:
                sums[:] = lo
            elif v == 1:
                sums[:] = hi
            items.append((g, sums))
    want = expected(engine, items)

    async def source(ctx):
        payloads = [{"sums": [int(s) for s in sums], "g": g} for g, sums in items]
        await stream_put(ctx, dut.i, payloads, idle=idle, rng=random.Random(seed))

    got = []

    async def sink(ctx):
        got.extend(await stream_get(ctx, dut.o, len(want), stall=stall, rng=random.Random(seed + 1)))

    run_sim(dut, source, sink)
    assert got == want


CASES = {
    "requant-u4": {"mode": "requant"},
    "requant-s4-relu": {"mode": "requant", "out_signed": True, "relu": True},
    "requant-common-shift": {"mode": "requant", "common_shift": True},
    "requant-zp-min": {"mode": "requant", "out_bits": 8, "out_signed": True, "zero_point": -128},
    "requant-zp-max": {"mode": "requant", "out_bits": 8, "out_signed": True, "zero_point": 127},
    "requant-u2": {"mode": "requant", "out_bits": 2},
    "thresholds": {"mode": "thresholds"},
    "thresholds-binary": {"mode": "thresholds", "binary_out": True},
    "logits": {"mode": "logits"},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rows,cols,n", [(2, 1, 3), (3, 3, 7), (4, 4, 4), (2, 8, 13)])
def test_requantizer_modes(case, rows, cols, n):
    cfg = ArrayConfig(rows, cols, 4, 4, act_signed=False, weight_signed=True, max_k=64)
    params = make_params(np.random.default_rng(rows * 100 + n), 64, n, **CASES[case])
    check_requantizer(cfg, params, seed=n)


@pytest.mark.parametrize("case", ["requant-u4", "thresholds-binary", "logits"])
def test_requantizer_binary_array(case):
    """Binary arrays deliver popcounts; the unit doubles them (acc = 2 * popcount - K, K in the bias)."""
    cfg = ArrayConfig(4, 3, 1, 1, binary=True, max_k=64)
    params = make_params(np.random.default_rng(5), 64, 7, **CASES[case])
    check_requantizer(cfg, params, seed=3)


def test_requantizer_without_backpressure():
    """Back-to-back groups with the output always ready: one code per cycle."""
    cfg = ArrayConfig(2, 4, 8, 8, max_k=32)
    params = make_params(np.random.default_rng(9), 32, 10, "requant", out_bits=8, out_signed=True)
    check_requantizer(cfg, params, vectors=20, idle=0.0, stall=0.0, seed=7)

