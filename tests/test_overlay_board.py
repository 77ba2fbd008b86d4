"""The overlay engine inside the whole board core (UART, host link), under Verilator through the driver:
the digits MLP on one 8x4 array gives the reference's outputs for every test image, and the counters
count one array step per (group, chunk) of every layer."""

import math

import numpy as np

from lowbit.hw.accel import AccelCore
from lowbit.sim.board_sim import simulate_board
from lowbit.sw.data.digits import digits_split, train_mlp
from lowbit.sw.flow.overlay import compile_program, config_for
from lowbit.sw.ir.intref import run
from lowbit.sw.quant.posttrain import quantize_net

N, BATCH = 48, 8


def test_digits_mlp_on_the_overlay_board_is_bit_exact(tmp_path):
    xtr, ytr, xte, _ = digits_split()
    model = quantize_net(train_mlp(xtr, ytr, epochs=5), xtr, weight_bits=4, act_bits=4)
    cfg = config_for(model, 8, 4)
    prog = compile_program(model, cfg)
    arrays = [(cfg.rows, cfg.cols)] * len(prog.layers)
    core = AccelCore(model, arrays, 12e6, 3e6, max_batch=BATCH,
                     overlay=(cfg, prog.descriptors, prog.weights, prog.params))
    codes = model.quantize_input(xte[:N]).reshape(N, -1)
    res = simulate_board(core, tmp_path, codes, batch=BATCH)
    ref = run(model, codes.reshape(N, *model.input_shape)).reshape(N, -1)
    assert np.array_equal(res["values"], ref)
    assert res["argmax"] == np.argmax(ref, axis=1).tolist()
    steps = sum(math.ceil(p.k / cfg.rows) * math.ceil(p.n / cfg.cols) for p in prog.layers)
    assert res["counters"]["mac_cycles"] == N * steps
    assert res["counters"]["errors"] == 0


def test_digits_cnn_on_the_overlay_board_is_bit_exact(tmp_path):
    """Conv2d 3x3 (padding 1, at the input's zero point), MaxPool 2x2 and Dense on one 4x4 array: every
    output equals the reference, and the array steps once per (position, group, tap, word)."""
    from lowbit.sw.data.digits import train_cnn
    from lowbit.sw.ir.floatnet import FConv2d, FDense
    xtr, ytr, xte, _ = digits_split()
    net = train_cnn(xtr, ytr, channels=6, epochs=3)
    conv = net.layers[0]
    # padded to 8x8 outputs, so padding taps are in use (the Dense after the pool is random: bit-exactness,
    # not accuracy, is what this checks)
    net.layers[0] = FConv2d(conv.weight, conv.bias, (1, 1), (1, 1))
    net.layers[-1] = FDense(np.random.default_rng(0).normal(0, 0.1, (4 * 4 * 6, 10)), np.zeros(10))
    model = quantize_net(net, xtr, weight_bits=4, act_bits=4)
    cfg = config_for(model, 4, 4)
    prog = compile_program(model, cfg)
    assert [p.kind for p in prog.layers] == ["conv2d", "maxpool2d", "dense"]
    core = AccelCore(model, prog.arrays, 12e6, 3e6, max_batch=BATCH,
                     overlay=(cfg, prog.descriptors, prog.weights, prog.params))
    n = 16
    codes = model.quantize_input(xte[:n]).reshape(n, -1)
    res = simulate_board(core, tmp_path, codes, batch=BATCH)
    ref = run(model, codes.reshape(n, *model.input_shape)).reshape(n, -1)
    assert np.array_equal(res["values"], ref)
    steps = sum(p.positions * p.groups * p.kc for p in prog.layers if p.kind != "maxpool2d")
    assert res["counters"]["mac_cycles"] == n * steps


def test_patches_and_the_wide_back_end_on_the_overlay_board_are_bit_exact(tmp_path):
    """A first 3x3 Conv2d on one channel with multi-threshold activations (as quantization-aware training
    gives it) on a 9x4 array: the loader stores patch words, layer 0 takes one step a position and is
    requantized a result slot a cycle; every output equals the reference through the whole board's Verilog."""
    from lowbit.sw.data.synthetic import random_cnn
    model = random_cnn((8, 8, 1), (4,), classes=5, bits=2, seed=3, thresholds=True)
    cfg = config_for(model, 9, 4)
    prog = compile_program(model, cfg)
    assert cfg.patch == (8, 1, 3, 3) and cfg.wide
    core = AccelCore(model, prog.arrays, 12e6, 3e6, max_batch=BATCH,
                     overlay=(cfg, prog.descriptors, prog.weights, prog.params))
    codes = np.random.default_rng(4).integers(0, 4, (BATCH, 64))
    res = simulate_board(core, tmp_path, codes, batch=BATCH)
    ref = run(model, codes.reshape(BATCH, 8, 8, 1)).reshape(BATCH, -1)
    assert np.array_equal(res["values"], ref)
    steps = sum(p.positions * p.groups * p.kc for p in prog.layers if p.kind != "maxpool2d")
    assert prog.layers[0].kc == 1 and res["counters"]["mac_cycles"] == BATCH * steps
