"""Float ONNX import edge cases, each checked against onnxruntime (the float oracle).

Layout conversion (NCHW -> NHWC) is easy to get subtly wrong with one input channel and square,
stride-1 kernels, so these graphs use several input channels, non-square kernels, strides and pads.
Attributes lowbit does not implement must be refused with a LowbitError naming them; a silently
different float network would be quantized into a wrong model without anybody noticing.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.sw.errors import LowbitError
from lowbit.sw.importers.onnx_float import load_onnx

ort = pytest.importorskip("onnxruntime")


def _save(path, nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _compare(path, in_nchw, seed=0):
    """The imported float net on NHWC inputs equals onnxruntime on the same NCHW inputs."""
    x = np.random.default_rng(seed).uniform(0, 1, (4, *in_nchw)).astype(np.float32)
    sess = ort.InferenceSession(str(path))
    ref = np.concatenate([sess.run(None, {"x": xi[None]})[0] for xi in x]).reshape(4, -1)
    net = load_onnx(path)
    got = net.forward(x.transpose(0, 2, 3, 1).astype(np.float64)).reshape(4, -1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def _conv_dense(path, rng, conv_attrs, in_nchw, map_hw, pool_attrs=None):
    cin, cout = in_nchw[0], 3
    kh, kw = conv_attrs["kernel_shape"]
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], **conv_attrs),
             helper.make_node("Relu", ["c"], ["r"])]
    last = "r"
    if pool_attrs:
        nodes.append(helper.make_node("MaxPool", ["r"], ["p"], **pool_attrs))
        last = "p"
    nodes += [helper.make_node("Flatten", [last], ["f"]), helper.make_node("Gemm", ["f", "wd", "bd"], ["y"])]
    k = cout * map_hw[0] * map_hw[1]
    inits = {"wc": rng.normal(0, 0.5, (cout, cin, kh, kw)), "bc": rng.normal(0, 0.1, cout),
             "wd": rng.normal(0, 0.3, (k, 5)), "bd": rng.normal(0, 0.1, 5)}
    _save(path, nodes, inits, [1, *in_nchw], [1, 5])


@pytest.mark.parametrize("strides,pads,map_hw", [
    ([1, 1], [0, 0, 0, 0], (5, 5)),
    ([2, 1], [1, 0, 1, 0], (4, 5)),
    ([1, 2], [1, 1, 1, 1], (7, 4)),
])
def test_multichannel_strided_padded_conv_matches_onnxruntime(tmp_path, strides, pads, map_hw):
    # 2 input channels, 7x7 map, kernel 3x3 -> the map sizes listed.
    _conv_dense(tmp_path / "m.onnx", np.random.default_rng(1),
                dict(kernel_shape=[3, 3], strides=strides, pads=pads), (2, 7, 7), map_hw)
    _compare(tmp_path / "m.onnx", (2, 7, 7))


def test_non_square_kernel_and_pool_stride_match_onnxruntime(tmp_path):
    # conv 2x3 on 3x8x6 -> 7x4, maxpool 3x2 stride 2x1 -> 3x3.
    _conv_dense(tmp_path / "m.onnx", np.random.default_rng(2), dict(kernel_shape=[2, 3]), (3, 8, 6), (3, 3),
                dict(kernel_shape=[3, 2], strides=[2, 1]))
    _compare(tmp_path / "m.onnx", (3, 8, 6))


@pytest.mark.parametrize("mode,map_hw", [("SAME_UPPER", (6, 6)), ("SAME_LOWER", (6, 6)), ("VALID", (4, 4))])
def test_conv_auto_pad_is_honoured(tmp_path, mode, map_hw):
    _conv_dense(tmp_path / "m.onnx", np.random.default_rng(3), dict(kernel_shape=[3, 3], auto_pad=mode),
                (1, 6, 6), map_hw)
    _compare(tmp_path / "m.onnx", (1, 6, 6))


def test_conv_auto_pad_that_is_not_symmetric_is_named(tmp_path):
    _conv_dense(tmp_path / "m.onnx", np.random.default_rng(3),
                dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), (1, 6, 6), (3, 3))
    with pytest.raises(LowbitError, match="auto_pad=SAME_UPPER"):
        load_onnx(tmp_path / "m.onnx")


def test_maxpool_ceil_mode_is_named_where_it_differs_from_floor(tmp_path):
    # conv 3x3 on 7x7 -> 5x5; pool 2x2 stride 2 with ceil_mode -> 3x3 (floor would give 2x2).
    _conv_dense(tmp_path / "m.onnx", np.random.default_rng(4), dict(kernel_shape=[3, 3]), (1, 7, 7), (3, 3),
                dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))
    with pytest.raises(LowbitError, match="ceil_mode=1"):
        load_onnx(tmp_path / "m.onnx")


def test_maxpool_ceil_mode_is_accepted_where_it_equals_floor(tmp_path):
    # conv 3x3 on 6x6 -> 4x4; pool 2x2 stride 2: ceil and floor both give 2x2.
    _conv_dense(tmp_path / "m.onnx", np.random.default_rng(4), dict(kernel_shape=[3, 3]), (1, 6, 6), (2, 2),
                dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))
    _compare(tmp_path / "m.onnx", (1, 6, 6))


def test_reshape_that_is_not_a_flatten_is_refused(tmp_path):
    # (1, 4) -> Reshape to (2, 2) -> MatMul with a (2, 3) weight: not a flatten, lowbit cannot express it.
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array([2, 2], np.int64), "shape"),
                               numpy_helper.from_array(np.ones((2, 3), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(LowbitError, match=r"Reshape '' to \(2, 2\) is not a flatten"):
        load_onnx(tmp_path / "m.onnx")
