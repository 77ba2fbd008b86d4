"""QONNX (Brevitas) import: acceptance against qonnx's own executor, and its clear refusals.

The fixtures in ``tests/fixtures/brevitas/`` were exported by Brevitas and executed by qonnx once
(``make_fixtures.py``; the binary-weight, 8-bit-input ones by ``make_binary_weight_fixtures.py``);
``expected.npz`` and ``expected_w1a8.npz`` hold the executor's outputs on the 540 test images. If qonnx
is installed (the ``dev`` extra installs it), the executor is also run live on a sample, so the stored
outputs cannot drift from what qonnx computes.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from lowbit.sw.data.digits import digits_split
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.intref import predict
from lowbit.sw.ir.model import Thresholds
from lowbit.sw.importers.onnx_qonnx import is_qonnx, load_qonnx

FIX = Path(__file__).parent / "fixtures" / "brevitas"
#: A second, independently trained and exported set (dynamic batch axis, shared quantizer constants,
#: a MultiThreshold graph on float weights); see its README.md.
FIX2 = Path(__file__).parent / "fixtures" / "qonnx"
NAMES = ["digits_mlp_w4a4", "digits_mlp_w4a4_pc", "digits_mlp_mt", "digits_mlp_w4a4_ext", "digits_cnn_w4a4",
         "digits_bnn"]
#: ±1 weights on 8-bit inputs in the first layer (FINN's TFC-w1a1 / CNV-w1a1 pattern), XNOR after it.
W1A8 = ["digits_tfc_w1a8", "digits_cnv_w1a8"]


@pytest.fixture(scope="module")
def data():
    _, _, xte, yte = digits_split()
    return xte, yte, np.load(FIX / "expected.npz")


def model_input(name, x):
    """The fixture models take NCHW (CNN) or flattened (MLP) inputs; lowbit takes NHWC."""
    return x.transpose(0, 3, 1, 2) if "cnn" in name or "cnv" in name else x.reshape(len(x), -1)


@pytest.mark.parametrize("name", NAMES)
def test_brevitas_import_agrees_with_the_qonnx_executor(name, data):
    xte, yte, expected = data
    model = load_qonnx(FIX / f"{name}.onnx")
    out, ours = predict(model, xte)
    theirs = expected[name]
    agree = np.mean(ours == theirs.argmax(1))
    acc, their_acc = np.mean(ours == yte), float(expected[f"{name}_acc"])
    # The class of every image is qonnx's (so is the accuracy; the stored one is a float32).
    assert np.array_equal(ours, theirs.argmax(1)), agree
    assert abs(acc - their_acc) <= 1e-6, (acc, their_acc)
    # Stronger than argmax: integer logits times the last layer's scale are qonnx's float outputs, every
    # one within 1e-4 relative or 1e-4 of the largest logit (qonnx computes in float32: near-zero logits
    # carry its cancellation error, up to 3.2e-6 absolute on these fixtures).
    last = model.compute_layers()[-1]
    in_scale = (model.compute_layers()[-2].out_q if len(model.compute_layers()) > 1 else model.input_q).scale[0]
    real = out.reshape(len(xte), -1) * in_scale * last.weight_q.scale[0]
    close = np.isclose(real, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
    assert close.all(), close.mean()
    print(f"\n[qonnx {name}] argmax agreement {agree:.2%}, accuracy {acc:.2%} (qonnx {their_acc:.2%}), "
          f"outputs equal {close.mean():.2%}")


@pytest.mark.parametrize("name", [n for n in NAMES if n != "digits_mlp_mt"])
def test_second_fixture_set_agrees_with_its_qonnx_outputs(name, data):
    xte, yte, _ = data
    expected = np.load(FIX2 / "expected.npz")
    _, ours = predict(load_qonnx(FIX2 / f"{name}.onnx"), xte)
    assert np.array_equal(ours, expected[name].argmax(1)), np.mean(ours == expected[name].argmax(1))
    assert abs(np.mean(ours == yte) - float(expected[f"{name}_acc"])) <= 1e-6


@pytest.mark.parametrize("name", W1A8)
def test_binary_weights_on_8_bit_inputs_agree_with_the_qonnx_executor(name, data):
    xte, _, _ = data
    theirs = np.load(FIX / "expected_w1a8.npz")[name]
    model = load_qonnx(FIX / f"{name}.onnx")
    first = model.compute_layers()[0]
    assert first.weight_q.binary and not model.input_q.binary and model.input_q.bits == 8
    assert set(np.unique(first.weight)) == {-1, 1}
    if "cnv" in name:     # the padded taps hold the input zero point, which is not 0 here
        assert first.padding == (1, 1) and model.input_q.zero_point != 0
    out, ours = predict(model, xte)
    out = out.reshape(len(xte), -1)
    last = model.compute_layers()[-1]
    unit = model.compute_layers()[-2].out_q.scale[0] * last.weight_q.scale[0]
    # Every integer logit of every image is qonnx's float output in units of the last layer's scale, so
    # the first layer's ±1 x 8-bit sums crossed each BatchNorm-sign boundary exactly where qonnx's did;
    # qonnx's float32 error stays far below half a unit.
    assert np.abs(theirs / unit - out).max() < 1e-3
    assert np.array_equal(out, np.rint(theirs / unit).astype(np.int64))
    # Equal integer logits tie, and qonnx's float32 rounding breaks ties its own way: the class is
    # compared wherever the largest logit is unique.
    unique = (out == out.max(1, keepdims=True)).sum(1) == 1
    assert unique.mean() > 0.9 and np.array_equal(ours[unique], theirs.argmax(1)[unique])


def test_binary_weight_fixture_check_can_fail(data):
    # The comparison above is not vacuous: one sign flipped in the first layer's ±1 weights changes
    # some image's logits.
    xte, _, _ = data
    theirs = np.load(FIX / "expected_w1a8.npz")["digits_tfc_w1a8"]
    model = load_qonnx(FIX / "digits_tfc_w1a8.onnx")
    first = model.layers[0]
    w = first.weight.copy()
    w[np.argmax(xte.reshape(len(xte), -1).sum(0)), 0] *= -1
    model.layers[0] = type(first)(w, first.bias, first.weight_q, first.out_q, first.requant)
    out, _ = predict(model, xte)
    unit = model.layers[0].out_q.scale[0] * model.layers[1].weight_q.scale[0]
    assert not np.array_equal(out.reshape(len(xte), -1), np.rint(theirs / unit).astype(np.int64))


def test_multithreshold_on_unquantized_float_weights_is_refused_by_name():
    # FINN-streamlined graphs keep integer-valued float weights without a Quant node; lowbit does not
    # infer a quantization from values, it says which weight is not quantized.
    with pytest.raises(LowbitError, match="MatMul_fc1.*the weight is not a quantized constant"):
        load_qonnx(FIX2 / "digits_mlp_mt.onnx")


def test_imported_layers_use_the_forms_they_should():
    mlp = load_qonnx(FIX / "digits_mlp_w4a4.onnx")
    assert [l.kind for l in mlp.layers] == ["dense", "dense"]
    assert isinstance(mlp.layers[0].requant, Thresholds) and mlp.layers[0].requant.thresholds.shape == (32, 15)
    assert mlp.layers[1].requant is None and mlp.layers[0].weight_q.bits == 4
    assert np.abs(mlp.layers[0].weight).max() <= 7            # narrow range
    pc = load_qonnx(FIX / "digits_mlp_w4a4_pc.onnx")
    assert len(set(pc.layers[0].weight_q.scale)) == 32
    cnn = load_qonnx(FIX / "digits_cnn_w4a4.onnx")
    assert [l.kind for l in cnn.layers] == ["conv2d", "maxpool2d", "flatten", "dense"]
    assert cnn.input_shape == (8, 8, 1)
    bnn = load_qonnx(FIX / "digits_bnn.onnx")
    assert bnn.input_q.binary and bnn.layers[0].weight_q.binary and bnn.layers[0].out_q.binary
    assert bnn.meta["input_offset"] == 0.5
    assert is_qonnx(FIX / "digits_bnn.onnx") and not is_qonnx(FIX / "make_fixtures.py")


def test_live_qonnx_executor_matches_the_stored_outputs(data):
    pytest.importorskip("qonnx")
    import qonnx.core.onnx_exec as onnx_exec
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    xte, _, expected = data
    make = onnx_exec.qonnx_make_model

    def ir10(graph, **kw):              # onnxruntime 1.31 refuses onnx 1.23's IR 14 (see make_fixtures.py)
        m = make(graph, **kw)
        m.ir_version = min(m.ir_version, 10)
        return m

    onnx_exec.qonnx_make_model = ir10
    w1a8 = np.load(FIX / "expected_w1a8.npz")
    try:
        for name, stored in (("digits_mlp_mt", expected), ("digits_cnn_w4a4", expected), ("digits_bnn", expected),
                             ("digits_tfc_w1a8", w1a8), ("digits_cnv_w1a8", w1a8)):
            w = ModelWrapper(str(FIX / f"{name}.onnx")).transform(InferShapes())
            xs = model_input(name, xte[:20])
            got = np.concatenate([onnx_exec.execute_onnx(w, {w.graph.input[0].name: xi[None]})[w.graph.output[0].name]
                                  for xi in xs])
            assert np.allclose(got, stored[name][:20], rtol=1e-5, atol=1e-6), name
    finally:
        onnx_exec.qonnx_make_model = make


def test_eval_cli_reads_a_qonnx_model(tmp_path):
    _, _, xte, yte = digits_split()
    np.savez(tmp_path / "d.npz", x=xte, y=yte)
    proc = subprocess.run([sys.executable, "-m", "lowbit.sw.cli", "eval", str(FIX / "digits_bnn.onnx"), "--data",
                           str(tmp_path / "d.npz"), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 540 and result["accuracy"] == 486 / 540     # 90.00 %, as qonnx's executor


# -- refusals -----------------------------------------------------------------------------------------

def edited(tmp_path, edit, name="digits_mlp_w4a4"):
    m = onnx.load(str(FIX / f"{name}.onnx"))
    edit(m.graph)
    path = tmp_path / "edited.onnx"
    onnx.save(m, str(path))
    return path


def _set_init(g, name, value):
    for i, t in enumerate(g.initializer):
        if t.name == name:
            g.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
            return
    raise KeyError(name)


def _node(g, op, nth=0):
    return [n for n in g.node if n.op_type == op][nth]


def test_missing_external_data_is_named(tmp_path):
    (tmp_path / "m.onnx").write_bytes((FIX / "digits_mlp_w4a4_ext.onnx").read_bytes())
    with pytest.raises(LowbitError, match="external data file 'digits_mlp_w4a4_ext.onnx.data' .* is missing"):
        load_qonnx(tmp_path / "m.onnx")


def test_truncated_external_data_is_refused(tmp_path):
    (tmp_path / "digits_mlp_w4a4_ext.onnx").write_bytes((FIX / "digits_mlp_w4a4_ext.onnx").read_bytes())
    data = (FIX / "digits_mlp_w4a4_ext.onnx.data").read_bytes()
    (tmp_path / "digits_mlp_w4a4_ext.onnx.data").write_bytes(data[: len(data) // 2])
    with pytest.raises(LowbitError, match="external data|cannot be read"):
        load_qonnx(tmp_path / "digits_mlp_w4a4_ext.onnx")


@pytest.mark.parametrize("case,match", [
    ("unknown-op", r"'sigmoid' \(Sigmoid\): unsupported operator in a QONNX model"),
    ("weight-9-bits", "bit width 9 is not supported"),
    ("weight-zero-point", "weight zero points must be 0"),
    ("nan-weight", "weights contain NaN"),
    ("negative-scale", "scale must be finite and positive"),
    ("per-channel-logits", "the last layer must end in a plain"),
    ("unquantized-hidden", "follows a layer whose output is not quantized"),
    ("unquantized-input", "the input is not quantized"),
])
def test_unsupported_or_malformed_graphs_are_refused_by_name(tmp_path, case, match):
    def edit(g):
        relu_quant = _node(g, "Quant", 3)     # input, fc1 weight, fc1 bias, then the ReLU's Quant
        fc2_wq = _node(g, "Quant", 4)
        if case == "unknown-op":
            relu = _node(g, "Relu")
            relu.op_type, relu.name = "Sigmoid", "sigmoid"
        elif case == "weight-9-bits":
            _set_init(g, _node(g, "Quant", 1).input[3], 9.0)
        elif case == "weight-zero-point":
            zp = "zp_one"
            g.initializer.append(numpy_helper.from_array(np.float32(1.0), zp))
            _node(g, "Quant", 1).input[2] = zp
        elif case == "nan-weight":
            w = numpy_helper.to_array(next(t for t in g.initializer if t.name == "fc1.weight")).copy()
            w[0, 0] = np.nan
            _set_init(g, "fc1.weight", w)
        elif case == "negative-scale":
            _set_init(g, relu_quant.input[1], -0.5)
        elif case == "per-channel-logits":
            g.initializer.append(numpy_helper.from_array(np.linspace(0.1, 0.2, 10).astype(np.float32)[:, None],
                                                         "pc_scale"))
            fc2_wq.input[1] = "pc_scale"
        elif case == "unquantized-hidden":
            for n in g.node:
                for j, i in enumerate(n.input):
                    if i == relu_quant.output[0]:
                        n.input[j] = relu_quant.input[0]
            g.node.remove(relu_quant)
        elif case == "unquantized-input":
            first = _node(g, "Quant", 0)
            first.op_type = "Identity"
            del first.input[1:]
            del first.attribute[:]
    with pytest.raises(LowbitError, match=match):
        load_qonnx(edited(tmp_path, edit))


def test_integer_weights_on_binary_inputs_are_refused(tmp_path):
    # digits_bnn with its first weight quantized to 4 bits instead of ±1: no layer computes that.
    def edit(g):
        wq = _node(g, "BipolarQuant", 1)
        assert wq.input[0] == "fc1.weight"
        wq.op_type = "Quant"
        wq.domain = "qonnx.custom_op.general"
        wq.input.extend(["wq_z", "wq_b"])
        wq.attribute.extend([helper.make_attribute("signed", 1), helper.make_attribute("narrow", 1),
                             helper.make_attribute("rounding_mode", "ROUND")])
        g.initializer.extend([numpy_helper.from_array(np.float32(0.0), "wq_z"),
                              numpy_helper.from_array(np.float32(4.0), "wq_b")])
    with pytest.raises(LowbitError, match=r"MatMul.*binary \(BipolarQuant\) inputs need binary weights, this "
                                          r"weight is a 4-bit Quant"):
        load_qonnx(edited(tmp_path, edit, "digits_bnn"))


def test_requantizing_after_maxpool_is_refused(tmp_path):
    def edit(g):
        pool = _node(g, "MaxPool")
        q = helper.make_node("Quant", [pool.output[0], "rq_s", "rq_z", "rq_b"], ["requantized"], name="requant",
                             domain="qonnx.custom_op.general", signed=0, narrow=0, rounding_mode="ROUND")
        for n in g.node:
            for j, i in enumerate(n.input):
                if i == pool.output[0]:
                    n.input[j] = "requantized"
        g.initializer.extend([numpy_helper.from_array(np.float32(0.5), "rq_s"),
                              numpy_helper.from_array(np.float32(0.0), "rq_z"),
                              numpy_helper.from_array(np.float32(4.0), "rq_b")])
        idx = list(g.node).index(pool)
        g.node.insert(idx + 1, q)
    with pytest.raises(LowbitError, match="re-quantizes codes that are already quantized"):
        load_qonnx(edited(tmp_path, edit, "digits_cnn_w4a4"))


def test_multithreshold_overflowing_its_dtype_is_refused(tmp_path):
    def edit(g):
        mt = _node(g, "MultiThreshold")
        for a in mt.attribute:
            if a.name == "out_dtype":
                a.s = b"UINT3"
    with pytest.raises(LowbitError, match="15 thresholds from code 0 overflow UINT3"):
        load_qonnx(edited(tmp_path, edit, "digits_mlp_mt"))


@pytest.mark.parametrize("name,arrays", [
    ("digits_mlp_w4a4", [(8, 4), (4, 2)]), ("digits_bnn", [(16, 4), (8, 5)]), ("digits_cnn_w4a4", [(3, 4), (8, 2)]),
    ("digits_tfc_w1a8", [(8, 4), (8, 5)]), ("digits_cnv_w1a8", [(4, 3), (8, 2)]),
])
def test_imported_qonnx_models_run_bit_exactly_in_hardware(name, arrays, data):
    from test_network import run_network
    xte, _, _ = data
    model = load_qonnx(FIX / f"{name}.onnx")
    got, ref = run_network(model, arrays, model.quantize_input(xte[:3]))
    assert np.array_equal(got, ref)
