"""Import ONNX QDQ models (as written by onnxruntime's ``quantize_static``) without re-quantizing.

The graph is a chain of ``QuantizeLinear``/``DequantizeLinear`` pairs around ``Gemm``, ``Conv`` and
``MatMul`` (int8 weights, per channel or per tensor, zero point 0; int32 biases at scale
``s_x * s_w``), ``Relu``, ``MaxPool`` and ``Flatten``/``Reshape``, with uint8 or int8 activations.
Each linear node becomes a lowbit layer with the *same* integer weights and biases; its output
``QuantizeLinear`` becomes a fixed-point requantization ``M / 2**s ~= s_x * s_w[n] / s_y`` with a 24-bit
``M``.

Rounding: onnxruntime computes ``round_half_to_even((acc + bias) * s_x * s_w / s_y)`` in float32;
lowbit computes round-half-up of the 24-bit fixed-point product (``docs/arithmetic.md``). Outputs can
differ by one LSB only where the scaled value lies within float32 error of a half-integer (none of the
5400 digits MLP outputs in the tests).

Not supported (refused with the node's name): a ``MatMul`` followed by an ``Add`` whose bias is
quantized separately (two requantizations per layer; export the layer as ``Gemm``), re-quantization
to a different scale after MaxPool/Flatten, non-zero weight zero points, and other operators.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import arith
from .errors import LowbitError
from .model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant
from .onnx_import import _attrs, _permute_rows

__all__ = ["load_qdq", "is_qdq"]

_INT_TYPES = {2: (8, False), 3: (8, True), 6: (32, True)}   # ONNX TensorProto: UINT8, INT8, INT32


def is_qdq(path) -> bool:
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def load_qdq(path) -> Model:
    import onnx
    from onnx import numpy_helper
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise LowbitError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    init_types = {t.name: t.data_type for t in g.initializer}
    # Constant DequantizeLinear nodes: weights and biases, as (codes, scale, zero point).
    consts = {}
    chain = []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            codes = inits[node.input[0]]
            scale = inits[node.input[1]].astype(np.float64)
            zp = inits[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale, dtype=np.int64)
            consts[node.output[0]] = (codes.astype(np.int64), scale, np.asarray(zp, dtype=np.int64),
                                      init_types[node.input[0]])
        else:
            chain.append(node)

    inputs = [i for i in g.input if i.name not in inits]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    shape = (dims[1], dims[2], dims[0]) if len(dims) == 3 else tuple(dims)
    float_shape = shape          # the shape as lowbit sees it so far (NHWC)

    input_q = None
    cur_q = None
    pending = None               # a linear layer waiting for its output QuantizeLinear
    layers = []
    flatten_chw = None

    def qspec(node):
        scale = float(inits[node.input[1]])
        zp_name = node.input[2] if len(node.input) > 2 else None
        zp = int(inits[zp_name]) if zp_name else 0
        bits, signed = _INT_TYPES.get(init_types.get(zp_name, 2), (8, False))
        return QuantSpec(bits, signed, zp, (scale,))

    for i, node in enumerate(chain):
        op = node.op_type
        where = f"{path.name}: node '{node.name or op}' ({op})"
        if op == "QuantizeLinear":
            q = qspec(node)
            if input_q is None:
                input_q = cur_q = q
            elif pending is not None:
                layer, relu, in_q = pending
                s_x, s_w = in_q.scale[0], np.asarray(layer["s_w"])
                # 24-bit multipliers: onnxruntime rescales in float32, 16 bits would round differently
                # near half-integers often enough to matter (measured: 99.76 % vs 100 % equal outputs).
                mult, shift = arith.quantize_multiplier(s_x * s_w / q.scale[0], bits=arith.MULT_BITS)
                lo, hi = q.range
                rq = Requant(mult, shift, q.zero_point, lo, hi, relu)
                w_q = QuantSpec(8, True, 0, tuple(np.broadcast_to(s_w, (layer["w"].shape[-1],))))
                if layer["kind"] == "conv":
                    layers.append(Conv2d(layer["w"], layer["b"], w_q, q, rq, layer["stride"], layer["pad"]))
                else:
                    layers.append(Dense(layer["w"], layer["b"], w_q, q, rq))
                cur_q, pending = q, None
            elif q.scale != cur_q.scale or q.zero_point != cur_q.zero_point or q.bits != cur_q.bits:
                raise LowbitError(f"{where} re-quantizes to a different scale after a MaxPool/Flatten",
                                  "lowbit keeps codes unchanged through pooling and flattening")
        elif op == "DequantizeLinear":
            continue
        elif op in ("Gemm", "MatMul", "Conv"):
            if cur_q is None:
                raise LowbitError(f"{where} is reached before any QuantizeLinear", "quantize the input")
            if pending is not None:
                raise LowbitError(f"{where} follows a layer whose output is not quantized")
            wname = node.input[1]
            if wname not in consts:
                raise LowbitError(f"{where}: the weight is not a quantized constant")
            w, s_w, z_w, _ = consts[wname]
            if np.any(z_w != 0):
                raise LowbitError(f"{where}: weight zero points must be 0 (symmetric weights)")
            attrs = _attrs(node)
            if op == "Conv":
                if attrs.get("group", 1) != 1:
                    raise LowbitError(f"{where}: grouped convolution is not supported")
                pads = attrs.get("pads", [0, 0, 0, 0])
                w_l = w.transpose(2, 3, 1, 0)
                layer = {"kind": "conv", "w": w_l, "stride": tuple(attrs.get("strides", [1, 1])),
                         "pad": (pads[0], pads[1])}
            else:
                if op == "Gemm" and attrs.get("transB", 0):
                    w = w.T
                    s_w = s_w  # per output channel either way
                layer = {"kind": "dense", "w": _permute_rows(w, flatten_chw)}
                flatten_chw = None
                nxt = chain[i + 1] if i + 1 < len(chain) else None
                if op == "MatMul" and nxt is not None and any(n.op_type == "Add" for n in chain[i + 1:i + 4]):
                    raise LowbitError(f"{where} is followed by an Add with a separately quantized bias",
                                      "export the layer as Gemm (bias inside) so it has one requantization")
            n = layer["w"].shape[-1]
            bias = np.zeros(n, dtype=np.int64)
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] not in consts or consts[node.input[2]][3] != 6:
                    raise LowbitError(f"{where}: the bias must be an int32 quantized constant")
                b, s_b, _, _ = consts[node.input[2]]
                expected = cur_q.scale[0] * np.broadcast_to(s_w, (n,))
                if not np.allclose(np.broadcast_to(s_b, (n,)), expected, rtol=1e-5):
                    raise LowbitError(f"{where}: bias scale is not input scale x weight scale")
                bias = b.astype(np.int64)
            layer["b"] = bias
            layer["s_w"] = np.broadcast_to(s_w, (n,))
            pending = (layer, False, cur_q)
        elif op == "Relu":
            if pending is None:
                raise LowbitError(f"{where}: Relu must follow Gemm/Conv/MatMul")
            pending = (pending[0], True, pending[2])
        elif op == "MaxPool":
            if any(_attrs(node).get("pads", [0, 0, 0, 0])):
                raise LowbitError(f"{where}: padded MaxPool is not supported")
            k = tuple(_attrs(node)["kernel_shape"])
            layers.append(MaxPool2d(k, tuple(_attrs(node).get("strides", k))))
        elif op in ("Flatten", "Reshape"):
            probe = tuple(shape)
            for layer in layers:
                probe = layer.out_shape(probe)
            if len(probe) == 3:
                h, w_, c = probe
                flatten_chw = (c, h, w_)
            layers.append(Flatten())
        else:
            raise LowbitError(f"{where}: unsupported operator in a QDQ model",
                              "supported: QuantizeLinear, DequantizeLinear, Gemm, Conv, MatMul, Relu, MaxPool, Flatten")
    if pending is not None:
        raise LowbitError(f"{path.name}: the last layer's output is not quantized")
    if input_q is None:
        raise LowbitError(f"{path.name} has no QuantizeLinear: it is not a QDQ model")
    return Model(shape, input_q, layers, path.stem, {"source": "onnx-qdq"}).validate()
