"""Float ONNX import: models built with onnx.helper from trained nets; onnxruntime is the float oracle."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.sw.data.digits import train_cnn, train_mlp
from lowbit.sw.errors import LowbitError
from lowbit.sw.quant.load import load_model
from lowbit.sw.importers.onnx_float import load_onnx


def _save(nodes, inits, in_shape, out_shape, path):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def mlp_onnx(net, path, batchnorm=False):
    w1, b1 = net.layers[1].weight, net.layers[1].bias
    w2, b2 = net.layers[3].weight, net.layers[3].bias
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1)]
    inits = {"w1": w1.T, "b1": b1, "w2": w2, "b2": b2}
    last = "h"
    if batchnorm:
        nodes.append(helper.make_node("BatchNormalization", ["h", "g", "be", "m", "v"], ["hb"], epsilon=1e-5))
        inits.update(g=np.full(32, 2.0), be=np.full(32, 0.1), m=np.full(32, 0.05), v=np.full(32, 4.0))
        last = "hb"
    nodes += [helper.make_node("Relu", [last], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["mm"]),
              helper.make_node("Add", ["mm", "b2"], ["y"])]
    _save(nodes, inits, [1, 1, 8, 8], [1, 10], path)


def cnn_onnx(net, path):
    conv, dense = net.layers[0], net.layers[4]
    c = conv.weight.shape[3]
    # lowbit flattens (h, w, c); ONNX flattens (c, h, w): reorder the Dense rows for the ONNX file.
    w_onnx = dense.weight.reshape(3, 3, c, 10).transpose(2, 0, 1, 3).reshape(-1, 10)
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wd", "bd"], ["y"])]
    _save(nodes, {"wc": conv.weight.transpose(3, 2, 0, 1), "bc": conv.bias, "wd": w_onnx, "bd": dense.bias},
          [1, 1, 8, 8], [1, 10], path)


def _ort(path, x_nhwc):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path))
    return np.concatenate([sess.run(None, {"x": x.transpose(2, 0, 1)[None].astype(np.float32)})[0] for x in x_nhwc])


@pytest.mark.parametrize("kind", ["mlp", "mlp-bn", "cnn"])
def test_imported_float_net_matches_onnxruntime(digits, tmp_path, kind):
    xtr, ytr, xte, _ = digits
    path = tmp_path / f"{kind}.onnx"
    if kind == "cnn":
        cnn_onnx(train_cnn(xtr, ytr, epochs=3), path)
    else:
        mlp_onnx(train_mlp(xtr, ytr, epochs=3), path, batchnorm=kind == "mlp-bn")
    net = load_onnx(path)
    ours = net.forward(xte[:20])
    np.testing.assert_allclose(ours, _ort(path, xte[:20]), rtol=1e-4, atol=1e-4)  # float model, float32 ORT


def test_onnx_model_quantizes_and_keeps_accuracy(digits, tmp_path):
    from lowbit.sw.ir.intref import predict
    xtr, ytr, xte, yte = digits
    net = train_mlp(xtr, ytr)
    mlp_onnx(net, tmp_path / "m.onnx")
    model = load_model(tmp_path / "m.onnx", xtr, weight_bits=8, act_bits=8, per_channel=False, calib="minmax")
    float_acc = np.mean(np.argmax(net.forward(xte), 1) == yte)
    assert np.mean(predict(model, xte)[1] == yte) >= float_acc - 0.005


def test_unsupported_operator_and_damaged_file(tmp_path):
    _save([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Sigmoid", ["f"], ["y"])], {},
          [1, 1, 8, 8], [1, 64], tmp_path / "s.onnx")
    with pytest.raises(LowbitError, match=r"unsupported ONNX operator Sigmoid .*supported: Gemm, MatMul"):
        load_onnx(tmp_path / "s.onnx")
    (tmp_path / "t.onnx").write_bytes((tmp_path / "s.onnx").read_bytes()[:40])
    with pytest.raises(LowbitError, match="not a readable ONNX model"):
        load_onnx(tmp_path / "t.onnx")
