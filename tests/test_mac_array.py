"""The MAC array and its PE alone, against NumPy, exactly: every reduction (adder tree with and without
the product register, systolic chain, 2-D systolic grid, packed DSP products) over operand widths and
array sizes, with random stall cycles on ``en`` and extreme operands."""

import itertools
import random

import numpy as np
import pytest
from amaranth import Const, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from lowbit.hw.array import MacArray, SystolicPE, code_shape, radix4_product, times3, uses_radix4
from lowbit.hw.config import ArrayConfig
from lowbit.sw.ir import arith

VARIANTS = {"tree": {}, "tree-comb": {"product_reg": False}, "systolic": {"systolic": True},
            "systolic-comb": {"systolic": True, "product_reg": False},
            "systolic2d": {"systolic": True, "systolic_2d": True},
            # Registered operands and sums (OverlayConfig.array_regs): more latency, the same sums.
            "tree-inreg": {"input_reg": True}, "systolic-inreg": {"systolic": True, "input_reg": True},
            "tree-regs": {"input_reg": True, "sum_reg": True},
            "tree-comb-sumreg": {"product_reg": False, "sum_reg": True}}


def operands(cfg, rng, chunks):
    if cfg.binary:
        return rng.integers(0, 2, (chunks, cfg.rows)), rng.integers(0, 2, (chunks, cfg.rows, cfg.cols))
    (alo, ahi), (wlo, whi) = arith.int_range(cfg.act_bits, cfg.act_signed), arith.int_range(cfg.weight_bits, cfg.weight_signed)
    x = rng.integers(alo, ahi + 1, (chunks, cfg.rows))
    w = rng.integers(wlo, whi + 1, (chunks, cfg.rows, cfg.cols))
    # Extremes: all-min and all-max chunks, and mixed corners.
    x[0], w[0] = alo, wlo
    x[1], w[1] = ahi, whi
    x[2], w[2] = alo, whi
    x[3], w[3] = ahi, wlo
    return x, w


def expected_sums(cfg, x, w):
    if cfg.binary:
        return (x[:, :, None] == w).sum(axis=1)        # agreeing ±1 pairs
    return np.einsum("kr,krc->kc", x, w)


def run_array(cfg, x, w, stall=0.3, seed=0):
    """Drive ``x`` (chunks, R) and ``w`` (chunks, R, C) through a MacArray with random stall cycles;
    return the column sums read ``latency`` enabled cycles after each chunk."""
    dut = MacArray(cfg)
    got = []

    async def bench(ctx):
        rng = random.Random(seed)
        idx = 0
        while len(got) < len(x):
            chunk = min(idx, len(x) - 1)
            for r in range(cfg.rows):
                ctx.set(dut.x[r], int(x[chunk][r]))
                for j in range(cfg.cols):
                    ctx.set(dut.w[r][j], int(w[chunk][r][j]))
            en = rng.random() >= stall
            ctx.set(dut.en, en)
            if en:
                if idx >= dut.latency:
                    got.append([ctx.get(dut.sums[j]) for j in range(cfg.cols)])
                idx += 1
            # A latency-0 array (an adder tree without product registers) has no clock domain.
            await (ctx.tick() if dut.latency else ctx.delay(1e-6))

    sim = Simulator(dut)
    sim.add_clock(1e-6, if_exists=True)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got), dut.latency


WIDTHS = list(itertools.product([1, 2, 4, 8], [False, True], [1, 2, 4, 8], [False, True]))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("a_bits,a_signed,w_bits,w_signed", WIDTHS)
def test_array_is_exact_over_the_width_grid(a_bits, a_signed, w_bits, w_signed, variant):
    cfg = ArrayConfig(rows=3, cols=2, act_bits=a_bits, act_signed=a_signed, weight_bits=w_bits,
                      weight_signed=w_signed, **VARIANTS[variant])
    rng = np.random.default_rng(a_bits * 100 + w_bits * 10 + a_signed * 2 + w_signed)
    x, w = operands(cfg, rng, 12)
    got, _ = run_array(cfg, x, w, seed=a_bits + w_bits)
    assert np.array_equal(got, expected_sums(cfg, x, w)), f"\n{got}\n!=\n{expected_sums(cfg, x, w)}"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("rows,cols", list(itertools.product([1, 2, 3, 4, 8], [1, 2, 3, 4, 8])))
