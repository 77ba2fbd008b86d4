"""ONNX QDQ import against onnxruntime: the same integer weights, outputs equal up to rounding.

Fixtures are made at test time: float models built with onnx.helper, quantized by onnxruntime's
quantize_static (QDQ, per-channel int8 weights, uint8 activations), calibrated on 200 train images.
"""

import numpy as np
import onnx
import pytest
from onnx import helper

from lowbit.sw.digits import train_cnn, train_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.intref import run
from lowbit.sw.loaders import load_model
from lowbit.sw.qdq_import import load_qdq

ort = pytest.importorskip("onnxruntime")
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_onnx_import import _save, cnn_onnx  # noqa: E402


def mlp_gemm_onnx(net, path):
    w1, b1, w2, b2 = net.layers[1].weight, net.layers[1].bias, net.layers[3].weight, net.layers[3].bias
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w1", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
    _save(nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}, [1, 1, 8, 8], [1, 10], path)


class _Reader(CalibrationDataReader):
    def __init__(self, x):
        self.it = iter([{"x": v.transpose(2, 0, 1)[None].astype(np.float32)} for v in x])

    def get_next(self):
        return next(self.it, None)


def _qdq(tmp, name, make, xtr):
    float_path, qdq_path = tmp / f"{name}.onnx", tmp / f"{name}_qdq.onnx"
    make(float_path)
    quantize_static(str(float_path), str(qdq_path), _Reader(xtr[:200]), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return qdq_path


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_qdq_outputs_equal_onnxruntime(digits, tmp_path, kind):
    xtr, ytr, xte, yte = digits
    net = (train_mlp if kind == "mlp" else train_cnn)(xtr, ytr)
    make = (lambda p: mlp_gemm_onnx(net, p)) if kind == "mlp" else (lambda p: cnn_onnx(net, p))
    path = _qdq(tmp_path, kind, make, xtr)
    model = load_qdq(path)
    sess = ort.InferenceSession(str(path))
    y_float = np.concatenate([sess.run(None, {"x": x.transpose(2, 0, 1)[None].astype(np.float32)})[0] for x in xte])
    out_q = model.layers[-1].out_q
    ort_codes = np.round(y_float / out_q.scale[0]).astype(np.int64) + out_q.zero_point
    ours = run(model, model.quantize_input(xte))
    equal = np.mean(ours == ort_codes)
    assert equal >= 0.999, equal
    assert np.max(np.abs(ours - ort_codes)) <= 1
    assert np.mean(np.argmax(ours, 1) == yte) >= np.mean(np.argmax(net.forward(xte), 1) == yte) - 0.02


def test_qdq_via_load_model_and_matmul_add_refused(digits, tmp_path):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_onnx_import import mlp_onnx   # MatMul + Add for the second layer
    xtr, ytr, _, _ = digits
    net = train_mlp(xtr, ytr, epochs=5)
    path = _qdq(tmp_path, "mm", lambda p: mlp_onnx(net, p), xtr)
    with pytest.raises(LowbitError, match="followed by an Add with a separately quantized bias"):
        load_model(path)
    ok = _qdq(tmp_path, "gemm", lambda p: mlp_gemm_onnx(net, p), xtr)
    assert load_model(ok).layers[-1].out_q.bits == 8
