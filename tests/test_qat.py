"""Quantization-aware training: the exported .lbm is the trainer's own quantized network, bit for bit."""

import json

import numpy as np
import pytest

from lowbit.sw.data.digits import train_cnn, train_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.floatnet import FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU
from lowbit.sw.ir.intref import predict, run
from lowbit.sw.ir.model import Model, Thresholds
from lowbit.sw.quant.posttrain import quantize_net
from lowbit.sw.quant.qat import QATNet, train_qat


def _acc(model, x, y):
    return float(np.mean(predict(model, x)[1] == y))


@pytest.fixture(scope="module")
def mlp(digits):
    xtr, ytr, _, _ = digits
    return train_mlp(xtr, ytr)


def test_qat_2bit_mlp_beats_ptq_and_the_lbm_is_the_trainers_network(digits, mlp, tmp_path):
    """A short seeded run (8 epochs, well under a second): 2/2 accuracy above PTQ's; the saved .lbm
    validates, and the integer reference's logits equal the trainer's own quantized forward on all 540
    test images exactly (integers compared with ==)."""
    xtr, ytr, xte, yte = digits
    result = train_qat(mlp, xtr, ytr, weight_bits=2, act_bits=2, epochs=8, lr=3e-3, seed=0)
    ptq = quantize_net(mlp, xtr, weight_bits=2, act_bits=2)
    assert _acc(result.model, xte, yte) > _acc(ptq, xte, yte) + 0.05
    result.model.save(tmp_path / "q.lbm")
    model = Model.load(tmp_path / "q.lbm")
    assert isinstance(model.layers[1].requant, Thresholds) and model.layers[1].requant.thresholds.shape == (32, 3)
    ref = run(model, model.quantize_input(xte))
    assert np.array_equal(ref, result.net.predict_logits(xte))
    again = train_qat(mlp, xtr, ytr, weight_bits=2, act_bits=2, epochs=8, lr=3e-3, seed=0)
    assert np.array_equal(run(again.model, again.model.quantize_input(xte)), ref)    # deterministic


def test_qat_thresholds_reproduce_every_accumulator(digits, mlp):
    """The exported thresholds equal the trainer's activation expression for every accumulator value a
    layer can produce, not only those the data reached."""
    from lowbit.sw.ir import arith
    from lowbit.sw.quant.qat import act_codes
    xtr, ytr, _, _ = digits
    result = train_qat(mlp, xtr, ytr, weight_bits=3, act_bits=3, epochs=2)
    layer = result.model.layers[1]
    op = result.net.ops[1]
    s_in = result.model.input_q.scale[0]
    sw = np.asarray(layer.weight_q.scale)
    lo_x, hi_x = result.model.input_q.range
    w = layer.weight
    least, most = np.minimum(lo_x * w, hi_x * w).sum(0), np.maximum(lo_x * w, hi_x * w).sum(0)
    acc = np.arange(int(least.min()), int(most.max()) + 1)
    reachable = (acc[:, None] >= least) & (acc[:, None] <= most)     # per channel
    want = act_codes(acc[:, None].astype(float), s_in * sw, op.b, layer.out_q.scale[0], 0, 7)
    got = arith.multithreshold(acc[:, None] + layer.bias, layer.requant.thresholds, 0, 1)
    assert reachable.sum() > 1000
    assert np.array_equal(got[reachable], want.astype(np.int64)[reachable])


def test_qat_cnn_and_binary_are_exact_too(digits):
    """Conv2d + MaxPool at 2/2 and a binary (1/1) MLP: few epochs, logits equal the reference's."""
    xtr, ytr, xte, yte = digits
    cnn = train_cnn(xtr, ytr, epochs=5)
    for net, bits, epochs in ((cnn, 2, 3), (train_mlp(xtr, ytr, epochs=5), 1, 10)):
        result = train_qat(net, xtr, ytr, weight_bits=bits, act_bits=bits, epochs=epochs)
        m = result.model
        assert np.array_equal(run(m, m.quantize_input(xte)), result.net.predict_logits(xte))
        assert _acc(m, xte, yte) > 0.6, (net.name, bits)
    assert m.input_q.binary and m.meta["input_offset"] == pytest.approx(float(np.mean(xtr)))


