"""Import QONNX models (as exported by Brevitas) without re-quantizing.

QONNX marks quantization with ``Quant`` (scale, zero point, bit width; ``signed``, ``narrow``,
``rounding_mode``), ``BipolarQuant`` (±scale) and FINN's ``MultiThreshold`` nodes around ordinary
ONNX operators. Supported graphs are chains of:

* an optional ``Sub``/``Add`` of a scalar constant on the input (kept as ``meta["input_offset"]``,
  the centre binary inputs are binarized around), then the input ``Quant`` or ``BipolarQuant``;
* ``Gemm``, ``MatMul`` (optionally followed by ``Add`` of a quantized bias) or ``Conv`` whose weight is
  a ``Quant``/``BipolarQuant`` of a constant (optionally ``Transpose``d), zero point 0, per tensor or
  per output channel; a ``BipolarQuant`` weight may follow a bipolar or a multi-bit input (FINN's
  TFC-w1a1 / CNV-w1a1 first layer), a ``Quant`` weight only a multi-bit one; the bias, if any, an int32 ``Quant`` at scale ``s_in * s_w`` (Brevitas'
  ``Int32Bias``) or a float constant (rounded to that scale);
* an optional ``BatchNormalization`` and ``Relu``, then the activation quantizer: ``Quant``,
  ``BipolarQuant`` or ``MultiThreshold`` — or nothing for the last layer (integer logits);
* ``MaxPool`` (no padding, floor mode) and ``Flatten``/``Reshape`` to (N, -1).

Each activation quantizer becomes an integer multi-threshold on ``acc + bias`` (FINN's streamlined
form; ``docs/arithmetic.md``): code ``>= k`` exactly when the real pre-activation reaches the k-th
rounding boundary, so BatchNorm, ReLU and the Quant node's rounding fold into one integer comparison
per threshold (a channel whose BatchNorm scale is negative gets its weights and bias negated). The
result equals qonnx's float execution except where a value lies within float error of a boundary.
External data (``.onnx.data``) is read from beside the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LowbitError
from ..ir import arith
from ..ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, QuantSpec, Thresholds
from .onnx_float import _attrs, _permute_rows

__all__ = ["load_qonnx", "is_qonnx"]

QUANT_OPS = ("Quant", "BipolarQuant", "MultiThreshold", "Trunc")
_ROUND_OFFSET = {"ROUND": 0.5, "FLOOR": 0.0}     # code >= k  <=>  x / s >= k - zp - offset


def is_qonnx(path) -> bool:
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def _load(path: Path):
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise LowbitError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data
    external = {t.name: dict((e.key, e.value) for e in t.external_data)
                for t in model.graph.initializer if uses_external_data(t)}
    for name, info in external.items():
        data = path.parent / info.get("location", "")
        if not data.is_file():
            raise LowbitError(f"{path.name}: external data file {info.get('location')!r} for tensor {name!r} "
                              "is missing", "keep the .onnx.data file beside the .onnx file")
    if external:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise LowbitError(f"{path.name}: its external data could not be read ({type(exc).__name__})",
                              "the .onnx.data file may be truncated; re-export the model") from None
    return model


def load_qonnx(path) -> Model:
    from onnx import numpy_helper
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"model file {path} does not exist")
    g = _load(path).graph
    consts = {}
    for t in g.initializer:
        try:
            consts[t.name] = numpy_helper.to_array(t)
        except Exception:
            raise LowbitError(f"{path.name}: initializer {t.name!r} cannot be read",
                              "the file or its external data is damaged") from None
    weights = {}          # output name -> (codes, scale per tensor/channel, bits, signed, binary)
    bias_inputs = {n.input[2] for n in g.node if n.op_type in ("Gemm", "Conv") and len(n.input) > 2} | \
        {i for n in g.node if n.op_type == "Add" for i in n.input}
    chain = []
    for node in g.node:
        where = f"{path.name}: node '{node.name or node.op_type}' ({node.op_type})"
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        elif node.op_type == "Quant" and node.input[0] in consts and node.output[0] in bias_inputs:
            consts[node.output[0]] = _bias_quant(node, consts, where)     # a 32-bit bias: its real values
        elif node.op_type in ("Quant", "BipolarQuant") and node.input[0] in consts:
            weights[node.output[0]] = _const_quant(node, consts, where)
        elif node.op_type == "Transpose" and node.input[0] in weights:
            codes, scale, bits, signed, binary = weights[node.input[0]]
            perm = _attrs(node).get("perm")
            if codes.ndim != 2 or perm not in (None, [1, 0]):
                raise LowbitError(f"{where}: only a 2-D transpose of a weight is supported")
            # scale follows the output-channel axis, which a 2-D transpose moves from 0 to 1
            weights[node.output[0]] = (codes.T, scale, bits, signed, binary)
        else:
            chain.append(node)
    return _Builder(path, g, consts, weights).run(chain)


def _qparams(node, consts, where):
    names = list(node.input)
    try:
        scale = np.asarray(consts[names[1]], dtype=np.float64)
        if node.op_type == "BipolarQuant":
            return scale, 0.0, 1, True, False, "ROUND"
        zp = np.asarray(consts[names[2]], dtype=np.float64)
        bits = float(consts[names[3]])
    except KeyError:
        raise LowbitError(f"{where}: scale, zero point and bit width must be constants",
                          "export with fixed quantization parameters") from None
    a = _attrs(node)
    mode = a.get("rounding_mode", b"ROUND")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if bits != int(bits) or not 1 <= bits <= 8:
        raise LowbitError(f"{where}: bit width {bits:g} is not supported", "lowbit supports 1 to 8 bits")
    if np.any(zp != np.round(zp)):
        raise LowbitError(f"{where}: zero point {zp} is not an integer")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise LowbitError(f"{where}: scale must be finite and positive")
    return scale, zp, int(bits), bool(a.get("signed", 1)), bool(a.get("narrow", 0)), mode


def _code_range(bits, signed, narrow):
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def _const_quant(node, consts, where):
    w = np.asarray(consts[node.input[0]], dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise LowbitError(f"{where}: weights contain NaN or infinity")
    if node.op_type == "BipolarQuant":
        scale = np.asarray(consts[node.input[1]], dtype=np.float64)
        return np.where(w >= 0, 1, -1).astype(np.int64), scale.reshape(-1), 1, True, True
    scale, zp, bits, signed, narrow, mode = _qparams(node, consts, where)
    if np.any(zp != 0):
        raise LowbitError(f"{where}: weight zero points must be 0 (symmetric weights)")
    rounding = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil, "ROUND_TO_ZERO": np.trunc}.get(mode)
    if rounding is None:
        raise LowbitError(f"{where}: rounding mode {mode} is not supported", "use ROUND")
    lo, hi = _code_range(bits, signed, narrow)
    codes = np.clip(rounding(w / scale), lo, hi).astype(np.int64)
    if scale.size > 1 and scale.shape[0] != scale.size:
        raise LowbitError(f"{where}: weight scale of shape {scale.shape} is not per output channel")
    return codes, scale.reshape(-1), bits, signed, False


class _Builder:
    def __init__(self, path, g, consts, weights):
        self.path, self.g, self.consts, self.weights = path, g, consts, weights
        self.layers = []
        self.flatten_chw = None

    def where(self, node):
        return f"{self.path.name}: node '{node.name or node.op_type}' ({node.op_type})"

    def shape_now(self):
        shape = tuple(self.in_shape)
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape

    def run(self, chain) -> Model:
        graph_inputs = [i for i in self.g.input if i.name not in self.consts]
        if len(graph_inputs) != 1:
            raise LowbitError(f"{self.path.name} has {len(graph_inputs)} inputs", "lowbit models take one input")
        dims = [d.dim_value for d in graph_inputs[0].type.tensor_type.shape.dim][1:]
        if not dims or any(d <= 0 for d in dims):
            raise LowbitError(f"{self.path.name}: the input shape {dims} is not fixed",
                              "export with a fixed example input")
        self.in_shape = (dims[1], dims[2], dims[0]) if len(dims) == 3 else tuple(dims)
        meta = {"source": "qonnx"}
        i = 0
        # optional scalar offset, then the input quantizer
        if chain and chain[0].op_type in ("Sub", "Add") and chain[0].input[1] in self.consts:
            c = np.asarray(self.consts[chain[0].input[1]], dtype=np.float64)
            if c.size != 1:
                raise LowbitError(f"{self.where(chain[0])}: only a scalar offset is supported before the input quantizer")
            meta["input_offset"] = float(c.reshape(())) * (1 if chain[0].op_type == "Sub" else -1)
            i = 1
        if i >= len(chain) or chain[i].op_type not in ("Quant", "BipolarQuant"):
            raise LowbitError(f"{self.path.name}: the input is not quantized by a Quant or BipolarQuant node",
                              "quantize the input (e.g. a Brevitas QuantIdentity first)")
        node = chain[i]
        if node.op_type == "BipolarQuant":
            cur = QuantSpec(1, True, 0, (1.0,), binary=True)
        else:
            scale, zp, bits, signed, narrow, mode = _qparams(node, self.consts, self.where(node))
            if scale.size != 1 or zp.size != 1:
                raise LowbitError(f"{self.where(node)}: the input quantizer must be per tensor")
            if mode != "ROUND" or (narrow and signed):
                raise LowbitError(f"{self.where(node)}: the input quantizer must round to nearest over the full "
                                  "range", "use rounding_mode ROUND and narrow=0 on the input")
            cur = QuantSpec(bits, signed, int(zp), (float(scale),))
        input_q = cur
        i += 1
        pending = None
        while i < len(chain):
            node = chain[i]
            op = node.op_type
            w = self.where(node)
            if op in ("Gemm", "MatMul", "Conv"):
                if pending is not None:
                    raise LowbitError(f"{w} follows a layer whose output is not quantized",
                                      "quantize every hidden activation (Quant, BipolarQuant or MultiThreshold)")
                pending = self.linear(node, cur, chain, i)
                if pending.pop("consumed_add", False):
                    i += 1
            elif op == "BatchNormalization":
                if pending is None or "bn" in pending or pending.get("relu"):
                    raise LowbitError(f"{w}: BatchNormalization must directly follow Gemm/MatMul/Conv")
                a = _attrs(node)
                try:
                    gamma, beta, mean, var = (np.asarray(self.consts[n], dtype=np.float64) for n in node.input[1:5])
                except KeyError:
                    raise LowbitError(f"{w}: BatchNorm parameters must be constants") from None
                k = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
                pending["bn"] = (k, beta - mean * k)
            elif op == "Relu":
                if pending is None:
                    raise LowbitError(f"{w}: Relu must follow Gemm/MatMul/Conv (after a quantizer it does nothing)")
                pending["relu"] = True
            elif op in ("Quant", "BipolarQuant", "MultiThreshold"):
                if pending is None:
                    if op == "Quant":   # re-quantization of codes after pooling/flattening
                        raise LowbitError(f"{w} re-quantizes codes that are already quantized",
                                          "lowbit keeps codes unchanged through pooling and flattening")
                    raise LowbitError(f"{w} must follow Gemm/MatMul/Conv")
                cur = self.finish(pending, node)
                pending = None
            elif op == "MaxPool":
                a = _attrs(node)
                if any(a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0) or pending is not None:
                    raise LowbitError(f"{w}: only unpadded, floor-mode MaxPool on quantized codes is supported")
                k = tuple(a["kernel_shape"])
                self.layers.append(MaxPool2d(k, tuple(a.get("strides", k))))
            elif op in ("Flatten", "Reshape"):
                if pending is not None:
                    raise LowbitError(f"{w}: flatten after a quantizer, not before")
                if op == "Reshape":
                    target = self.consts.get(node.input[1])
                    if target is None or len(target) != 2 or int(target[1]) not in (-1, int(np.prod(self.shape_now()))):
                        raise LowbitError(f"{w}: only a reshape to (N, -1) is supported")
                probe = self.shape_now()
                if len(probe) == 3:
                    h, w_, c = probe
                    self.flatten_chw = (c, h, w_)
                self.layers.append(Flatten())
            else:
                raise LowbitError(f"{w}: unsupported operator in a QONNX model",
                                  "supported: Quant, BipolarQuant, MultiThreshold, Gemm, MatMul, Conv, "
                                  "BatchNormalization, Relu, MaxPool, Flatten/Reshape")
            i += 1
        if pending is not None:
            self.finish(pending, None)
        if not any(isinstance(l, (Dense, Conv2d)) for l in self.layers):
            raise LowbitError(f"{self.path.name} has no Gemm, MatMul or Conv layer")
        return Model(self.in_shape, input_q, self.layers, self.path.stem, meta).validate()

    # -- one linear layer ---------------------------------------------------------------------------

    def linear(self, node, in_q, chain, i):
        w = self.where(node)
        if node.input[1] not in self.weights:
            raise LowbitError(f"{w}: the weight is not a quantized constant (Quant or BipolarQuant of an initializer)")
        codes, s_w, bits, signed, binary = self.weights[node.input[1]]
        a = _attrs(node)
        if node.op_type == "Conv":
            if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise LowbitError(f"{w}: grouped or dilated convolution is not supported")
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise LowbitError(f"{w}: auto_pad is not supported", "export with explicit pads")
            pads = a.get("pads", [0, 0, 0, 0])
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise LowbitError(f"{w}: asymmetric padding is not supported")
            layer = {"kind": "conv", "w": codes.transpose(2, 3, 1, 0), "stride": tuple(a.get("strides", [1, 1])),
                     "pad": (pads[0], pads[1])}
        else:
            mat = codes
            if node.op_type == "Gemm":
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    raise LowbitError(f"{w}: Gemm with transA, alpha or beta is not supported")
                mat = codes.T if a.get("transB", 0) else codes
            layer = {"kind": "dense", "w": _permute_rows(mat, self.flatten_chw)}
            self.flatten_chw = None
        n = layer["w"].shape[-1]
        if s_w.size not in (1, n):
            raise LowbitError(f"{w}: {s_w.size} weight scales for {n} output channels")
        s_w = np.broadcast_to(s_w, (n,)).astype(np.float64)
        acc_scale = in_q.scale[0] * s_w
        bias_name = node.input[2] if node.op_type in ("Gemm", "Conv") and len(node.input) > 2 else None
        consumed = False
        nxt = chain[i + 1] if i + 1 < len(chain) else None
        if bias_name is None and node.op_type == "MatMul" and nxt is not None and nxt.op_type == "Add" \
                and nxt.input[0] == node.output[0] and (nxt.input[1] in self.weights or nxt.input[1] in self.consts):
            bias_name, consumed = nxt.input[1], True
        bias = np.zeros(n, dtype=np.int64)
        if bias_name:
            bias = self.bias(bias_name, acc_scale, w)
        try:
            # ±1 weights on multi-bit codes (FINN's TFC/CNV first layers) are a mode of their own.
            arith.operand_mode(in_q.binary, binary)
        except ValueError:
            raise LowbitError(f"{w}: binary (BipolarQuant) inputs need binary weights, this weight is a {bits}-bit "
                              "Quant", "quantize the weight with BipolarQuant, or the input with a multi-bit "
                              "Quant") from None
        w_q = QuantSpec(1, True, 0, tuple(s_w), binary=True) if binary else QuantSpec(bits, signed, 0, tuple(s_w))
        return {"layer": layer, "bias": bias, "acc_scale": acc_scale, "w_q": w_q, "in_q": in_q,
                "node": node, "consumed_add": consumed}

    def bias(self, name, acc_scale, where):
        if name in self.weights:
            raise LowbitError(f"{where}: the bias must not be a bipolar/weight quantizer")
        if name not in self.consts:
            raise LowbitError(f"{where}: the bias must be a constant or a Quant of a constant")
        b = np.asarray(self.consts[name], dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(b)):
            raise LowbitError(f"{where}: bias contains NaN or infinity")
        return np.round(np.broadcast_to(b, acc_scale.shape) / acc_scale).astype(np.int64)

    # -- the activation after it ----------------------------------------------------------------------

    def finish(self, p, node):
        """Close the pending layer with ``node`` (a quantizer) or as integer logits (``node`` is None)."""
        layer, bias, S = p["layer"], p["bias"].copy(), p["acc_scale"]
        wts = layer["w"].copy()
        n = wts.shape[-1]
        k, c = p.get("bn", (np.ones(n), np.zeros(n)))
        if node is None:
            if "bn" in p or p.get("relu") or np.ptp(S) > 1e-9 * S.max():
                raise LowbitError(f"{self.path.name}: the last layer must end in a plain Gemm/MatMul/Conv with one "
                                  "weight scale", "lowbit's logits are integers in one unit; quantize the "
                                  "last layer per tensor")
            out_q, rq = None, None
        else:
            w = self.where(node)
            flip = k < 0
            wts[..., flip] *= -1
            bias[flip] *= -1
            k = np.abs(k)
            if np.any(k == 0):
                raise LowbitError(f"{w}: a BatchNorm scale of 0 makes a constant channel", "retrain or prune it")
            real, out_lo, step, out_q = self.boundaries(node, n, w)
            if p.get("relu"):
                real = np.where(real <= 0, -np.inf, real)          # max(x, 0) reaches every boundary <= 0
            # acc + bias >= T  <=>  k * S * (acc + bias) + c >= real
            t = (real - c[:, None]) / (k * S)[:, None]
            K = int(np.prod(wts.shape[:-1]))
            in_lo, in_hi = p["in_q"].range
            zx = p["in_q"].zero_point        # |acc| <= K * max|w| * max|x - zx|, whatever the zero point
            bound = K * int(np.abs(wts).max()) * max(in_hi - zx, zx - in_lo) + int(np.abs(bias).max()) + 1
            t = np.clip(np.nan_to_num(t, nan=0.0, posinf=bound, neginf=-bound), -bound, bound)
            rq = Thresholds(np.ceil(t - 1e-9 * np.maximum(1.0, np.abs(t))).astype(np.int64), out_lo, step)
        if layer["kind"] == "conv":
            self.layers.append(Conv2d(wts, bias, p["w_q"], out_q, rq, layer["stride"], layer["pad"]))
        else:
            self.layers.append(Dense(wts, bias, p["w_q"], out_q, rq))
        return out_q

    def boundaries(self, node, n, w):
        """Real pre-activation values at which the output code steps up: ``(real (n, S), out_lo, out_step,
        out_q)``."""
        op = node.op_type
        if op == "BipolarQuant":
            return np.zeros((n, 1)), -1, 2, QuantSpec(1, True, 0, (1.0,), binary=True)
        if op == "MultiThreshold":
            a = _attrs(node)
            thr = self.consts.get(node.input[1])
            if thr is None:
                raise LowbitError(f"{w}: thresholds must be a constant")
            thr = np.asarray(thr, dtype=np.float64)
            if thr.ndim != 2 or thr.shape[0] not in (1, n):
                raise LowbitError(f"{w}: thresholds of shape {thr.shape} for {n} channels")
            if np.any(np.diff(thr, axis=1) < 0):
                raise LowbitError(f"{w}: thresholds must ascend along each channel")
            dtype = a.get("out_dtype", b"")
            dtype = dtype.decode() if isinstance(dtype, bytes) else str(dtype)
            scale, obias = float(a.get("out_scale", 1.0)), float(a.get("out_bias", 0.0))
            lo = obias / scale
            if lo != round(lo):
                raise LowbitError(f"{w}: out_bias {obias:g} is not a whole number of out_scale steps")
            lo = int(round(lo))
            if dtype == "BIPOLAR":
                if thr.shape[1] != 1:
                    raise LowbitError(f"{w}: a BIPOLAR output has one threshold")
                return np.broadcast_to(thr, (n, 1)), -1, 2, QuantSpec(1, True, 0, (scale,), binary=True)
            signed = dtype.startswith("INT")
            try:
                bits = int(dtype[3 if signed else 4:])
            except ValueError:
                raise LowbitError(f"{w}: out_dtype {dtype!r} is not supported", "use UINTn, INTn or BIPOLAR") from None
            q = QuantSpec(bits, signed, 0, (scale,))
            if lo < q.range[0] or lo + thr.shape[1] > q.range[1]:
                raise LowbitError(f"{w}: {thr.shape[1]} thresholds from code {lo} overflow {dtype}")
            return np.broadcast_to(thr, (n, thr.shape[1])), lo, 1, q
        scale, zp, bits, signed, narrow, mode = _qparams(node, self.consts, w)
        if scale.size != 1 or zp.size != 1:
            raise LowbitError(f"{w}: activation quantizers must be per tensor")
        if mode not in _ROUND_OFFSET:
            raise LowbitError(f"{w}: rounding mode {mode} is not supported", "use ROUND or FLOOR")
        s, z = float(scale), int(zp)
        lo, hi = _code_range(bits, signed, narrow)
        ks = np.arange(lo + 1, hi + 1)
        real = (ks - z - _ROUND_OFFSET[mode]) * s
        q = QuantSpec(bits, signed, z, (s,))
        return np.broadcast_to(real, (n, len(ks))), lo, 1, q


def _bias_quant(node, consts, where):
    """The real values a wide (int32) bias ``Quant`` of a constant produces."""
    try:
        b = np.asarray(consts[node.input[0]], dtype=np.float64)
        scale = np.asarray(consts[node.input[1]], dtype=np.float64)
        zp = np.asarray(consts[node.input[2]], dtype=np.float64)
        bits = int(float(consts[node.input[3]]))
    except KeyError:
        raise LowbitError(f"{where}: scale, zero point and bit width must be constants") from None
    if bits > 32 or np.any(zp != 0) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise LowbitError(f"{where}: a bias quantizer needs at most 32 bits, zero point 0 and a positive scale")
    if not np.all(np.isfinite(b)):
        raise LowbitError(f"{where}: bias contains NaN or infinity")
    lim = 2 ** (bits - 1)
    return np.clip(np.round(b / scale), -lim, lim - 1) * scale
