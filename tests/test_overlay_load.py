"""Loading models into a built overlay through the link (LOAD/COMMIT, docs/protocol.md), on the whole
board under Verilator + cocotb, through the ordinary driver: a board built with model A runs model B —
another layer count, shapes and widths — bit-exactly once B is loaded; an empty board refuses INFER
until a model is committed."""

import numpy as np
import pytest

from lowbit.hw.accel import AccelCore
from lowbit.sim.board_sim import simulate_board
from lowbit.sw.data.synthetic import random_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.flow.overlay import compile_program, config_for, load_image
from lowbit.sw.ir.intref import run

BATCH = 4


def _core(model, cfg, empty=False, input_buffer=None):
    prog = compile_program(model, cfg)
    arrays = [(cfg.rows, cfg.cols)] * len(prog.layers)
    overlay = (cfg, [], [], []) if empty else (cfg, prog.descriptors, prog.weights, prog.params)
    return AccelCore(model, arrays, 12e6, 3e6, max_batch=BATCH, overlay=overlay, input_buffer=input_buffer)


def _inputs(model, n, seed):
    lo, hi = 0, (1 << model.input_q.bits) - 1
    return np.random.default_rng(seed).integers(lo, hi + 1, (n, model.input_shape[0]))


def test_a_board_built_for_a_runs_b_once_b_is_loaded(tmp_path):
    a = random_mlp((24, 16, 10), 4, seed=1)
    b = random_mlp((40, 12, 12, 6), 2, seed=2)           # more layers, other shapes, 2 bits
    cfg = config_for(a, 4, 4, also=(b,), loadable=True)
    core = _core(a, cfg, input_buffer=40 * BATCH)
    image = load_image(b, cfg, BATCH, core.input_buffer)
    codes = _inputs(b, 10, 3)
    res = simulate_board(core, tmp_path, codes, batch=BATCH, load=image, chunk_bytes=64)
    assert np.array_equal(res["values"], run(b, codes))
    assert res["identity"]["config_hash"] == image.identity.config_hash
    assert res["identity"]["capacity"]["loaded"] == 1
    assert res["load"]["bytes"] == image.total_bytes
    assert res["counters"]["errors"] == 0


def test_an_empty_overlay_answers_not_loaded_then_runs_the_loaded_model(tmp_path):
    a = random_mlp((16, 8, 4), 4, seed=4)
    cfg = config_for(a, 4, 2, loadable=True)
    core = _core(a, cfg, empty=True)
    with pytest.raises(LowbitError, match="the board holds no model"):
        simulate_board(core, tmp_path, _inputs(a, 2, 5), batch=BATCH)
    codes = _inputs(a, 6, 6)
    res = simulate_board(core, tmp_path, codes, batch=BATCH, load=load_image(a, cfg, BATCH, core.input_buffer))
    assert np.array_equal(res["values"], run(a, codes))


def test_load_image_refuses_what_the_overlay_cannot_hold():
    a = random_mlp((16, 8, 4), 4, seed=4)
    cfg = config_for(a, 4, 2, loadable=True)
    with pytest.raises(LowbitError, match="activation words"):
        load_image(random_mlp((16, 64, 4), 4, seed=1), cfg, BATCH, 64)
    with pytest.raises(LowbitError, match=r"the weights need \d+ words of 64 bits .* holds \d+"):
        load_image(random_mlp((16, 8, 8, 4), 4, seed=1), config_for(a, 4, 2, max_layers=3, loadable=True), BATCH, 64)
    with pytest.raises(LowbitError, match="3 layers for the overlay, its program holds 2"):
        load_image(random_mlp((16, 8, 8, 4), 4, seed=1), cfg, BATCH, 64)
    with pytest.raises(LowbitError, match="input buffer holds 32 bytes"):
        load_image(random_mlp((40, 8, 4), 4, seed=1), config_for(a, 4, 2, act_depth=16, weight_depth=400, acc_bits=24, loadable=True,
                                                                  param_depth=64), BATCH, 32)
    with pytest.raises(LowbitError, match=r"input format \(2, False, False\) .* not one the overlay was built for"):
        load_image(random_mlp((16, 8, 4), 2, seed=1), cfg, BATCH, 64)