def test_array_is_exact_over_array_sizes(rows, cols, variant):
    cfg = ArrayConfig(rows=rows, cols=cols, act_bits=4, weight_bits=4, **VARIANTS[variant])
    rng = np.random.default_rng(rows * 10 + cols)
    x, w = operands(cfg, rng, 10)
    got, _ = run_array(cfg, x, w, seed=rows + cols)
    assert np.array_equal(got, expected_sums(cfg, x, w))


@pytest.mark.parametrize("variant", ["tree", "systolic", "systolic2d"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 4), (8, 3)])
def test_binary_array_counts_agreeing_pairs(rows, cols, variant):
    cfg = ArrayConfig(rows=rows, cols=cols, act_bits=1, weight_bits=1, binary=True, **VARIANTS[variant])
    x, w = operands(cfg, np.random.default_rng(rows), 16)
    got, _ = run_array(cfg, x, w)
    assert np.array_equal(got, expected_sums(cfg, x, w))


@pytest.mark.parametrize("a_bits,w_bits", [(4, 4), (2, 4), (4, 2), (8, 3)])
@pytest.mark.parametrize("cols", [2, 3, 4])
def test_packed_dsp_products_are_exact(a_bits, w_bits, cols):
    cfg = ArrayConfig(rows=2, cols=cols, act_bits=a_bits, weight_bits=w_bits, act_signed=a_bits == 8,
                      mult="dsp", dsp_pack=True)
    x, w = operands(cfg, np.random.default_rng(cols), 14)
    got, _ = run_array(cfg, x, w)
    assert np.array_equal(got, expected_sums(cfg, x, w))


@pytest.mark.parametrize("pairs,input_reg", [(1, False), (3, False), (5, False), (3, True)])
def test_some_packed_pairs_beside_lut_products_are_exact(pairs, input_reg):
    """dsp_pairs: the first pairs (row by row) packed, the rest radix-4 products in logic."""
    cfg = ArrayConfig(rows=3, cols=4, act_bits=4, weight_bits=4, act_signed=True, dsp_pairs=pairs,
                      input_reg=input_reg)
    x, w = operands(cfg, np.random.default_rng(pairs), 14)
    got, _ = run_array(cfg, x, w)
    assert np.array_equal(got, expected_sums(cfg, x, w))


RADIX4 = list(itertools.product([3, 4, 5, 6], [False, True], [3, 4, 5, 6], [False, True]))


@pytest.mark.parametrize("a_bits,a_signed,w_bits,w_signed", RADIX4)
def test_radix4_products_are_exact_for_every_operand_pair(a_bits, a_signed, w_bits, w_signed):
    """Every activation against every weight, with the row's shared 3x (the array) and without (a PE)."""
    cfg = ArrayConfig(act_bits=a_bits, act_signed=a_signed, weight_bits=w_bits, weight_signed=w_signed)
    assert uses_radix4(cfg)
    (alo, ahi), (wlo, whi) = arith.int_range(a_bits, a_signed), arith.int_range(w_bits, w_signed)
    m = Module()
    w = Signal(code_shape(w_bits, w_signed))
    xs = list(range(alo, ahi + 1))
    outs = []
    for i, x in enumerate(xs):
        xc = Const(x, code_shape(a_bits, a_signed))
        x3 = times3(m, xc, a_signed, f"x3_{i}") if i % 2 else None
        o = Signal(signed(cfg.product_bits), name=f"o{i}")
        m.d.comb += o.eq(radix4_product(m, xc, a_signed, w, w_signed, cfg.product_bits, x3=x3, name=f"p{i}"))
        outs.append(o)
    got = {}

    async def bench(ctx):
        for wv in range(wlo, whi + 1):
            ctx.set(w, wv)
            await ctx.delay(1e-6)
            got[wv] = [ctx.get(o) for o in outs]

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == {wv: [x * wv for x in xs] for wv in range(wlo, whi + 1)}


