"""The quantized model description (IR): integer layers, saved as one ``.lbm`` file.

A :class:`Model` is what the integer reference executes and what the hardware generator builds. Every
number the arithmetic uses is an integer here; float scales are kept only to dequantize outputs and to
report. ``docs/model-format.md`` documents the file; ``docs/arithmetic.md`` the arithmetic.

Layers
------
:class:`Dense` and :class:`Conv2d` carry integer weights (zero point 0) or ±1 weights (``weight_q.binary``,
with binary or integer inputs: ``arith.operand_mode``), an int32 bias and a requantizer:
:class:`Requant` (fixed-point multiplier and shift, per tensor or per channel), :class:`Thresholds`
(FINN-style multi-threshold) or ``None`` for a final layer that outputs the exact ``acc + bias``.
:class:`MaxPool2d` and :class:`Flatten` work on codes. BatchNorm is folded away by the importers;
ReLU is fused into the requantizer (``relu=True``) because after requantization it is a clamp.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import arith
from ..errors import LowbitError
from ..outputs import atomic_file

__all__ = ["QuantSpec", "Requant", "Thresholds", "Dense", "Conv2d", "MaxPool2d", "Flatten", "Model",
           "FORMAT_VERSION", "COMPUTE_LAYERS", "MAX_HEADER_BYTES", "MAX_ARRAYS_BYTES", "MAX_ARRAY_ELEMENTS"]

FORMAT_VERSION = 1


def _i64(a):
    return np.asarray(a, dtype=np.int64)


@dataclass(frozen=True)
class QuantSpec:
    """How a tensor's integer codes map to reals: ``real = scale * (code - zero_point)``.

    ``binary`` codes are the values ±1 (stored as one bit in hardware). ``scale`` is a float, per
    tensor or per channel (a tuple); it never reaches the integer arithmetic.
    """

    bits: int
    signed: bool
    zero_point: int = 0
    scale: tuple = (1.0,)
    binary: bool = False

    def __post_init__(self):
        if self.binary:
            if self.bits != 1 or self.zero_point != 0:
                raise LowbitError("a binary (±1) tensor has bits=1 and zero point 0",
                                  f"got bits={self.bits}, zero_point={self.zero_point}")
        elif not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise LowbitError(f"bit-width {self.bits!r} is not supported", "lowbit supports 1 to 8 bits")
        lo, hi = self.range
        if not self.binary and not lo <= self.zero_point <= hi:
            raise LowbitError(f"zero point {self.zero_point} is outside the {self.bits}-bit "
                              f"{'signed' if self.signed else 'unsigned'} range [{lo}, {hi}]")
        scale = tuple(float(s) for s in np.atleast_1d(self.scale))
        if not all(np.isfinite(scale)) or not all(s > 0 for s in scale):
            raise LowbitError(f"scale {scale[:4]} must be finite and positive")
        object.__setattr__(self, "scale", scale)

    @property
    def range(self) -> tuple[int, int]:
        return (-1, 1) if self.binary else arith.int_range(self.bits, self.signed)

    def quantize(self, x) -> np.ndarray:
        """Float -> codes: round half to even (NumPy's rounding), then clamp. Binary: sign, 0 -> +1."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise LowbitError("input data contains NaN or infinity", "clean the data before quantizing")
        if self.binary:
            return np.where(x >= 0, 1, -1).astype(np.int64)
        lo, hi = self.range
        q = np.round(x / np.asarray(self.scale)) + self.zero_point
        return np.clip(q, lo, hi).astype(np.int64)

    def dequantize(self, q) -> np.ndarray:
        return (np.asarray(q, dtype=np.float64) - self.zero_point) * np.asarray(self.scale)

    def to_json(self):
        return {"bits": self.bits, "signed": self.signed, "zero_point": self.zero_point,
                "scale": list(self.scale), "binary": self.binary}

    @classmethod
    def from_json(cls, d):
        return cls(int(d["bits"]), bool(d["signed"]), int(d["zero_point"]), tuple(d["scale"]),
                   bool(d.get("binary", False)))


@dataclass(frozen=True)
class Requant:
    """Fixed-point requantization (``arith.requantize``): ``mult``/``shift`` per channel (length N) or
    per tensor (length 1); output codes in ``[lo, hi]`` around ``zero_point``; ``relu`` fuses ReLU."""

    mult: np.ndarray
    shift: np.ndarray
    zero_point: int
    lo: int
    hi: int
    relu: bool = False

    def apply(self, acc, bias) -> np.ndarray:
        return arith.requantize(acc, bias, self.mult, self.shift, self.zero_point, self.lo, self.hi, self.relu)


@dataclass(frozen=True)
class Thresholds:
    """Multi-threshold activation (``arith.multithreshold``) on ``acc + bias``: ``T`` is (N or 1, S)."""

    thresholds: np.ndarray
    out_lo: int
    out_step: int = 1

    def apply(self, acc, bias) -> np.ndarray:
        return arith.multithreshold(_i64(acc) + _i64(bias), self.thresholds, self.out_lo, self.out_step)


@dataclass(frozen=True)
class Dense:
    """``weight`` (K, N) integer codes, ``bias`` (N,) int32, ``requant`` (or None: int logits)."""

    weight: np.ndarray
    bias: np.ndarray
    weight_q: QuantSpec
    out_q: QuantSpec | None
    requant: Requant | Thresholds | None
    kind = "dense"

    @property
    def k(self):
        return self.weight.shape[0]

    @property
    def n(self):
        return self.weight.shape[1]

    def matrix(self) -> np.ndarray:
        """Weights as the (K, N) matrix the array multiplies."""
        return self.weight

    def out_shape(self, in_shape):
        if int(np.prod(in_shape)) != self.k or len(in_shape) != 1:
            raise LowbitError(f"Dense layer expects a vector of {self.k} values, gets shape {tuple(in_shape)}",
                              "insert a Flatten layer or fix the weight shape")
        return (self.n,)


@dataclass(frozen=True)
class Conv2d:
    """``weight`` (KH, KW, Cin, Cout) codes; NHWC activations; ``padding`` pads with the input zero point."""

    weight: np.ndarray
    bias: np.ndarray
    weight_q: QuantSpec
    out_q: QuantSpec | None
    requant: Requant | Thresholds | None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    kind = "conv2d"

    @property
    def k(self):
        kh, kw, cin, _ = self.weight.shape
        return kh * kw * cin

    @property
    def n(self):
        return self.weight.shape[3]

    def matrix(self) -> np.ndarray:
        return self.weight.reshape(self.k, self.n)

    def out_shape(self, in_shape):
        if len(in_shape) != 3 or in_shape[2] != self.weight.shape[2]:
            raise LowbitError(f"Conv2d expects (H, W, {self.weight.shape[2]}) input, gets {tuple(in_shape)}",
                              "check the channel count and layout (NHWC)")
        oh, ow = arith.conv2d_out_shape(in_shape[0], in_shape[1], self.weight.shape[:2], self.stride,
                                        self.padding)
        return (oh, ow, self.n)


@dataclass(frozen=True)
class MaxPool2d:
    kernel: tuple = (2, 2)
    stride: tuple | None = None
    kind = "maxpool2d"

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise LowbitError(f"MaxPool2d expects (H, W, C) input, gets {tuple(in_shape)}")
        oh, ow = arith.conv2d_out_shape(in_shape[0], in_shape[1], self.kernel, self.stride or self.kernel, (0, 0))
        return (oh, ow, in_shape[2])


@dataclass(frozen=True)
class Flatten:
    kind = "flatten"

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)


