"""Whole quantized networks in gateware against the integer reference (Amaranth simulator)."""

import random

import numpy as np
import pytest
from amaranth import signed, unsigned

from lowbit.hw.network import ChunkPacker, Network, Replay, im2col_sequence, maxpool_sequence
from lowbit.sim.streams import run_sim, stream_get, stream_put
from lowbit.sw.ir import arith
from lowbit.sw.data.digits import train_cnn, train_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.intref import run
from lowbit.sw.quant.posttrain import quantize_net
from lowbit.hw.packing import pack_chunks


def input_stream(model, codes):
    flat = codes.reshape(-1)
    return [int(v) for v in ((flat > 0).astype(int) if model.input_q.binary else flat)]


def run_network(model, arrays, codes, idle=0.2, stall=0.2, systolic=False, systolic_2d=False, mult="lut"):
    dut = Network(model, arrays, systolic=systolic, systolic_2d=systolic_2d, mult=mult)
    ref = run(model, codes)
    got = []

    async def source(ctx):
        for img in codes:
            await stream_put(ctx, dut.i, input_stream(model, img), idle=idle, rng=random.Random(2))

    async def sink(ctx):
        got.extend(await stream_get(ctx, dut.o, ref.size, stall=stall, rng=random.Random(3)))

    run_sim(dut, source, sink)
    return np.array(got).reshape(ref.shape), ref


@pytest.mark.parametrize("kind,bits,arrays", [
    ("mlp", 4, [(8, 8), (4, 2)]), ("mlp", 1, [(16, 4), (8, 5)]), ("mlp", 8, [(3, 5), (7, 3)]),
    ("cnn", 4, [(3, 4), (8, 2)]), ("cnn", 1, [(9, 8), (4, 4)]),
])
def test_digits_networks_are_bit_exact(digits, kind, bits, arrays):
    xtr, ytr, xte, _ = digits
    net = (train_mlp if kind == "mlp" else train_cnn)(xtr, ytr)
    model = quantize_net(net, xtr, weight_bits=bits, act_bits=bits)
    got, ref = run_network(model, arrays, model.quantize_input(xte[:5]))
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("kind,bits,arrays", [("mlp", 4, [(8, 4), (4, 2)]), ("cnn", 1, [(9, 8), (4, 4)])])
def test_digits_networks_with_systolic_engines_are_bit_exact(digits, kind, bits, arrays):
    xtr, ytr, xte, _ = digits
    net = (train_mlp if kind == "mlp" else train_cnn)(xtr, ytr)
    model = quantize_net(net, xtr, weight_bits=bits, act_bits=bits)
    got, ref = run_network(model, arrays, model.quantize_input(xte[:5]), systolic=True)
    assert np.array_equal(got, ref)
    got, ref = run_network(model, arrays, model.quantize_input(xte[:5]), systolic_2d=True)
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("kind,bits,arrays", [("mlp", 4, [(4, 2), (2, 2)]), ("cnn", 2, [(3, 2), (2, 2)])])
def test_mult_dsp_reaches_every_array_and_stays_bit_exact(digits, kind, bits, arrays):
    """``mult="dsp"`` writes every array's products as ``*`` (for the DSP mapper), not shift-and-add."""
    from amaranth.back import rtlil
    xtr, ytr, xte, _ = digits
    net = (train_mlp if kind == "mlp" else train_cnn)(xtr, ytr)
    model = quantize_net(net, xtr, weight_bits=bits, act_bits=bits)
    got, ref = run_network(model, arrays, model.quantize_input(xte[:3]), mult="dsp")
    assert np.array_equal(got, ref)
    products = sum(r * c for r, c in arrays)
    count = lambda mult: rtlil.convert(Network(model, arrays, mult=mult)).count("cell $mul ")
    # One more $mul per product with dsp (with lut, narrow products are shift-and-add or selects).
    assert count("dsp") - count("lut") == products


def test_chunk_packer_pads_the_last_chunk():
    dut = ChunkPacker(signed(4), rows=3, k=7, pad=0)
    codes = [1, -2, 3, -4, 5, -6, 7] * 2
    got = []

    async def source(ctx):
        await stream_put(ctx, dut.i, codes, idle=0.3)

    async def sink(ctx):
        got.extend(await stream_get(ctx, dut.o, 6, stall=0.4))

    run_sim(dut, source, sink)
    assert got == pack_chunks(codes[:7], 3, 4) * 2


