"""Layer engines of the demo models as Verilog, under cocotb + Verilator, equal to the reference.

Each real layer (the 4-bit digits MLP's two layers, the CNN's classifier, and the Brevitas binary MLP's
hidden layer, each with the array sizes an iCEBreaker build folds it to) runs all 540 test images with random idle and stall cycles;
every output beat is compared exactly. A corrupted expectation must make the same bench fail.
"""

from pathlib import Path

import pytest

from lowbit.boards.targets import board_device, platform_class
from lowbit.sim.engine_bench import run_engine_bench
from lowbit.sw.flow.build import fold_model
from lowbit.sw.data.digits import digits_split, train_cnn, train_mlp
from lowbit.sw.quant.posttrain import quantize_net
from lowbit.sw.importers.onnx_qonnx import load_qonnx

FIX = Path(__file__).parent / "fixtures" / "brevitas"


@pytest.fixture(scope="module")
def models():
    xtr, ytr, xte, _ = digits_split()
    mlp = quantize_net(train_mlp(xtr, ytr), xtr, weight_bits=4, act_bits=4)
    cnn = quantize_net(train_cnn(xtr, ytr), xtr, weight_bits=4, act_bits=4)
    bnn = load_qonnx(FIX / "digits_bnn.onnx")
    dev = board_device(platform_class("icebreaker")())     # what `lowbit build --board icebreaker` folds for
    return {name: (model, [(f.rows, f.cols) for f in fold_model(model, dev).layers])
            for name, model in (("mlp", mlp), ("cnn", cnn), ("bnn", bnn))}, xte


@pytest.mark.parametrize("name,index", [("mlp", 0), ("mlp", 1), ("cnn", 1), ("bnn", 0)])
def test_demo_layer_engine_is_bit_exact_under_verilator(models, name, index, tmp_path, capsys):
    table, xte = models
    model, arrays = table[name]
    result = run_engine_bench(model, arrays, xte, index, tmp_path)
    assert result["tests"] == 1 and result["failures"] == 0, result
    with capsys.disabled():
        print(f"\n[engine {name}[{index}]] {result['outputs']} outputs from {result['beats_in']} input beats: exact")


def test_engine_bench_fails_on_a_wrong_expectation(models, tmp_path):
    table, xte = models
    model, arrays = table["mlp"]
    assert run_engine_bench(model, arrays, xte[:20], 1, tmp_path, corrupt=True)["failures"] == 1