COMPUTE_LAYERS = (Dense, Conv2d)


@dataclass
class Model:
    """A quantized network: ``input_shape`` (without batch), ``input_q`` and a list of layers."""

    input_shape: tuple
    input_q: QuantSpec
    layers: list
    name: str = "model"
    meta: dict = field(default_factory=dict)

    # -- checks --------------------------------------------------------------------------------

    def validate(self) -> "Model":
        """Check shapes chain and every integer fits its declared width; LowbitError names the layer."""
        shape = tuple(self.input_shape)
        in_q = self.input_q
        if not self.layers:
            raise LowbitError("the model has no layers")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (Dense, Conv2d, MaxPool2d, Flatten)):
                raise LowbitError(f"layer {i} is a {type(layer).__name__}, which lowbit does not support",
                                  "supported: Dense, Conv2d, MaxPool2d, Flatten")
            where = f"layer {i} ({layer.kind})"
            for field, least in (("stride", 1), ("kernel", 1), ("padding", 0)):
                value = getattr(layer, field, None)
                if value is not None and (len(value) != 2 or any(int(v) != v or int(v) < least for v in value)):
                    raise LowbitError(f"{where}: {field} {tuple(value)} must be two integers >= {least}")
            try:
                shape = layer.out_shape(shape)
            except LowbitError as exc:
                raise LowbitError(f"{where}: {exc.message}", exc.hint) from None
            except ValueError as exc:
                raise LowbitError(f"{where}: {exc}") from None
            if isinstance(layer, COMPUTE_LAYERS):
                if in_q is None:
                    raise LowbitError(f"{where} follows a layer with integer-logit output",
                                      "only the last compute layer may skip requantization")
                try:
                    # Binary weights with integer inputs are a mode of their own; binary inputs with
                    # integer weights are none.
                    arith.operand_mode(in_q.binary, layer.weight_q.binary)
                except ValueError as exc:
                    raise LowbitError(f"{where}: {exc}, these are {layer.weight_q.bits}-bit integers",
                                      "binarize the weights too, or give the layer integer inputs") from None
                if in_q.binary and isinstance(layer, Conv2d) and any(layer.padding):
                    raise LowbitError(f"{where}: a binary convolution cannot pad (±1 has no zero code)",
                                      "use padding=0 for binary layers")
                lo, hi = layer.weight_q.range
                _check(layer.weight, f"{where} weight", lo, hi)
                if layer.weight_q.binary and np.any(layer.weight == 0):
                    raise LowbitError(f"{where} weight: binary weights must be ±1, found 0")
                _check(layer.bias, f"{where} bias", -(1 << 31), (1 << 31) - 1)
                if layer.bias.shape != (layer.n,):
                    raise LowbitError(f"{where}: bias has shape {layer.bias.shape}, expected ({layer.n},)")
                rq = layer.requant
                if isinstance(rq, Requant):
                    for nm, arr, top in (("mult", rq.mult, (1 << arith.MULT_BITS) - 1), ("shift", rq.shift, arith.MAX_SHIFT)):
                        _check(arr, f"{where} requant {nm}", 0, top)
                        if arr.shape not in ((1,), (layer.n,)):
                            raise LowbitError(f"{where}: requant {nm} has shape {arr.shape}, expected (1,) or ({layer.n},)")
                    if layer.out_q is None or (rq.lo, rq.hi) != layer.out_q.range and not layer.out_q.binary:
                        raise LowbitError(f"{where}: requant clamp [{rq.lo}, {rq.hi}] does not match the output "
                                          f"range {None if layer.out_q is None else layer.out_q.range}")
                elif isinstance(rq, Thresholds):
                    t = rq.thresholds
                    _check(t, f"{where} thresholds", -(1 << 62), 1 << 62)
                    if t.ndim != 2 or t.shape[0] not in (1, layer.n):
                        raise LowbitError(f"{where}: thresholds have shape {t.shape}, expected (1 or {layer.n}, S)")
                    if t.shape[1] and np.any(np.diff(t, axis=1) < 0):
                        raise LowbitError(f"{where}: thresholds are not ascending")
                    if layer.out_q is not None:
                        lo, hi = layer.out_q.range
                        top = rq.out_lo + t.shape[1] * rq.out_step
                        if not (lo <= rq.out_lo <= hi and lo <= top <= hi):
                            raise LowbitError(f"{where}: threshold outputs {rq.out_lo}..{top} (step {rq.out_step}) "
                                              f"leave the output range [{lo}, {hi}]")
                elif rq is None:
                    if i != max(j for j, l in enumerate(self.layers) if isinstance(l, COMPUTE_LAYERS)):
                        raise LowbitError(f"{where} has no requantization but is not the last compute layer")
                else:
                    raise LowbitError(f"{where}: unknown requantization {type(rq).__name__}")
                in_q = layer.out_q
        return self

    @property
    def output_shape(self):
        shape = tuple(self.input_shape)
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape

    def compute_layers(self):
        return [l for l in self.layers if isinstance(l, COMPUTE_LAYERS)]

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs (batch, *input_shape) -> integer codes (after subtracting ``meta["input_offset"]``,
        the centre a binary network's inputs are binarized around)."""
        x = np.asarray(x, dtype=np.float64) - self.meta.get("input_offset", 0.0)
        if x.shape[1:] != tuple(self.input_shape):
            if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(self.input_shape)):
                x = x.reshape((x.shape[0], *self.input_shape))
            else:
                raise LowbitError(f"input data has shape {x.shape[1:]} per sample, the model expects "
                                  f"{tuple(self.input_shape)}", "pass data of the shape the model was built for")
        return self.input_q.quantize(x)

    # -- file format ---------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the ``.lbm`` file (a zip holding ``model.json`` and ``arrays.npz``), atomically."""
        self.validate()
        arrays, layers = {}, []
        for i, layer in enumerate(self.layers):
            entry = {"kind": layer.kind}
            if isinstance(layer, COMPUTE_LAYERS):
                arrays[f"{i}.weight"] = _i64(layer.weight)
                arrays[f"{i}.bias"] = _i64(layer.bias)
                entry["weight_q"] = layer.weight_q.to_json()
                entry["out_q"] = layer.out_q.to_json() if layer.out_q else None
                rq = layer.requant
                if isinstance(rq, Requant):
                    arrays[f"{i}.mult"], arrays[f"{i}.shift"] = _i64(rq.mult), _i64(rq.shift)
                    entry["requant"] = {"type": "fixed_point", "zero_point": rq.zero_point, "lo": rq.lo,
                                        "hi": rq.hi, "relu": rq.relu}
                elif isinstance(rq, Thresholds):
                    arrays[f"{i}.thresholds"] = _i64(rq.thresholds)
                    entry["requant"] = {"type": "thresholds", "out_lo": rq.out_lo, "out_step": rq.out_step}
                else:
                    entry["requant"] = None
                if isinstance(layer, Conv2d):
                    entry["stride"], entry["padding"] = list(layer.stride), list(layer.padding)
            elif isinstance(layer, MaxPool2d):
                entry["kernel"] = list(layer.kernel)
                entry["stride"] = list(layer.stride) if layer.stride else None
            layers.append(entry)
        header = {"format": "lowbit-model", "version": FORMAT_VERSION, "name": self.name,
                  "input_shape": list(self.input_shape), "input_q": self.input_q.to_json(),
                  "layers": layers, "meta": self.meta}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_file(path) as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("model.json", json.dumps(header, indent=1))
                z.writestr("arrays.npz", buf.getvalue())

    @classmethod
    def load(cls, path) -> "Model":
        """Read and validate an ``.lbm`` file; a truncated, corrupt or foreign file is a LowbitError.

        What the file declares is bounded before it is read (:data:`MAX_HEADER_BYTES`,
        :data:`MAX_ARRAYS_BYTES`, :data:`MAX_ARRAY_ELEMENTS`), so a crafted file cannot make lowbit
        decompress gigabytes into memory.
        """
        from ..inputs import check_input_file
        path = check_input_file(path, "model file")
        corrupt = "the file is truncated or corrupt; write it again with 'lowbit quantize'"
        try:
            with zipfile.ZipFile(path) as z:
                header_bytes = _read_member(z, "model.json", MAX_HEADER_BYTES, path)
                arrays_bytes = _read_member(z, "arrays.npz", MAX_ARRAYS_BYTES, path)
            arrays = _read_arrays(arrays_bytes, path)
            header = json.loads(header_bytes)
        except RecursionError:
            raise LowbitError(f"{path}: model.json is nested too deeply to be a lowbit model", corrupt) from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError,
                RuntimeError) as exc:
            # RuntimeError and NotImplementedError: encrypted members, unknown compression methods.
            raise LowbitError(f"{path} is not a readable lowbit model ({type(exc).__name__}: {exc})",
                              corrupt) from None
        if not isinstance(header, dict):
            raise LowbitError(f"{path}: model.json holds {_json_kind(header)}, not the lowbit model object",
                              "the file is corrupt or not a lowbit model")
        if header.get("format") != "lowbit-model":
            raise LowbitError(f"{path} is not a lowbit model file")
        if header.get("version") != FORMAT_VERSION:
            raise LowbitError(f"{path} has model format version {header.get('version')!r:.40}, this lowbit reads "
                              f"version {FORMAT_VERSION}", "re-create it with this version of lowbit")
        try:
            if not isinstance(header["layers"], list):
                raise LowbitError(f"{path}: 'layers' must be a list, not {_json_kind(header['layers'])}",
                                  "the file is corrupt")
            layers = [_layer_from_json(i, e, arrays) for i, e in enumerate(header["layers"])]
            meta = header.get("meta", {})
            if not isinstance(meta, dict):
                raise LowbitError(f"{path}: 'meta' must be an object, not {type(meta).__name__}", "the file is corrupt")
            offset = meta.get("input_offset", 0.0)
            if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset):
                raise LowbitError(f"{path}: meta input_offset {offset!r:.40} must be a finite number",
                                  "the file is corrupt")
            name = header.get("name", path.stem)
            if not isinstance(name, str):
                raise LowbitError(f"{path}: 'name' must be a string, not {_json_kind(name)}", "the file is corrupt")
            model = cls(_input_shape(header["input_shape"]), _quant_from_json(header["input_q"], "input_q"), layers,
                        name, meta)
            return model.validate()
        except LowbitError as exc:
            if str(path) in exc.message:
                raise
            raise LowbitError(f"{path}: {exc.message}", exc.hint) from None
        except KeyError as exc:
            raise LowbitError(f"{path}: model description is missing {exc}", "the file is corrupt") from None
        except (TypeError, ValueError, AttributeError, ZeroDivisionError, IndexError, OverflowError,
                RecursionError) as exc:
            # Values of the wrong type or range that reached NumPy or the arithmetic.
            raise LowbitError(f"{path}: malformed model description ({type(exc).__name__}: {str(exc)[:120]})",
                              "the file is corrupt; write it again with 'lowbit quantize'") from None