def test_qat_gradients_match_finite_differences():
    """The hand-written backward pass of a conv-pool-dense-dense net: with the quantizers' STE, the
    gradient of the loss in the bias of the last layer is what a central difference gives on the
    (piecewise smooth) real logits; checked on the biases that move the loss smoothly."""
    rng = np.random.default_rng(0)
    x = rng.random((16, 6, 6, 1))
    y = rng.integers(0, 3, 16)
    net = FloatNet((6, 6, 1), [FConv2d(rng.normal(0, 0.5, (3, 3, 1, 4)), np.zeros(4), (1, 1), (1, 1)), FReLU(),
                               FMaxPool2d((2, 2)), FFlatten(), FDense(rng.normal(0, 0.3, (36, 8)), np.zeros(8)),
                               FReLU(), FDense(rng.normal(0, 0.3, (8, 3)), np.zeros(3))])
    q = QATNet(net, x, 8, 8)
    _, grads = q.loss_and_grads(x, y)
    last = q.ops[-1]
    params = q.params()
    g_b = grads[[i for i, p in enumerate(params) if p is last.b][0]]
    # The last layer's bias is rounded to its accumulator unit: step one unit either way.
    unit = q.input_q.scale[0]
    for op in q.ops:
        if hasattr(op, "log_so") and op.log_so is not None:
            unit = float(np.exp(op.log_so[0]))
    unit *= float(np.exp(last.log_sw[0]))
    num = []
    for c in range(3):
        vals = []
        for d in (-1, 1):
            last.b[c] += d * unit
            vals.append(q.loss_and_grads(x, y)[0])
            last.b[c] -= d * unit
        num.append((vals[1] - vals[0]) / (2 * unit))
    assert np.allclose(g_b, num, rtol=0.05, atol=1e-4), (g_b, num)


def test_qat_refuses_what_it_cannot_train(digits, mlp):
    xtr, ytr, _, _ = digits
    with pytest.raises(LowbitError, match="--weight-bits 1 --act-bits 1"):
        train_qat(mlp, xtr, ytr, weight_bits=1, act_bits=2)
    with pytest.raises(LowbitError, match="labels"):
        train_qat(mlp, xtr, ytr[:10], weight_bits=2, act_bits=2)
    with pytest.raises(LowbitError, match="learning rate"):
        train_qat(mlp, xtr, ytr, weight_bits=2, act_bits=2, lr=5.0)
    padded = FloatNet((8, 8, 1), [FConv2d(np.ones((3, 3, 1, 2)), np.zeros(2), (1, 1), (1, 1)), FReLU(), FFlatten(),
                                  FDense(np.ones((128, 10)), np.zeros(10))])
    with pytest.raises(LowbitError, match="cannot pad"):
        train_qat(padded, xtr, ytr, weight_bits=1, act_bits=1, epochs=1)


