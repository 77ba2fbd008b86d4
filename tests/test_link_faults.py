"""Fault injection on the serial link of the simulated board (Verilator + cocotb, UART at 4 clocks/bit).

Each fault is followed by a good INFER frame; the driver may retry it twice. Specified behaviour:
bad opcode, wrong length and truncated frames are answered with ERROR; bit flips and dropped bytes are
answered with ERROR or, when they hit the SYNC byte (the frame becomes garbage), dropped; garbage
before an intact frame is skipped and the frame answered. Never a wrong answer, never a hang.
"""

import pytest

from lowbit.hw.accel import AccelCore
from lowbit.sim.board_sim import inject_faults
from lowbit.sw.data.digits import digits_split, train_mlp
from lowbit.sw.ir.intref import run
from lowbit.sw.quant.posttrain import quantize_net


@pytest.fixture(scope="module")
def board():
    xtr, ytr, xte, _ = digits_split()
    model = quantize_net(train_mlp(xtr, ytr), xtr)
    from lowbit.sw.flow.build import fold_model
    from lowbit.sw.flow.synth import device
    arrays = [(f.rows, f.cols) for f in fold_model(model, device("ice40-up5k")).layers]    # as built
    core = AccelCore(model, arrays, 12e6, 3e6)
    codes = model.quantize_input(xte[:1])
    return core, codes.reshape(-1), run(model, codes)[0]


def check(result, count):
    c = result["counts"]
    assert c["injected"] == count
    assert c["wrong_answers"] == 0 and c["hung"] == 0 and c["recovered"] == count
    assert c["detected"] + c["dropped"] + c["answered_correctly"] == count
    kinds = result["by_kind"]
    for kind in ("bad_opcode", "wrong_length", "truncate"):
        assert set(kinds[kind]) == {"detected"}, (kind, kinds[kind])
    # Losing or corrupting the SYNC byte turns the frame into garbage, which is skipped silently.
    assert set(kinds["bitflip"]) <= {"detected", "dropped"} and set(kinds["drop"]) <= {"detected", "dropped"}
    # A repeated last byte is trailing garbage after a good frame; garbage before one is skipped.
    assert set(kinds["duplicate"]) <= {"detected", "answered_correctly"}
    assert set(kinds["garbage"]) <= {"answered_correctly", "detected"}


def test_140_faults_all_detected_or_dropped_and_recovered(board, tmp_path):
    core, codes, ref = board
    check(inject_faults(core, tmp_path, codes, ref, 140, seed=1), 140)


@pytest.mark.slow
def test_1001_faults(board, tmp_path):
    core, codes, ref = board
    check(inject_faults(core, tmp_path, codes, ref, 1001, seed=2), 1001)
