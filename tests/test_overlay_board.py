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
