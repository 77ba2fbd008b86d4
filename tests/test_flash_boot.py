"""Boot from flash: a loadable overlay whose weights live in SPRAM (no bitstream initialisation) reads
the model blob from its SPI flash after reset — a SPI flash model behind the board's flash pins, the
whole board under Verilator + cocotb — and the first INFER the host sends is bit-exact; an erased or
damaged flash leaves the board empty, refused by name."""

import numpy as np
import pytest

from lowbit.hw.accel import AccelCore
from lowbit.sim.board_sim import simulate_board
from lowbit.sw.data.synthetic import random_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.flow.overlay import compile_program, config_for, load_image
from lowbit.sw.ir.intref import run

OFFSET = 0x100000
MODEL = random_mlp((20, 8, 5), 4, seed=21)
CFG = config_for(MODEL, 4, 2, loadable=True, weight_store="spram", weight_depth=64)
CHUNK = 32


def _core():
    prog = compile_program(MODEL, CFG)
    return AccelCore(MODEL, [(CFG.rows, CFG.cols)] * len(prog.layers), 12e6, 3e6, max_batch=2,
                     overlay=(CFG, prog.descriptors, prog.weights, prog.params), flash_boot=OFFSET)


def _boot_cycles(blob):
    return 40 * len(blob) + 20_000          # 32 clocks a byte from the flash, the link's copy and check


def test_the_board_boots_its_model_from_flash(tmp_path):
    blob = load_image(MODEL, CFG, 2, _core().input_buffer).flash_blob(CHUNK)
    codes = np.random.default_rng(3).integers(0, 16, (4, 20))
    res = simulate_board(_core(), tmp_path, codes, batch=2, flash=blob, settle_cycles=_boot_cycles(blob))
    assert res["identity"]["capacity"]["loaded"] == 1
    assert np.array_equal(res["values"], run(MODEL, codes))
    assert res["counters"]["errors"] == 0


@pytest.mark.parametrize("damage", ["erased", "flipped"])
def test_a_missing_or_damaged_blob_leaves_the_board_empty(tmp_path, damage):
    blob = bytearray(load_image(MODEL, CFG, 2, _core().input_buffer).flash_blob(CHUNK))
    if damage == "flipped":
        blob[len(blob) // 2] ^= 0x40       # inside a chunk: its CRC fails, the COMMIT's checksum too
    flash = b"" if damage == "erased" else bytes(blob)
    with pytest.raises(LowbitError, match="the board holds no model"):
        simulate_board(_core(), tmp_path, np.zeros((1, 20), dtype=np.int64), flash=flash,
                       settle_cycles=_boot_cycles(blob))