def test_replay_im2col_and_maxpool_orders():
    rng = np.random.default_rng(0)
    fmap = rng.integers(0, 16, (1, 4, 5, 2))
    seq = im2col_sequence(4, 5, 2, (3, 3), (1, 2), (1, 1))
    expected = arith.im2col(fmap, (3, 3), (1, 2), (1, 1), pad_value=9).ravel().tolist()
    pool = maxpool_sequence(4, 5, 2, (2, 2), None)
    pooled = arith.maxpool2d(fmap, (2, 2)).ravel().tolist()
    for dut, want in ((Replay(unsigned(4), 40, seq, pad=9), expected),
                      (Replay(unsigned(4), 40, pool, window=4), pooled)):
        got = []

        async def source(ctx, dut=dut):
            await stream_put(ctx, dut.i, fmap.ravel().tolist() * 2, idle=0.2)

        async def sink(ctx, dut=dut, n=len(want)):
            got.extend(await stream_get(ctx, dut.o, 2 * n, stall=0.3))

        run_sim(dut, source, sink)
        assert got == want * 2


def test_unsupported_layer_is_refused(digits):
    from lowbit.hw.network import plan_network
    xtr, ytr, _, _ = digits
    model = quantize_net(train_mlp(xtr, ytr, epochs=1), xtr)
    model.layers.insert(1, object())
    with pytest.raises(LowbitError, match="layer 1 is a object, which lowbit does not support"):
        plan_network(model, [(1, 1), (1, 1)])


def binary_weight_network(rng, a_bits, a_signed):
    """A padded Conv2d with ±1 weights on ``a_bits`` integer codes (nonzero zero point), MaxPool, Flatten,
    then a requantized Dense with ±1 weights on the ±1 outputs (XNOR) and integer logits."""
    from lowbit.sw.ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Thresholds
    lo, hi = arith.int_range(a_bits, a_signed)
    zx = int(rng.choice([v for v in range(lo, hi + 1) if v != 0]))
    binary = QuantSpec(1, True, binary=True)
    conv = Conv2d(rng.choice([-1, 1], (3, 3, 2, 5)), rng.integers(-9, 9, 5), binary, binary,
                  Thresholds(rng.integers(-2 * hi - 2, 2 * hi + 3, (5, 1)), -1, 2), stride=(1, 1), padding=(1, 1))
    dense = Dense(rng.choice([-1, 1], (2 * 2 * 5, 3)), rng.integers(-4, 5, 3), binary, None, None)
    return Model((4, 4, 2), QuantSpec(a_bits, a_signed, zx, (0.1,)), [conv, MaxPool2d((2, 2)), Flatten(), dense])


@pytest.mark.parametrize("a_bits,a_signed", [(a, s) for a in (1, 2, 4, 8) for s in (False, True)])
def test_binary_weight_conv_with_padding_is_bit_exact(a_bits, a_signed):
    # FINN's CNV-w1a1 first layer: ±1 weights on multi-bit codes, padded with the input zero point.
    from lowbit.hw.network import plan_network
    rng = np.random.default_rng(a_bits * 2 + a_signed)
    model = binary_weight_network(rng, a_bits, a_signed)
    lo, hi = model.input_q.range
    codes = rng.integers(lo, hi + 1, (4, 4, 4, 2))
    codes[0], codes[1] = lo, hi
    arrays = [(4, 2), (8, 2)]            # K = 18 on 4 rows: padded lanes; N = 5 on 2 columns
    engines = [p.config for p in plan_network(model, arrays) if p.kind == "engine"]
    assert engines[0].weight_binary and not engines[0].binary and engines[0].act_bits == a_bits
    assert engines[1].binary and not engines[1].weight_binary
    got, ref = run_network(model, arrays, codes)
    assert np.array_equal(got, ref)
    got, ref = run_network(model, arrays, codes[:2], systolic_2d=True)
    assert np.array_equal(got, ref)
