"""Import float ONNX models into a :class:`lowbit.sw.ir.floatnet.FloatNet` (then quantize with calibration).

Supported nodes, in a single chain from the graph input to its output: ``Gemm`` (``transB``, ``alpha``
and ``beta`` of 1), ``MatMul`` with a constant weight (optionally followed by an ``Add`` of a constant
bias), ``Conv`` (2-D, one group, symmetric pads, no dilation), ``Relu``, ``MaxPool`` (2-D, no pads),
``Flatten``/``Reshape`` to a vector, and ``BatchNormalization`` (folded into the layer before it).
Weights must be initializers. ONNX is NCHW; lowbit is NHWC, so convolution weights are transposed and
the rows of the first Dense layer after a flattened feature map are permuted from (c, h, w) order to
lowbit's (h, w, c) order. Inputs given to lowbit are NHWC: ``(N, H, W, C)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LowbitError
from ..ir.floatnet import FBatchNorm, FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU, check_input_shape

__all__ = ["load_onnx", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Conv", "Relu", "MaxPool", "Flatten", "Reshape", "BatchNormalization")


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _auto_pad(attrs) -> str:
    v = attrs.get("auto_pad", "NOTSET")
    return (v.decode() if isinstance(v, bytes) else str(v)) or "NOTSET"


def _conv_pads(path, node, attrs, kernel) -> list:
    """Explicit pads of a Conv; ``auto_pad`` is honoured where it means symmetric padding (VALID, or SAME_*
    with stride 1 and odd kernels) and refused by name otherwise."""
    mode = _auto_pad(attrs)
    if mode == "NOTSET":
        return list(attrs.get("pads", [0, 0, 0, 0]))
    if mode == "VALID":
        return [0, 0, 0, 0]
    if mode in ("SAME_UPPER", "SAME_LOWER") and all(s == 1 for s in attrs.get("strides", [1, 1])) \
            and all(k % 2 == 1 for k in kernel):
        ph, pw = kernel[0] // 2, kernel[1] // 2
        return [ph, pw, ph, pw]
    raise LowbitError(f"{path.name}: Conv '{node.name}' uses auto_pad={mode} with strides or even kernels",
                      "export with explicit pads (auto_pad=NOTSET)")


def _initializer(path, tensor, numpy_helper) -> np.ndarray:
    """An initializer as float64; LowbitError naming it if it does not hold numbers (strings, say)."""
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception as exc:  # onnx raises several types for damaged or external tensors
        raise LowbitError(f"{path.name}: initializer '{tensor.name}' cannot be read ({type(exc).__name__})",
                          "the file is damaged or its external data is missing") from None
    if arr.dtype.kind not in "fiub":
        what = "strings" if arr.dtype.kind in "OSU" else f"{arr.dtype} values"
        raise LowbitError(f"{path.name}: initializer '{tensor.name}' holds {what}, not numbers",
                          "lowbit imports float weights; export the model with numeric initializers")
    return arr.astype(np.float64)


def load_onnx(path) -> FloatNet:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise LowbitError("the onnx package is not installed", "pip install onnx") from None
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises protobuf DecodeError and others for damaged files
        raise LowbitError(f"{path} is not a readable ONNX model ({type(exc).__name__})",
                          "the file is truncated or not ONNX") from None
    graph = model.graph
    inits = {t.name: _initializer(path, t, numpy_helper) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise LowbitError(f"{path.name}: the graph has {len(inputs)} inputs, lowbit needs exactly one")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    if any(d <= 0 for d in dims):
        raise LowbitError(f"{path.name}: input shape {dims} is not fully known", "export with a fixed input shape")
    check_input_shape(dims, path.name)          # bounded before any shape probe allocates it
    if len(dims) == 3:          # NCHW -> HWC
        shape = (dims[1], dims[2], dims[0])
        chw = (dims[0], dims[1], dims[2])
    elif len(dims) == 1:
        shape, chw = (dims[0],), None
    else:
        raise LowbitError(f"{path.name}: input rank {len(dims) + 1} is not supported", "use (N, C, H, W) or (N, K)")

    layers = []
    current = inputs[0].name
    pending_flatten_chw = None     # the (C, H, W) of a feature map flattened before the next Dense
    nodes = list(graph.node)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        op = node.op_type
        if current not in node.input:
            raise LowbitError(f"{path.name}: node {i} ({op} '{node.name}') does not follow the previous one",
                              "lowbit imports a single chain of layers")
        attrs = _attrs(node)
        const = [inits[n] for n in node.input if n in inits]
        if op == "Gemm":
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                raise LowbitError(f"{path.name}: Gemm '{node.name}' with alpha/beta != 1 or transA is not supported")
            w = inits.get(node.input[1])
            if w is None:
                raise LowbitError(f"{path.name}: Gemm '{node.name}' weight is not an initializer")
            w = w.T if attrs.get("transB", 0) else w
            b = inits.get(node.input[2], np.zeros(w.shape[1])) if len(node.input) > 2 else np.zeros(w.shape[1])
            layers.append(FDense(_permute_rows(w, pending_flatten_chw), np.broadcast_to(b, (w.shape[1],)).copy()))
            pending_flatten_chw = None
        elif op == "MatMul":
            if len(const) != 1 or node.input[1] not in inits:
                raise LowbitError(f"{path.name}: MatMul '{node.name}' needs a constant weight as second input")
            w = inits[node.input[1]]
            b = np.zeros(w.shape[1])
            if i + 1 < len(nodes) and nodes[i + 1].op_type == "Add" and node.output[0] in nodes[i + 1].input:
                add = nodes[i + 1]
                bias = [inits[n] for n in add.input if n in inits]
                if len(bias) != 1:
                    raise LowbitError(f"{path.name}: Add '{add.name}' after MatMul needs one constant bias")
                b = np.broadcast_to(bias[0], (w.shape[1],)).copy()
                node = add
                i += 1
            layers.append(FDense(_permute_rows(w, pending_flatten_chw), b))
            pending_flatten_chw = None
        elif op == "Conv":
            w = inits.get(node.input[1])
            if w is None or w.ndim != 4:
                raise LowbitError(f"{path.name}: Conv '{node.name}' needs a constant 2-D kernel")
            if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise LowbitError(f"{path.name}: Conv '{node.name}' with groups or dilation is not supported")
            pads = _conv_pads(path, node, attrs, w.shape[2:])
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise LowbitError(f"{path.name}: Conv '{node.name}' has asymmetric pads {pads}")
            b = inits.get(node.input[2], np.zeros(w.shape[0])) if len(node.input) > 2 else np.zeros(w.shape[0])
            layers.append(FConv2d(w.transpose(2, 3, 1, 0), b, tuple(attrs.get("strides", [1, 1])), (pads[0], pads[1])))
        elif op == "Relu":
            layers.append(FReLU())
        elif op == "MaxPool":
            if any(attrs.get("pads", [0, 0, 0, 0])) or _auto_pad(attrs) not in ("NOTSET", "VALID"):
                raise LowbitError(f"{path.name}: MaxPool '{node.name}' with padding is not supported")
            k = tuple(attrs["kernel_shape"])
            stride = tuple(attrs.get("strides", k))
            if attrs.get("ceil_mode", 0):
                probe = np.zeros((1, *shape))
                for layer in layers:
                    probe = layer.forward(probe)
                if len(probe.shape) != 4 or any((n - kk) % st for n, kk, st in zip(probe.shape[1:3], k, stride)):
                    raise LowbitError(f"{path.name}: MaxPool '{node.name}' uses ceil_mode=1 on a map whose windows "
                                      "do not tile it exactly", "export with ceil_mode=0 (lowbit pools in floor mode)")
            layers.append(FMaxPool2d(k, stride))
        elif op in ("Flatten", "Reshape"):
            probe = np.zeros((1, *shape))
            for layer in layers:          # shape of the map being flattened (layers are not modified)
                probe = layer.forward(probe)
            net_shape = probe.shape[1:]
            if op == "Reshape":
                target = inits.get(node.input[1]) if len(node.input) > 1 else None
                size = int(np.prod(net_shape))
                if target is None or target.ndim != 1 or len(target) != 2 or int(target[1]) not in (-1, size) \
                        or int(target[0]) not in (-1, 0, 1):
                    got = "a computed shape" if target is None else tuple(int(v) for v in np.ravel(target))
                    raise LowbitError(f"{path.name}: Reshape '{node.name}' to {got} is not a flatten",
                                      "lowbit reads Reshape only as (N, -1); export a Flatten")
            if op == "Flatten" and attrs.get("axis", 1) != 1:
                raise LowbitError(f"{path.name}: Flatten '{node.name}' with axis={attrs['axis']} is not supported",
                                  "flatten from axis 1")
            if len(net_shape) == 3:
                h, w_, c = net_shape
                pending_flatten_chw = (c, h, w_)
            layers.append(FFlatten())
        elif op == "BatchNormalization":
            scale, bias, mean, var = (inits.get(n) for n in node.input[1:5])
            if any(v is None for v in (scale, bias, mean, var)):
                raise LowbitError(f"{path.name}: BatchNormalization '{node.name}' parameters must be initializers")
            layers.append(FBatchNorm(scale, bias, mean, var, float(attrs.get("epsilon", 1e-5))))
        else:
            raise LowbitError(f"{path.name}: unsupported ONNX operator {op} (node '{node.name}')",
                              f"supported: {', '.join(SUPPORTED_OPS)}")
        current = node.output[0]
        i += 1
    if current != graph.output[0].name:
        raise LowbitError(f"{path.name}: the chain of nodes does not end at the graph output")
    return FloatNet(shape, layers, path.stem)


def _permute_rows(w, chw):
    """Rows of a Dense weight after flattening a (C, H, W) map, reordered to lowbit's (H, W, C)."""
    if chw is None:
        return w
    c, h, wd = chw
    if w.shape[0] != c * h * wd:
        raise LowbitError(f"Dense layer expects {w.shape[0]} inputs after a flattened {c}x{h}x{wd} map")
    return w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