@pytest.mark.parametrize("variant", ["tree", "systolic", "tree-inreg", "tree-regs"])
@pytest.mark.parametrize("a_bits,a_signed,w_bits,w_signed",
                         [(3, True, 5, False), (6, False, 3, True), (5, True, 6, True)])
def test_radix4_arrays_are_exact(a_bits, a_signed, w_bits, w_signed, variant):
    cfg = ArrayConfig(rows=3, cols=3, act_bits=a_bits, act_signed=a_signed, weight_bits=w_bits,
                      weight_signed=w_signed, **VARIANTS[variant])
    x, w = operands(cfg, np.random.default_rng(a_bits + w_bits), 12)
    got, _ = run_array(cfg, x, w)
    assert np.array_equal(got, expected_sums(cfg, x, w))


def test_dsp_pairs_are_bounded_and_need_the_tree():
    with pytest.raises(ValueError, match="dsp_pairs must be an integer from 0 to 6"):
        ArrayConfig(rows=3, cols=4, dsp_pairs=7)
    with pytest.raises(ValueError, match="dsp_pairs needs"):
        ArrayConfig(rows=3, cols=4, dsp_pairs=2, systolic=True)
    with pytest.raises(ValueError, match="sum_reg needs the adder tree"):
        ArrayConfig(rows=3, cols=4, sum_reg=True, systolic=True)


@pytest.mark.parametrize("variant,latency", [("tree", 1), ("tree-comb", 0), ("systolic", 5), ("systolic-comb", 4),
                                             ("systolic2d", 7), ("tree-inreg", 2), ("systolic-inreg", 6),
                                             ("tree-regs", 3), ("tree-comb-sumreg", 1)])
def test_latency_is_as_documented(variant, latency):
    cfg = ArrayConfig(rows=4, cols=3, **VARIANTS[variant])
    assert MacArray(cfg).latency == latency


def test_a_wrong_expectation_fails():
    cfg = ArrayConfig(rows=3, cols=3, act_bits=4, weight_bits=4, systolic=True)
    x, w = operands(cfg, np.random.default_rng(1), 8)
    got, _ = run_array(cfg, x, w)
    bad = expected_sums(cfg, x, w)
    bad[5, 1] += 1
    assert not np.array_equal(got, bad)


@pytest.mark.parametrize("product_reg", [False, True])
def test_pe_adds_its_product_and_passes_the_activation(product_reg):
    cfg = ArrayConfig(act_bits=4, weight_bits=4, product_reg=product_reg, systolic=True)
    dut = SystolicPE(cfg, unsigned(4), signed(4), signed(10), signed(11))
    rng = random.Random(3)
    seen = []

    async def bench(ctx):
        held = None
        for _ in range(200):
            x, w, p = rng.randrange(16), rng.randrange(-8, 8), rng.randrange(-512, 512)
            en = rng.random() < 0.7
            ctx.set(dut.x_in, x)
            ctx.set(dut.w_in, w)
            ctx.set(dut.psum_in, p)
            ctx.set(dut.en, en)
            await ctx.tick()
            if en:
                if product_reg:
                    # psum_out = psum_in (this cycle's) + the product registered on the previous enable.
                    if held is not None:
                        seen.append((ctx.get(dut.psum_out), p + held))
                    held = x * w
                else:
                    seen.append((ctx.get(dut.psum_out), p + x * w))
                assert ctx.get(dut.x_out) == x

    sim = Simulator(dut)
    sim.add_clock(1e-6, if_exists=True)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) > 100
    assert all(a == b for a, b in seen)
