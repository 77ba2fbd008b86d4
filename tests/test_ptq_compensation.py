"""Error compensation in post-training quantization: bias correction, range equalisation, AdaRound."""

import json

import numpy as np
import pytest

from lowbit.sw.quant.adaround import adaround_codes, layer_output_mse
from lowbit.sw.data.digits import train_cnn, train_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.floatnet import FDense
from lowbit.sw.ir.intref import predict
from lowbit.sw.ir.model import Model
from lowbit.sw.quant.posttrain import equalize_net, error_report, quantize_net


@pytest.fixture(scope="module")
def nets(digits):
    xtr, ytr, _, _ = digits
    return {"mlp": train_mlp(xtr, ytr), "cnn": train_cnn(xtr, ytr)}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_bias_correction_reduces_every_layers_error(digits, nets, kind):
    """At 2/2 the mean-error correction lowers each layer's output MSE on the calibration data and raises
    its SQNR, and the accuracy on the test split does not fall."""
    xtr, _, xte, yte = digits
    net = nets[kind]
    plain = quantize_net(net, xtr, weight_bits=2, act_bits=2)
    corrected = quantize_net(net, xtr, weight_bits=2, act_bits=2, bias_correction=True)
    before, after = error_report(net, plain, xtr), error_report(net, corrected, xtr)
    assert len(before) == len(after) == 2
    for b, a in zip(before, after):
        assert a.mse < b.mse and a.sqnr_db > b.sqnr_db, (kind, b, a)
    # Only the biases change: same weights, same requantization.
    for lp, lc in zip(plain.compute_layers(), corrected.compute_layers()):
        assert np.array_equal(lp.weight, lc.weight) and not np.array_equal(lp.bias, lc.bias)
    acc = [np.mean(predict(m, xte)[1] == yte) for m in (plain, corrected)]
    assert acc[1] >= acc[0], acc


def test_equalize_keeps_the_function_and_evens_the_ranges(digits, nets):
    xtr, _, xte, _ = digits
    for net in nets.values():
        eq, scale = equalize_net(net)
        assert np.allclose(eq.forward(xte), net.forward(xte), rtol=0, atol=1e-9)
        first = [i for i, s in enumerate(scale) if s is not None]
        assert first == [0 if net.name == "digits-cnn" else 1]
        i = first[0]
        # Equalised, channel c has the same weight range in both layers (a two-layer chain converges in
        # one sweep); it did not before.
        n = scale[i].size
        j = max(k for k, layer in enumerate(net.layers) if hasattr(layer, "weight"))
        def ranges(m):
            w2 = m.layers[j].weight
            return np.max(np.abs(m.layers[i].weight.reshape(-1, n)), axis=0), \
                np.max(np.abs(w2.reshape(-1, n, w2.shape[-1])), axis=(0, 2))
        r1, r2 = ranges(eq)
        assert np.allclose(r1, r2, rtol=1e-9)
        r1, r2 = ranges(net)
        assert not np.allclose(r1, r2, rtol=0.1)
        # The report maps the equalised layer's outputs back to the original units.
        rep = error_report(net, quantize_net(eq, xtr, weight_bits=8, act_bits=8), xtr, scale)
        assert all(r.sqnr_db > 30 for r in rep), rep
        # The original net's own outputs are not the equalised net's (so without scales the report differs).
        assert not np.allclose(eq.forward(xtr, intermediates=True)[i], net.forward(xtr, intermediates=True)[i])


def test_adaround_beats_nearest_rounding_and_is_reproducible(digits, nets):
    """On the MLP's first layer at 2 bits: the learned codes give a smaller layer output MSE than
    rounding to nearest, on the calibration rows and on the held-out test rows; same seed, same codes."""
    xtr, _, xte, _ = digits
    dense = nets["mlp"].layers[1]
    assert isinstance(dense, FDense)
    w, b = dense.weight, dense.bias
    scale = np.max(np.abs(w), axis=0)  # 2-bit narrow range: codes -1, 0, 1
    # The layer's quantized inputs: 2-bit codes of the pixels (scale 1/3), as quantize_net gives it.
    q = lambda x: np.round(x.reshape(len(x), -1) * 3) / 3
    codes = adaround_codes(w, scale, 2, q(xtr), xtr.reshape(len(xtr), -1), b, relu=True, iters=600, seed=1)
    assert codes.dtype == np.int64 and codes.min() >= -1 and codes.max() <= 1
    nearest = np.clip(np.round(w / scale), -1, 1).astype(np.int64)
    assert not np.array_equal(codes, nearest)
    for x in (xtr, xte):
        learned_mse = layer_output_mse(codes, scale, q(x), x.reshape(len(x), -1), w, b, True)
        nearest_mse = layer_output_mse(nearest, scale, q(x), x.reshape(len(x), -1), w, b, True)
        assert learned_mse < 0.8 * nearest_mse, (learned_mse, nearest_mse)
    again = adaround_codes(w, scale, 2, q(xtr), xtr.reshape(len(xtr), -1), b, relu=True, iters=600, seed=1)
    assert np.array_equal(codes, again)


def test_adaround_in_quantize_net_lowers_the_layer_errors(digits, nets):
    xtr, _, _, _ = digits
    net = nets["cnn"]
    plain = error_report(net, quantize_net(net, xtr, weight_bits=2, act_bits=2), xtr)
    learned = quantize_net(net, xtr, weight_bits=2, act_bits=2, adaround=True, seed=0)
    assert learned.meta["adaround"] is True
    after = error_report(net, learned.validate(), xtr)
    assert after[-1].mse < plain[-1].mse


def test_compensation_of_a_binary_network_is_refused(digits, nets):
    xtr, _, _, _ = digits
    with pytest.raises(LowbitError, match="not a binary"):
        quantize_net(nets["mlp"], xtr, weight_bits=1, act_bits=1, bias_correction=True)


def test_quantize_cli_compensation_flags_report_before_and_after(cli, tmp_path, digits, nets):
    xtr, ytr, _, _ = digits
    nets["mlp"].save_npz(tmp_path / "mlp.npz")
    np.savez(tmp_path / "calib.npz", x=xtr, y=ytr)
    out = tmp_path / "m.lbm"
    code, stdout, err = cli("quantize", str(tmp_path / "mlp.npz"), "--calib-data", str(tmp_path / "calib.npz"),
                            "--weight-bits", "2", "--act-bits", "2", "--bias-correction", "--equalize",
                            "--report", "--json", "-o", str(out))
    assert code == 0, err
    result = json.loads(stdout)
    assert result["compensation"] == ["equalize", "bias_correction"]
    assert [r["layer"] for r in result["report"]] == [1, 2]
    for r in result["report"]:
        assert r["mse_after"] < r["mse_before"] and r["sqnr_db_after"] > r["sqnr_db_before"]
    model = Model.load(out)
    assert model.meta["bias_correction"] is True and model.meta["equalize"] is True
    code, stdout, _ = cli("quantize", str(tmp_path / "mlp.npz"), "--calib-data", str(tmp_path / "calib.npz"),
                          "--weight-bits", "2", "--act-bits", "2", "--bias-correction", "--report",
                          "-o", str(out))
    assert code == 0 and "MSE before" in stdout and "plain PTQ -> bias_correction" in stdout
    code, _, err = cli("quantize", str(tmp_path / "mlp.npz"), "--calib-data", str(tmp_path / "calib.npz"),
                       "--weight-bits", "1", "--act-bits", "1", "--adaround", "-o", str(out))
    assert code == 2 and "lowbit train" in err