#: Most bytes ``model.json`` in an ``.lbm`` may hold (the digits CNN's is 4 KiB).
MAX_HEADER_BYTES = 1 << 20
#: Most bytes ``arrays.npz`` may hold uncompressed, and the arrays in it together (iCE40 and ECP5
#: block RAM hold at most a few hundred KiB of weights).
MAX_ARRAYS_BYTES = 64 << 20
#: Most elements one array may declare in its header.
MAX_ARRAY_ELEMENTS = 16 << 20
_LIMIT_HINT = "lowbit reads .lbm files within the limits in docs/model-format.md"


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _input_shape(value) -> tuple:
    if not isinstance(value, list) or not 1 <= len(value) <= 3 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 16 for v in value):
        raise LowbitError(f"input_shape {value!r:.60} must be a list of 1 to 3 integers from 1 to 65536",
                          "the file is corrupt")
    return tuple(value)


def _read_member(z: zipfile.ZipFile, name: str, limit: int, path) -> bytes:
    """Member ``name`` of the ``.lbm`` zip, refused before reading if it declares more than ``limit`` bytes
    (zipfile stops at the declared size, so a member cannot expand beyond it)."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise LowbitError(f"{path} is not a readable lowbit model (it has no {name})",
                          "the file is truncated or not a lowbit model") from None
    if info.file_size > limit:
        raise LowbitError(f"{path}: {name} declares {info.file_size} bytes uncompressed, more than the "
                          f"{limit >> 20} MiB a lowbit model may hold", _LIMIT_HINT)
    with z.open(info) as f:
        return f.read(limit + 1)


def _read_arrays(data: bytes, path) -> dict:
    """The integer arrays of ``arrays.npz``, each header checked (integer dtype, declared size) before
    its data is read."""
    arrays, total = {}, 0
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        declared = sum(i.file_size for i in infos)
        if declared > MAX_ARRAYS_BYTES:
            raise LowbitError(f"{path}: arrays.npz declares {declared} bytes of arrays, more than the "
                              f"{MAX_ARRAYS_BYTES >> 20} MiB a lowbit model may hold", _LIMIT_HINT)
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"array {name!r} has .npy format version {version}")
                if dtype.hasobject:
                    raise LowbitError(f"{path}: array {name!r} is a pickled object array; lowbit does not load "
                                      "pickles (they can run code)", "the file is not a lowbit model")
                count = int(np.prod(shape, dtype=object))
                total += count * dtype.itemsize
                if count > MAX_ARRAY_ELEMENTS or total > MAX_ARRAYS_BYTES:
                    raise LowbitError(f"{path}: array {name!r} declares shape {shape}, beyond the limits of a "
                                      f"lowbit model ({MAX_ARRAY_ELEMENTS >> 20} Mi elements, "
                                      f"{MAX_ARRAYS_BYTES >> 20} MiB in all)", _LIMIT_HINT)
            with z.open(info) as f:
                arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _check(arr, what, lo, hi):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise LowbitError(f"{what} must be integers, found {arr.dtype}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr.min() if arr.min() < lo else arr.max()
        raise LowbitError(f"{what} has value {bad} outside [{lo}, {hi}]")


def _json_repr(value) -> str:
    text = repr(value) if isinstance(value, (str, float)) else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _corrupt(what, expected, value) -> LowbitError:
    return LowbitError(f"{what} must be {expected}, not {_json_repr(value)}", "the file is corrupt")


def _jint(value, what, lo=-(1 << 31), hi=(1 << 31) - 1) -> int:
    """A JSON integer in ``[lo, hi]`` (a bool, float or string is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _corrupt(what, f"an integer from {lo} to {hi}", value)
    return value


def _jbool(value, what) -> bool:
    if not isinstance(value, bool):
        raise _corrupt(what, "true or false", value)
    return value


def _jpair(value, what, lo) -> tuple:
    if not isinstance(value, list) or len(value) != 2 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= 1 << 16 for v in value):
        raise _corrupt(what, f"two integers from {lo} to 65536", value)
    return tuple(value)


