"""``lowbit quantize`` / ``lowbit eval`` agree with the library, bit for bit."""

import json

import numpy as np
import pytest

from lowbit.sw.data.demo_models import binary_mlp_forward, train_binary_mlp
from lowbit.sw.data.digits import digits_split, train_mlp
from lowbit.sw.ir.intref import predict, run
from lowbit.sw.ir.model import Model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qe")
    xtr, ytr, xte, yte = digits_split()
    np.savez(tmp / "train.npz", x=xtr)
    np.savez(tmp / "test.npz", x=xte, y=yte)
    train_mlp(xtr, ytr, epochs=10).save_npz(tmp / "mlp.npz")
    train_binary_mlp(xtr, ytr, epochs=30).save_npz(tmp / "bnn.npz")
    return tmp


def test_binary_net_through_the_cli_is_the_trained_net(cli, files):
    code, out, err = cli("quantize", str(files / "bnn.npz"), "--calib-data", str(files / "train.npz"),
                         "--weight-bits", "1", "--act-bits", "1", "-o", str(files / "bnn.lbm"), "--json")
    assert code == 0, err
    model = Model.load(files / "bnn.lbm")
    from lowbit.sw.ir.floatnet import FloatNet
    _, _, xte, yte = digits_split()
    oracle = binary_mlp_forward(FloatNet.load_npz(files / "bnn.npz"), xte, model.meta["input_offset"])
    assert np.array_equal(run(model, model.quantize_input(xte)), oracle)
    code, out, err = cli("eval", str(files / "bnn.lbm"), "--data", str(files / "test.npz"), "--json")
    result = json.loads(out)
    assert code == 0 and result["n"] == 540
    assert result["accuracy"] == float(np.mean(np.argmax(oracle, 1) == yte))
    assert sum(c["correct"] for c in result["per_class"].values()) == round(result["accuracy"] * 540)


def test_eval_accuracy_is_the_reference_accuracy(cli, files):
    code, _, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "train.npz"),
                       "--weight-bits", "8", "--act-bits", "8", "--calib", "minmax", "-o", str(files / "m8.lbm"))
    assert code == 0, err
    code, out, _ = cli("eval", str(files / "m8.lbm"), "--data", str(files / "test.npz"), "--json")
    _, _, xte, yte = digits_split()
    assert json.loads(out)["accuracy"] == float(np.mean(predict(Model.load(files / "m8.lbm"), xte)[1] == yte))


def test_eval_of_a_float_model_equals_quantize_then_eval(cli, files):
    code, _, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "train.npz"),
                       "-o", str(files / "default.lbm"))
    assert code == 0, err
    _, out_lbm, _ = cli("eval", str(files / "default.lbm"), "--data", str(files / "test.npz"), "--json")
    _, out_float, _ = cli("eval", str(files / "mlp.npz"), "--calib-data", str(files / "train.npz"),
                          "--data", str(files / "test.npz"), "--json")
    assert json.loads(out_lbm)["predictions"] == json.loads(out_float)["predictions"]
    assert json.loads(out_lbm)["accuracy"] == json.loads(out_float)["accuracy"]


def test_eval_save_outputs_writes_the_reference_outputs(cli, files):
    code, _, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "train.npz"),
                       "-o", str(files / "so.lbm"))
    assert code == 0, err
    code, out, err = cli("eval", str(files / "so.lbm"), "--data", str(files / "test.npz"),
                         "--save-outputs", str(files / "so_out.npz"), "--json")
    assert code == 0, err
    model = Model.load(files / "so.lbm")
    _, _, xte, yte = digits_split()
    expected = run(model, model.quantize_input(xte))
    with np.load(files / "so_out.npz") as z:
        assert z["outputs"].shape == (540, 10) and np.array_equal(z["outputs"], expected)
        assert np.array_equal(z["argmax"], np.argmax(expected, 1))
        assert json.loads(out)["accuracy"] == float(np.mean(z["argmax"] == yte))


@pytest.mark.parametrize("labels", [[42], [-1], [10]])
def test_eval_refuses_labels_outside_the_models_outputs(cli, files, tmp_path, labels):
    code, _, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "train.npz"),
                       "-o", str(files / "lab.lbm"))
    _, _, xte, yte = digits_split()
    y = yte[:20].copy()
    y[3:3 + len(labels)] = labels
    np.savez(tmp_path / "bad.npz", x=xte[:20], y=y)
    code, out, err = cli("eval", str(files / "lab.lbm"), "--data", str(tmp_path / "bad.npz"),
                         "--save-outputs", str(tmp_path / "never.npz"))
    assert code == 2 and out == ""
    assert f"label {labels[0]} (sample 3) is not one of the model's 10 outputs" in err
    assert not (tmp_path / "never.npz").exists()
