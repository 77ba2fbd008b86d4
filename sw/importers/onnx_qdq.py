"""Import ONNX QDQ models (as written by onnxruntime's ``quantize_static``) without re-quantizing.

The graph is a chain of ``QuantizeLinear``/``DequantizeLinear`` pairs around ``Gemm``, ``Conv`` and
``MatMul`` (integer weights, per channel or per tensor, zero point 0; int32 biases at scale
``s_x * s_w``), ``Relu``, ``MaxPool`` and ``Flatten``/``Reshape``, with 8- or 4-bit activations.
Each linear node becomes a lowbit layer with the *same* integer weights and biases; its output
``QuantizeLinear`` becomes a fixed-point requantization ``M / 2**s ~= s_x * s_w[n] / s_y`` with a 24-bit
``M``.

What lowbit computes is the graph as the ONNX operators define it: ``DequantizeLinear``, the float
operator, then ``QuantizeLinear``. Rounding: ONNX computes ``round_half_to_even((acc + bias) * s_x *
s_w / s_y)``; lowbit computes round-half-up of the 24-bit fixed-point product (``docs/arithmetic.md``).
Outputs can differ by one LSB only where the scaled value lies within float32 error of a half-integer.

``quantize_static`` (onnxruntime 1.17 to 1.32) writes the same graph shape for lowbit's test models;
``tests/test_qdq_import.py`` pins it. It folds a ``Relu`` between a linear node and its output
``QuantizeLinear`` into that node's output range (zero point 0, so the clamp at 0 *is* the ReLU); lowbit
reads the clamp from the range, so a folded and an explicit ``Relu`` import alike.

Every assumption is checked and a graph that breaks one is refused naming the node: the chain is one
path from the graph input to its output; a ``DequantizeLinear`` of an activation uses exactly its
``QuantizeLinear``'s scale and zero point; activation quantization is per tensor; weights are integer
constants with zero point 0 and per-channel scales along the output-channel axis; a bias is an int32
constant whose scale is ``s_x * s_w`` per channel (its zero point is folded, which is exact); ``Gemm``
has ``alpha = beta = 1`` and ``transA = 0``; ``Conv`` has no groups, dilation or asymmetric padding;
``MaxPool``/``Flatten`` keep the scale (no re-quantization after them). Also refused: a ``MatMul``
followed by an ``Add`` whose bias is quantized separately (two requantizations per layer; export the
layer as ``Gemm``), activation types wider than 8 bits, and other operators.

onnxruntime itself, with its default graph optimizations, fuses the Q/DQ pairs into integer kernels
(``QGemm``, ``QLinearConv``). On x86 CPUs without VNNI those kernels add pairs of uint8 x int8 products
in int16 with saturation (onnxruntime's documentation: "reduce_range"), so its outputs can differ from
the graph's definition there by many LSB; with graph optimizations disabled it computes the graph as
defined, which is what the tests compare with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..ir import arith
from ..errors import LowbitError
from ..ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Requant
from .onnx_float import _attrs, _auto_pad, _permute_rows

__all__ = ["load_qdq", "is_qdq"]

# ONNX TensorProto element types of quantized tensors: (bits, signed).
_INT_TYPES = {2: (8, False), 3: (8, True), 21: (4, False), 22: (4, True)}   # UINT8, INT8, UINT4, INT4
_INT32 = 6
_TYPE_NAMES = {1: "float", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 10: "float16", 16: "bfloat16",
               17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz"}
# Nodes the chain may pass through without any arithmetic.
_PASS = ("Identity",)
_LINEAR = ("Gemm", "MatMul", "Conv")
SUPPORTED = ("QuantizeLinear", "DequantizeLinear", "Gemm", "Conv", "MatMul", "Relu", "MaxPool", "Flatten",
             "Reshape", "Identity")


def is_qdq(path) -> bool:
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def _type_name(t) -> str:
    return _TYPE_NAMES.get(t, f"type {t}")


class _Graph:
    """The parts of an ONNX graph the importer reads, with one place that names a node in errors."""

    def __init__(self, path, model):
        from onnx import numpy_helper
        self.path = path
        g = model.graph
        self.inits, self.types = {}, {}
        for t in g.initializer:
            try:
                self.inits[t.name] = numpy_helper.to_array(t)
            except Exception as exc:
                raise LowbitError(f"{path.name}: initializer '{t.name}' cannot be read ({type(exc).__name__})",
                                  "the file is damaged or uses a tensor type lowbit does not read") from None
            self.types[t.name] = t.data_type
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                raise LowbitError(f"{self.where(node)} is from operator domain '{node.domain}'",
                                  "lowbit reads standard ONNX QuantizeLinear/DequantizeLinear (ai.onnx) only")

    def where(self, node) -> str:
        return f"{self.path.name}: node '{node.name or node.op_type}' ({node.op_type})"

    def scalar(self, node, index, what):
        """A per-tensor scale or zero point of ``node`` (input ``index``), as a Python number."""
        name = node.input[index] if len(node.input) > index else ""
        if not name:
            return None
        if name not in self.inits:
            raise LowbitError(f"{self.where(node)}: {what} '{name}' is not a constant",
                              "lowbit needs scales and zero points as initializers")
        value = self.inits[name]
        if value.size != 1:
            raise LowbitError(f"{self.where(node)}: {what} has {value.size} values; lowbit quantizes "
                              "activations per tensor", "quantize activations per tensor")
        return value.reshape(()).item()

    def act_spec(self, node) -> QuantSpec:
        """The QuantSpec of an activation Q/DQ node: scale, zero point and integer type."""
        scale = self.scalar(node, 1, "scale")
        zp = self.scalar(node, 2, "zero point")
        attrs = _attrs(node)
        if len(node.input) > 2 and node.input[2]:
            t = self.types[node.input[2]]
        else:
            t = attrs.get("output_dtype", 2) or 2     # ONNX: no zero point means uint8
        if t not in _INT_TYPES:
            raise LowbitError(f"{self.where(node)} quantizes to {_type_name(t)}",
                              "lowbit supports 1- to 8-bit integer activations (uint8, int8, uint4, int4)")
        if attrs.get("block_size", 0):
            raise LowbitError(f"{self.where(node)} uses blocked quantization", "quantize activations per tensor")
        if not np.isfinite(scale) or scale <= 0:
            raise LowbitError(f"{self.where(node)}: scale {scale} must be finite and positive")
        bits, signed = _INT_TYPES[t]
        return QuantSpec(bits, signed, int(zp or 0), (float(scale),))

    def const(self, node):
        """A constant DequantizeLinear: ``(codes, scale, zero point, element type, axis)``."""
        codes = self.inits[node.input[0]]
        if len(node.input) < 2 or node.input[1] not in self.inits:
            raise LowbitError(f"{self.where(node)}: the scale of a quantized constant must be an initializer")
        scale = self.inits[node.input[1]].astype(np.float64)
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in self.inits:
                raise LowbitError(f"{self.where(node)}: the zero point of a quantized constant must be an initializer")
            zp = self.inits[node.input[2]].astype(np.int64)
        else:
            zp = np.zeros_like(scale, dtype=np.int64)
        attrs = _attrs(node)
        if attrs.get("block_size", 0):
            raise LowbitError(f"{self.where(node)} uses blocked quantization",
                              "quantize weights per tensor or per output channel")
        if codes.dtype.kind not in "iu":
            raise LowbitError(f"{self.where(node)}: quantized constant '{node.input[0]}' holds {codes.dtype} values")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise LowbitError(f"{self.where(node)}: scales must be finite and positive")
        return codes.astype(np.int64), scale, zp, self.types[node.input[0]], int(attrs.get("axis", 1))


def load_qdq(path) -> Model:
    import onnx
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise LowbitError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    G = _Graph(path, model)
    g = model.graph
    inputs = [i for i in g.input if i.name not in G.inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise LowbitError(f"{path.name}: the graph has {len(inputs)} inputs and {len(g.output)} outputs",
                          "lowbit imports a chain with one input and one output")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    if not dims or any(d <= 0 for d in dims):
        raise LowbitError(f"{path.name}: input '{inputs[0].name}' has no fixed shape {dims}",
                          "export with a fixed input shape (batch may stay symbolic)")
    shape = (dims[1], dims[2], dims[0]) if len(dims) == 3 else tuple(dims)

    # Constant DequantizeLinear nodes (weights, biases) are looked up by their output name; every other
    # node must lie on the one path from the input to the output.
    consts, chain = {}, []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in G.inits:
            consts[node.output[0]] = node
        else:
            chain.append(node)

    cur = inputs[0].name          # the tensor the next chain node must consume
    state = "float"               # float (before the first Q) | codes (Q output) | deq (DQ of codes) | acc
    cur_q = input_q = None        # QuantSpec of the current codes
    pending = None                # a linear layer waiting for its output QuantizeLinear
    layers = []
    flatten_chw = None

    def check_input(node):
        if not node.input or node.input[0] != cur:
            got = node.input[0] if node.input else "nothing"
            raise LowbitError(f"{G.where(node)} reads '{got}', not '{cur}', the output of the node before it",
                              "lowbit imports a single chain of layers (no branches or skip connections)")

    for i, node in enumerate(chain):
        op = node.op_type
        where = G.where(node)
        check_input(node)
        if len(node.output) != 1:
            raise LowbitError(f"{where} has {len(node.output)} outputs", "lowbit imports single-output nodes")
        if op == "QuantizeLinear":
            q = G.act_spec(node)
            if state == "float" and input_q is None:
                input_q = cur_q = q
            elif state == "acc":
                layers.append(_linear_layer(pending, q))
                cur_q, pending = q, None
            elif state == "float":
                if q != cur_q:
                    raise LowbitError(f"{where} re-quantizes to scale {q.scale[0]:.6g}, zero point "
                                      f"{q.zero_point} after a MaxPool/Flatten (codes were scale "
                                      f"{cur_q.scale[0]:.6g}, zero point {cur_q.zero_point})",
                                      "lowbit keeps codes unchanged through pooling and flattening")
            else:
                raise LowbitError(f"{where} quantizes a tensor that is already quantized")
            state = "codes"
        elif op == "DequantizeLinear":
            if state != "codes":
                raise LowbitError(f"{where} dequantizes a tensor that is not the output of a QuantizeLinear")
            q = G.act_spec(node)
            if q != cur_q:
                raise LowbitError(f"{where} dequantizes with scale {q.scale[0]:.6g}, zero point {q.zero_point}"
                                  f", {q.bits} bits; its QuantizeLinear used {cur_q.scale[0]:.6g}, "
                                  f"{cur_q.zero_point}, {cur_q.bits} bits", "a Q/DQ pair must share its parameters")
            state = "deq"
        elif op in _LINEAR:
            if state != "deq":
                raise LowbitError(f"{where} is reached by a tensor that is not dequantized activation codes",
                                  "quantize the input and every layer output (QDQ format)")
            layer = _linear(G, node, consts, cur_q, flatten_chw)
            flatten_chw = None
            if op == "MatMul" and any(n.op_type == "Add" for n in chain[i + 1:i + 4]):
                raise LowbitError(f"{where} is followed by an Add with a separately quantized bias",
                                  "export the layer as Gemm (bias inside) so it has one requantization")
            pending = (layer, False, cur_q)
            state = "acc"
        elif op == "Relu":
            if state != "acc":
                raise LowbitError(f"{where}: Relu must follow Gemm/Conv/MatMul directly",
                                  "lowbit fuses ReLU into the layer's requantization")
            pending = (pending[0], True, pending[2])
        elif op == "MaxPool":
            if state not in ("deq", "float") or cur_q is None:
                raise LowbitError(f"{where} must follow a DequantizeLinear", "quantize the layer before pooling")
            attrs = _attrs(node)
            k = tuple(attrs["kernel_shape"])
            for name, ok in (("pads", not any(attrs.get("pads", [0] * 4))), ("ceil_mode", not attrs.get("ceil_mode", 0)),
                             ("dilations", all(d == 1 for d in attrs.get("dilations", [1, 1]))),
                             ("storage_order", not attrs.get("storage_order", 0)),
                             ("auto_pad", _auto_pad(attrs) in ("NOTSET", "VALID"))):
                if not ok:
                    raise LowbitError(f"{where}: MaxPool with {name}={attrs.get(name)} is not supported",
                                      "use an unpadded MaxPool without dilation or ceil_mode")
            layers.append(MaxPool2d(k, tuple(attrs.get("strides", k))))
            state = "float"
        elif op in ("Flatten", "Reshape"):
            _check_flatten(G, node)
            probe = tuple(shape)
            for layer in layers:
                probe = layer.out_shape(probe)
            if len(probe) == 3:
                h, w_, c = probe
                flatten_chw = (c, h, w_)
            layers.append(Flatten())
            state = "float" if state in ("float", "deq") else state
            if state != "float":
                raise LowbitError(f"{where} reshapes quantized codes or an unquantized layer output",
                                  "flatten the dequantized tensor")
        elif op in _PASS:
            pass
        else:
            raise LowbitError(f"{where}: unsupported operator in a QDQ model", "supported: " + ", ".join(SUPPORTED))
        cur = node.output[0]
    if pending is not None:
        raise LowbitError(f"{path.name}: the last layer's output is not quantized")
    if input_q is None:
        raise LowbitError(f"{path.name} has no QuantizeLinear: it is not a QDQ model")
    if cur != g.output[0].name:
        raise LowbitError(f"{path.name}: the graph output '{g.output[0].name}' is not the end of the chain ('{cur}')")
    if not any(isinstance(l, (Dense, Conv2d)) for l in layers):
        raise LowbitError(f"{path.name} has no Gemm, MatMul or Conv layer")
    return Model(shape, input_q, layers, path.stem, {"source": "onnx-qdq"}).validate()


def _check_flatten(G, node):
    where = G.where(node)
    if node.op_type == "Flatten":
        if _attrs(node).get("axis", 1) != 1:
            raise LowbitError(f"{where}: Flatten with axis {_attrs(node).get('axis')} is not supported",
                              "flatten with axis=1 (keep the batch)")
        return
    target = G.inits.get(node.input[1]) if len(node.input) > 1 else None
    flat = (target is not None and target.ndim == 1 and len(target) == 2 and int(target[0]) in (-1, 0, 1)
            and (int(target[1]) == -1 or int(target[1]) > 0))
    if not flat:
        raise LowbitError(f"{where}: only a Reshape to (batch, -1) is supported, got {None if target is None else target.tolist()}",
                          "use Flatten or Reshape to (N, -1)")


def _linear(G, node, consts, cur_q, flatten_chw) -> dict:
    """The weights, bias and geometry of a Gemm/MatMul/Conv node, with every QDQ assumption checked."""
    where, op, attrs = G.where(node), node.op_type, _attrs(node)
    if len(node.input) < 2 or node.input[1] not in consts:
        raise LowbitError(f"{where}: the weight is not a quantized constant (DequantizeLinear of an initializer)")
    w_node = consts[node.input[1]]
    w, s_w, z_w, w_type, axis = G.const(w_node)
    if w_type not in _INT_TYPES:
        raise LowbitError(f"{G.where(w_node)}: weights of type {_type_name(w_type)} are not supported",
                          "use int8, uint8, int4 or uint4 weights")
    if np.any(z_w != 0):
        raise LowbitError(f"{G.where(w_node)}: weight zero points must be 0 (symmetric weights)",
                          "quantize weights symmetrically (quantize_static's default for QInt8)")
    # Which weight axis holds the output channels, so a per-channel scale must lie along it.
    if op == "Conv":
        out_axis = 0
    elif op == "Gemm" and attrs.get("transB", 0):
        out_axis = 0
    else:
        out_axis = w.ndim - 1
    n = w.shape[out_axis]
    if s_w.size != 1:
        if axis < 0:
            axis += w.ndim
        if axis != out_axis or s_w.shape != (n,):
            raise LowbitError(f"{G.where(w_node)}: per-channel scales lie along axis {axis}, the output "
                              f"channels of '{node.name or op}' along axis {out_axis}",
                              "quantize weights per output channel")
    s_w = np.broadcast_to(s_w.reshape(-1), (n,)).astype(np.float64)
    if op == "Conv":
        if attrs.get("group", 1) != 1:
            raise LowbitError(f"{where}: grouped convolution is not supported")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise LowbitError(f"{where}: dilated convolution is not supported")
        if _auto_pad(attrs) != "NOTSET" and any(attrs.get("pads", [])):
            raise LowbitError(f"{where}: auto_pad together with pads is not supported")
        if _auto_pad(attrs) not in ("NOTSET", "VALID"):
            raise LowbitError(f"{where}: auto_pad={_auto_pad(attrs)} is not supported", "export with explicit pads")
        if w.ndim != 4:
            raise LowbitError(f"{where}: lowbit supports 2-D convolutions only")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            raise LowbitError(f"{where}: asymmetric padding {pads} is not supported", "pad both sides equally")
        layer = {"kind": "conv", "w": w.transpose(2, 3, 1, 0), "stride": tuple(attrs.get("strides", [1, 1])),
                 "pad": (pads[0], pads[1])}
    else:
        if w.ndim != 2:
            raise LowbitError(f"{where}: the weight must be a matrix, it has shape {w.shape}")
        if op == "Gemm":
            for name, want in (("alpha", 1.0), ("beta", 1.0), ("transA", 0)):
                if attrs.get(name, want) != want:
                    raise LowbitError(f"{where}: Gemm with {name}={attrs[name]} is not supported",
                                      "export Gemm with alpha=beta=1 and transA=0")
            if attrs.get("transB", 0):
                w = w.T
        layer = {"kind": "dense", "w": _permute_rows(w, flatten_chw)}
    bias = np.zeros(n, dtype=np.int64)
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in consts:
            raise LowbitError(f"{where}: the bias must be an int32 quantized constant")
        b_node = consts[node.input[2]]
        b, s_b, z_b, b_type, _ = G.const(b_node)
        if b_type != _INT32 or b.size != n:
            raise LowbitError(f"{G.where(b_node)}: the bias must be {n} int32 values, got {b.size} of "
                              f"{_type_name(b_type) if b_type not in _INT_TYPES else 'a narrow integer type'}")
        expected = cur_q.scale[0] * s_w
        if not np.allclose(np.broadcast_to(s_b.reshape(-1), (n,)), expected, rtol=1e-5, atol=0):
            raise LowbitError(f"{G.where(b_node)}: bias scale is not input scale x weight scale",
                              "quantize the bias at s_x * s_w (quantize_static does)")
        # DequantizeLinear(b) = (b - z_b) * s_b: folding the zero point into the integer bias is exact.
        bias = b.reshape(-1) - np.broadcast_to(z_b.reshape(-1), (n,))
    layer["b"] = bias
    layer["s_w"] = s_w
    layer["w_q"] = (_INT_TYPES[w_type])
    return layer


def _linear_layer(pending, q):
    """A lowbit Dense/Conv2d layer from a pending linear node and its output QuantizeLinear."""
    layer, relu, in_q = pending
    s_x, s_w = in_q.scale[0], layer["s_w"]
    # 24-bit multipliers: onnxruntime rescales in float32, 16 bits would round differently
    # near half-integers often enough to matter (measured: 99.76 % vs 100 % equal outputs).
    mult, shift = arith.quantize_multiplier(s_x * s_w / q.scale[0], bits=arith.MULT_BITS)
    lo, hi = q.range
    rq = Requant(mult, shift, q.zero_point, lo, hi, relu)
    bits, signed = layer["w_q"]
    w_q = QuantSpec(bits, signed, 0, tuple(s_w))
    if layer["kind"] == "conv":
        return Conv2d(layer["w"], layer["b"], w_q, q, rq, layer["stride"], layer["pad"])
    return Dense(layer["w"], layer["b"], w_q, q, rq)