def test_train_cli_writes_a_model_that_eval_reads(cli, tmp_path, digits, mlp):
    xtr, ytr, xte, yte = digits
    mlp.save_npz(tmp_path / "mlp.npz")
    np.savez(tmp_path / "train.npz", x=xtr, y=ytr)
    np.savez(tmp_path / "val.npz", x=xtr[:200], y=ytr[:200])
    np.savez(tmp_path / "test.npz", x=xte, y=yte)
    out = tmp_path / "q.lbm"
    code, stdout, err = cli("train", str(tmp_path / "mlp.npz"), "--train-data", str(tmp_path / "train.npz"),
                            "--val-data", str(tmp_path / "val.npz"), "--weight-bits", "2", "--act-bits", "2",
                            "--epochs", "4", "--seed", "1", "--lr", "3e-3", "-o", str(out), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert len(result["history"]) == 4 and "val_accuracy" in result and result["seconds"] < 30
    assert "[lowbit] epoch 4/4" in err
    model = Model.load(out)
    assert model.meta["trained"] == "qat" and model.meta["seed"] == 1
    code, stdout, _ = cli("eval", str(out), "--data", str(tmp_path / "test.npz"), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] > 0.85
    np.savez(tmp_path / "nolabels.npz", x=xtr)
    code, _, err = cli("train", str(tmp_path / "mlp.npz"), "--train-data", str(tmp_path / "nolabels.npz"),
                       "--weight-bits", "2", "--act-bits", "2", "-o", str(out))
    assert code == 2 and "no labels" in err


def test_accuracy_cli_quick_computes_every_cell(cli, monkeypatch):
    """The table command in its smoke form: every column of both rows is computed (QAT at a fifth of
    the epochs). The published figures come from the full run (see test_accuracy_acceptance)."""
    from lowbit.sw.commands import accuracy
    code, stdout, err = cli("accuracy", "--quick", "--json")
    assert code == 0, err
    table = json.loads(stdout)["table"]
    assert set(table) == {"mlp", "cnn"}
    for row in table.values():
        assert all(0 <= row[c] <= 1 for c, _, _ in accuracy.COLUMNS)
        assert row["qat2"] > row["ptq2_mse"]


def test_binary_defaults_distill_from_the_float_net_on_noisy_inputs(digits, mlp):
    """Binary QAT distils the float net's softmax on inputs with Gaussian noise (0.1) by default; the
    run stays seeded (same seed, same model) and the integer network unchanged in kind (a short run)."""
    xtr, ytr, xte, yte = digits
    a = train_qat(mlp, xtr, ytr, weight_bits=1, act_bits=1, epochs=20, seed=3)
    assert a.model.meta["distill"] == 1.0 and a.model.meta["input_noise"] == 0.1
    b = train_qat(mlp, xtr, ytr, weight_bits=1, act_bits=1, epochs=20, seed=3)
    assert np.array_equal(run(a.model, a.model.quantize_input(xte)), run(b.model, b.model.quantize_input(xte)))
    assert np.array_equal(run(a.model, a.model.quantize_input(xte)), a.net.predict_logits(xte))
    assert _acc(a.model, xte, yte) > 0.8
    plain = train_qat(mlp, xtr, ytr, weight_bits=2, act_bits=2, epochs=2, lr=3e-3)
    assert plain.model.meta["distill"] == 0.0 and plain.model.meta["input_noise"] == 0.0
    with pytest.raises(LowbitError, match="distillation"):
        train_qat(mlp, xtr, ytr, weight_bits=1, act_bits=1, epochs=1, distill=2.0)


def test_accuracy_acceptance():
    """Issue 17's acceptance on the digits test split, from the command's own table (about 15 s).

    The binary MLP (64-32-10, 1/1, seed 0, 300 epochs, distilled on noisy inputs) reaches 92.22 %
    (498 of 540; the bound needs 497). Over seeds 0-5 it reaches 90.2-92.2 % (mean 91.5 %)."""
    from lowbit.sw.commands.accuracy import accuracy_table
    t = accuracy_table()
    mlp, cnn = t["mlp"], t["cnn"]
    assert mlp["qat2"] >= 0.95
    assert cnn["qat2"] >= 0.94
    assert mlp["qat1"] >= 0.92
    for row in (mlp, cnn):
        assert row["qat4"] >= row["float"] - 0.005


def test_a_qat_model_is_bit_exact_in_the_hardware_simulation(digits, mlp):
    """A trained 2/2 MLP (thresholds of 3 steps per channel) through the gateware network in Amaranth's
    simulator, four test images: outputs equal the integer reference's."""
    from test_network import run_network
    xtr, ytr, xte, _ = digits
    model = train_qat(mlp, xtr, ytr, weight_bits=2, act_bits=2, epochs=8, lr=3e-3).model
    got, ref = run_network(model, [(8, 4), (4, 2)], model.quantize_input(xte[:4]))
    assert np.array_equal(got, ref)
