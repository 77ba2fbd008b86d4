import json
import zipfile

import numpy as np
import pytest

from lowbit.sw.data.digits import train_cnn, train_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.intref import run
from lowbit.sw.ir.model import Conv2d, Dense, Flatten, Model, QuantSpec, Requant, Thresholds
from lowbit.sw.quant.posttrain import quantize_net


@pytest.fixture(scope="module")
def mlp_model(digits):
    xtr, ytr, _, _ = digits
    return quantize_net(train_mlp(xtr, ytr), xtr, weight_bits=4, act_bits=4)


def test_save_load_roundtrip_is_exact(tmp_path, mlp_model, digits):
    path = tmp_path / "m.lbm"
    mlp_model.save(path)
    again = Model.load(path)
    codes = mlp_model.quantize_input(digits[2])
    assert np.array_equal(run(mlp_model, codes), run(again, codes))
    assert [l.kind for l in again.layers] == [l.kind for l in mlp_model.layers]


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "not a readable lowbit model"),
    (lambda p: p.write_bytes(b"hello"), "not a readable lowbit model"),
    (lambda p: _rewrite_json(p, lambda h: h.update(version=99)), "format version 99"),
    (lambda p: _rewrite_json(p, lambda h: h["layers"][1].update(kind="lstm")), "unknown layer kind 'lstm'"),
    (lambda p: _rewrite_json(p, lambda h: h["layers"][1]["weight_q"].update(bits=2)), "outside [-2, 1]"),
])
def test_damaged_files_are_refused_clearly(tmp_path, mlp_model, damage, message):
    path = tmp_path / "m.lbm"
    mlp_model.save(path)
    damage(path)
    with pytest.raises(LowbitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Model.load(path)


def _rewrite_json(path, change):
    import json
    with zipfile.ZipFile(path) as z:
        header = json.loads(z.read("model.json"))
        arrays = z.read("arrays.npz")
    change(header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.json", json.dumps(header))
        z.writestr("arrays.npz", arrays)


def test_reference_equals_hand_computation():
    w = np.array([[1, -2], [3, 4], [-5, 6]])
    layer = Dense(w, np.array([10, -10]), QuantSpec(4, True), QuantSpec(4, False, 2, (0.1,)),
                  Requant(np.array([1 << 15]), np.array([16]), 2, 0, 15, relu=False))
    model = Model((3,), QuantSpec(4, False, 3, (0.1,)), [layer]).validate()
    x = np.array([[0, 15, 7]])
    acc = (x - 3) @ w                       # [[-3+36-20, 6+48+24]] = [[13, 78]]
    expected = np.clip(2 + ((acc + [10, -10]) * (1 << 15) + (1 << 15)) // (1 << 16), 0, 15)
    assert run(model, x).tolist() == expected.tolist() == [[14, 15]]  # (13+10)/2 = 11.5 -> 12, +2


def test_thresholds_layer_and_binary_validation():
    w = np.array([[1, -1], [-1, 1], [1, 1]])
    binary = QuantSpec(1, True, binary=True)
    layer = Dense(w, np.array([0, 1]), binary, binary, Thresholds(np.zeros((2, 1), np.int64), -1, 2))
    logits = Dense(np.array([[1], [-1]]), np.array([0]), binary, None, None)
    model = Model((3,), binary, [layer, logits]).validate()
    out = run(model, np.array([[1, 1, 1], [-1, -1, 1]]))
    # layer 1: acc [1, 1] -> +1, +1 -> logits 0; sample 2: acc [1, 1]+[0,1] -> signs -> ...
    hidden = np.where(np.array([[1, 1], [1, 1]]) + [0, 1] >= 0, 1, -1)
    assert out.ravel().tolist() == (hidden @ np.array([[1], [-1]])).ravel().tolist()
    with pytest.raises(LowbitError, match="binary weights must be ±1, found 0"):
        Model((3,), binary, [Dense(np.zeros((3, 1), np.int64), np.zeros(1, np.int64), binary, None, None)]).validate()


def test_integer_weights_on_binary_inputs_are_refused():
    binary = QuantSpec(1, True, binary=True)
    layer = Dense(np.array([[3], [-2], [1]]), np.array([0]), QuantSpec(4, True), None, None)
    with pytest.raises(LowbitError) as info:
        Model((3,), binary, [layer]).validate()
    assert info.value.message == "layer 0 (dense): binary (±1) inputs need binary weights, these are 4-bit integers"
    assert info.value.hint == "binarize the weights too, or give the layer integer inputs"


def _binary_weight_model(rng, a_bits, a_signed, zx):
    """A padded Conv2d with ±1 weights on integer codes (zero point ``zx``), then an XNOR Dense."""
    in_q = QuantSpec(a_bits, a_signed, zx, (0.02,))
    binary = QuantSpec(1, True, binary=True)
    conv = Conv2d(rng.choice([-1, 1], (3, 3, 2, 4)), rng.integers(-50, 50, 4), binary, binary,
                  Thresholds(rng.integers(-20, 20, (4, 1)), -1, 2), stride=(1, 1), padding=(1, 1))
    dense = Dense(rng.choice([-1, 1], (4 * 4 * 4, 3)), rng.integers(-5, 5, 3), binary, None, None)
    return Model((4, 4, 2), in_q, [conv, Flatten(), dense], "w1")


@pytest.mark.parametrize("a_bits,a_signed,zx", [(8, False, 131), (8, True, -5), (4, False, 0), (2, True, 1)])
def test_binary_weights_on_integer_inputs_run_as_the_plain_dot_product(tmp_path, a_bits, a_signed, zx):
    rng = np.random.default_rng(a_bits + zx)
    model = _binary_weight_model(rng, a_bits, a_signed, zx).validate()
    lo, hi = model.input_q.range
    x = rng.integers(lo, hi + 1, (6, 4, 4, 2))
    x[0], x[1] = lo, hi
    # Independently, in float: real values (codes minus zero point) padded with real 0, convolved by
    # loops, thresholded to ±1 signs, then the ±1 dot product of the last layer.
    conv, _, dense = model.layers
    real = np.pad((x - zx).astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    acc = np.zeros((6, 4, 4, 4))
    for oy in range(4):
        for ox in range(4):
            acc[:, oy, ox] = np.einsum("bhwc,hwcn->bn", real[:, oy:oy + 3, ox:ox + 3], conv.weight.astype(np.float64))
    hidden = np.where(acc + conv.bias >= conv.requant.thresholds[:, 0], 1.0, -1.0).reshape(6, -1)
    expected = hidden @ dense.weight + dense.bias
    trace = run(model, x, intermediates=True)
    assert np.array_equal(trace[0][2], acc.astype(np.int64))          # the accumulators themselves
    assert np.array_equal(trace[-1][1], expected.astype(np.int64))
    # The .lbm file needs no new field: weight_q.binary with an integer input_q says it.
    model.save(tmp_path / "w1.lbm")
    again = Model.load(tmp_path / "w1.lbm")
    assert again.layers[0].weight_q.binary and not again.input_q.binary
    assert np.array_equal(run(again, x), trace[-1][1])
    with zipfile.ZipFile(tmp_path / "w1.lbm") as z:
        assert set(json.loads(z.read("model.json"))["layers"][0]["weight_q"]) == \
            {"bits", "signed", "zero_point", "scale", "binary"}


def test_input_shape_mismatch_is_clear(mlp_model):
    with pytest.raises(LowbitError, match=r"input data has shape \(7,\) per sample, the model expects \(8, 8, 1\)"):
        mlp_model.quantize_input(np.zeros((2, 7)))


def test_ptq_accuracy_on_digits(digits):
    """Acceptance: 8/8 within 0.5 pp of float, 4/4 per-channel MSE within 2 pp (MLP and CNN)."""
    from lowbit.sw.ir.intref import predict
    xtr, ytr, xte, yte = digits
    for net in (train_mlp(xtr, ytr), train_cnn(xtr, ytr)):
        float_acc = np.mean(np.argmax(net.forward(xte), 1) == yte)
        m8 = quantize_net(net, xtr, weight_bits=8, act_bits=8, per_channel=False, calib="minmax")
        m4 = quantize_net(net, xtr, weight_bits=4, act_bits=4, per_channel=True, calib="mse")
        acc8 = np.mean(predict(m8, xte)[1] == yte)
        acc4 = np.mean(predict(m4, xte)[1] == yte)
        assert float_acc > 0.95
        assert acc8 >= float_acc - 0.005, (net.name, float_acc, acc8)
        assert acc4 >= float_acc - 0.02, (net.name, float_acc, acc4)


def test_mismatched_bits_for_binary_are_refused(digits):
    xtr, ytr, _, _ = digits
    with pytest.raises(LowbitError, match="use --weight-bits 1 --act-bits 1"):
        quantize_net(train_mlp(xtr, ytr, epochs=1), xtr, weight_bits=1, act_bits=4)