def _jobject(value, what) -> dict:
    if not isinstance(value, dict):
        raise _corrupt(what, "an object", value)
    return value


def _quant_from_json(d, what) -> QuantSpec:
    d = _jobject(d, what)
    scale = d["scale"]
    if not isinstance(scale, list) or not 1 <= len(scale) <= 1 << 16 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale):
        raise _corrupt(f"{what} scale", "a list of numbers", scale)
    try:
        return QuantSpec(_jint(d["bits"], f"{what} bits", 0, 255), _jbool(d["signed"], f"{what} signed"),
                         _jint(d["zero_point"], f"{what} zero_point"), tuple(scale),
                         _jbool(d.get("binary", False), f"{what} binary"))
    except LowbitError as exc:
        if exc.message.startswith(what):
            raise
        raise LowbitError(f"{what}: {exc.message}", exc.hint) from None


def _layer_from_json(i, e, arrays):
    e = _jobject(e, f"layer {i}")
    kind = e["kind"]
    where = f"layer {i} ({kind})" if isinstance(kind, str) else f"layer {i}"
    if kind in ("dense", "conv2d"):
        rqj = e["requant"]
        if rqj is None:
            rq = None
        else:
            rqj = _jobject(rqj, f"{where} requant")
            if rqj["type"] == "fixed_point":
                rq = Requant(arrays[f"{i}.mult"], arrays[f"{i}.shift"],
                             *(_jint(rqj[k], f"{where} requant {k}") for k in ("zero_point", "lo", "hi")),
                             _jbool(rqj["relu"], f"{where} requant relu"))
            elif rqj["type"] == "thresholds":
                rq = Thresholds(arrays[f"{i}.thresholds"], _jint(rqj["out_lo"], f"{where} requant out_lo"),
                                _jint(rqj["out_step"], f"{where} requant out_step"))
            else:
                raise LowbitError(f"layer {i}: unknown requantization type {_json_repr(rqj['type'])}")
        common = dict(weight=arrays[f"{i}.weight"], bias=arrays[f"{i}.bias"],
                      weight_q=_quant_from_json(e["weight_q"], f"{where} weight_q"),
                      out_q=_quant_from_json(e["out_q"], f"{where} out_q") if e["out_q"] is not None else None,
                      requant=rq)
        expected = {"weight": (2, "(K, N)") if kind == "dense" else (4, "(KH, KW, Cin, Cout)"), "bias": (1, "(N,)")}
        for name, (ndim, layout) in expected.items():
            if np.ndim(common[name]) != ndim:
                raise LowbitError(f"{where}: {name} has shape {np.shape(common[name])}, expected {layout}",
                                  "the file is corrupt")
        if kind == "dense":
            return Dense(**common)
        return Conv2d(**common, stride=_jpair(e["stride"], f"{where} stride", 1),
                      padding=_jpair(e["padding"], f"{where} padding", 0))
    if kind == "maxpool2d":
        stride = e.get("stride")
        return MaxPool2d(_jpair(e["kernel"], f"{where} kernel", 1),
                         _jpair(stride, f"{where} stride", 1) if stride is not None else None)
    if kind == "flatten":
        return Flatten()
    raise LowbitError(f"layer {i}: unknown layer kind {_json_repr(kind)}",
                      "supported: dense, conv2d, maxpool2d, flatten")
