"""Float networks before quantization: layer list, forward pass, and the ``.npz`` float-model format.

Importers turn PyTorch, ONNX or ``.npz`` files into a :class:`FloatNet`; :mod:`lowbit.sw.quant.posttrain`
quantizes it into a :class:`lowbit.sw.ir.model.Model`. Layout is NHWC with Conv2d weights
``(KH, KW, Cin, Cout)`` and Dense weights ``(K, N)``, as in the integer model. BatchNorm is folded into
the preceding Dense/Conv2d by :func:`fold_batchnorm` when the net is built.

The ``.npz`` float format (documented in ``docs/model-format.md``): key ``spec`` holds a JSON string
``{"input_shape": [...], "layers": [{"type": "dense"}, {"type": "relu"}, ...]}``; each Dense/Conv2d
layer ``i`` has arrays ``"{i}.weight"`` and ``"{i}.bias"``; Conv2d entries add ``stride``/``padding``;
MaxPool2d entries add ``kernel`` (and ``stride``); BatchNorm entries have arrays ``"{i}.gamma"``,
``"{i}.beta"``, ``"{i}.mean"``, ``"{i}.var"`` and an ``eps``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import arith
from ..errors import LowbitError

__all__ = ["FDense", "FConv2d", "FReLU", "FMaxPool2d", "FFlatten", "FBatchNorm", "FloatNet", "fold_batchnorm",
           "SUPPORTED_LAYERS", "check_input_shape", "MAX_INPUT_ELEMENTS"]

SUPPORTED_LAYERS = ("dense", "conv2d", "relu", "maxpool2d", "flatten", "batchnorm")

#: Most values one input sample may have (a 2048 x 2048 RGB image is 12 Mi); far beyond any FPGA lowbit
#: targets, but small enough that a shape probe never exhausts memory.
MAX_INPUT_ELEMENTS = 1 << 24


def check_input_shape(shape, where: str = "the model") -> tuple:
    """``shape`` as a tuple of 1 to 3 positive ints of at most :data:`MAX_INPUT_ELEMENTS` values, else
    LowbitError naming ``where``."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or not 1 <= len(dims) <= 3 or \
            not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise LowbitError(f"{where}: input shape {shape!r:.60} must be 1 to 3 positive integers",
                          "e.g. [8, 8, 1] (H, W, C) or [64]")
    if int(np.prod(dims, dtype=object)) > MAX_INPUT_ELEMENTS:
        raise LowbitError(f"{where}: input shape {dims} has more than {MAX_INPUT_ELEMENTS} values per sample",
                          "lowbit targets small FPGA models")
    return tuple(int(d) for d in dims)


@dataclass
class FDense:
    weight: np.ndarray  # (K, N)
    bias: np.ndarray    # (N,)
    kind = "dense"

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.weight + self.bias


@dataclass
class FConv2d:
    weight: np.ndarray  # (KH, KW, Cin, Cout)
    bias: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    kind = "conv2d"

    def forward(self, x):
        kh, kw, cin, cout = self.weight.shape
        b, h, w, _ = x.shape
        oh, ow = arith.conv2d_out_shape(h, w, (kh, kw), self.stride, self.padding)
        xp = np.pad(x, ((0, 0), (self.padding[0],) * 2, (self.padding[1],) * 2, (0, 0)))
        cols = np.empty((b, oh, ow, kh, kw, cin))
        sh, sw = self.stride
        for ky in range(kh):
            for kx in range(kw):
                cols[:, :, :, ky, kx, :] = xp[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :]
        return cols.reshape(b, oh, ow, -1) @ self.weight.reshape(-1, cout) + self.bias


@dataclass
class FReLU:
    kind = "relu"

    def forward(self, x):
        return np.maximum(x, 0)


@dataclass
class FMaxPool2d:
    kernel: tuple = (2, 2)
    stride: tuple | None = None
    kind = "maxpool2d"

    def forward(self, x):
        kh, kw = self.kernel
        sh, sw = self.stride or self.kernel
        oh, ow = arith.conv2d_out_shape(x.shape[1], x.shape[2], self.kernel, (sh, sw), (0, 0))
        out = np.full((x.shape[0], oh, ow, x.shape[3]), -np.inf)
        for ky in range(kh):
            for kx in range(kw):
                out = np.maximum(out, x[:, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw, :])
        return out


@dataclass
class FFlatten:
    kind = "flatten"

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


@dataclass
class FBatchNorm:
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5
    kind = "batchnorm"

    def forward(self, x):
        return (x - self.mean) / np.sqrt(self.var + self.eps) * self.gamma + self.beta


def fold_batchnorm(layers) -> list:
    """Fold every BatchNorm into the Dense/Conv2d right before it (``w' = w*g/s``, ``b' = (b-m)*g/s+beta``)."""
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, FBatchNorm):
            if not out or not isinstance(out[-1], (FDense, FConv2d)):
                raise LowbitError(f"layer {i}: BatchNorm must follow a Dense or Conv2d layer to be folded",
                                  "lowbit folds BatchNorm into the preceding linear layer")
            prev = out[-1]
            factor = layer.gamma / np.sqrt(layer.var + layer.eps)
            if factor.shape != prev.bias.shape:
                raise LowbitError(f"layer {i}: BatchNorm has {factor.shape[0]} channels, the layer before "
                                  f"has {prev.bias.shape[0]}")
            prev.weight = prev.weight * factor
            prev.bias = (prev.bias - layer.mean) * factor + layer.beta
        else:
            out.append(layer)
    return out


@dataclass
class FloatNet:
    input_shape: tuple
    layers: list
    name: str = "model"

    def __post_init__(self):
        self.input_shape = check_input_shape(self.input_shape, self.name if isinstance(self.name, str) else "model")
        self.layers = fold_batchnorm(self.layers)
        for i, layer in enumerate(self.layers):
            for arr in (getattr(layer, "weight", None), getattr(layer, "bias", None)):
                if arr is not None and not np.all(np.isfinite(arr)):
                    raise LowbitError(f"layer {i} ({layer.kind}) has NaN or infinite weights",
                                      "retrain or repair the model")
        self.check_shapes()

    def check_shapes(self):
        x = np.zeros((1, *self.input_shape))
        for i, layer in enumerate(self.layers):
            try:
                if isinstance(layer, FDense) and int(np.prod(x.shape[1:])) != layer.weight.shape[0]:
                    raise ValueError(f"expects {layer.weight.shape[0]} inputs, gets {int(np.prod(x.shape[1:]))}")
                if isinstance(layer, FConv2d) and (x.ndim != 4 or x.shape[3] != layer.weight.shape[2]):
                    raise ValueError(f"expects (H, W, {layer.weight.shape[2]}) input, gets {x.shape[1:]}")
                x = layer.forward(x)
            except ValueError as exc:
                raise LowbitError(f"layer {i} ({layer.kind}): shape mismatch: {exc}",
                                  "check the layer order and weight shapes (layout NHWC, Dense (K, N))") from None

    def forward(self, x, intermediates: bool = False):
        x = np.asarray(x, dtype=np.float64)
        outs = []
        for layer in self.layers:
            x = layer.forward(x)
            outs.append(x)
        return outs if intermediates else x

    # -- .npz float format ----------------------------------------------------------------------

    def save_npz(self, path) -> None:
        from ..outputs import atomic_file
        arrays, spec = {}, []
        for i, layer in enumerate(self.layers):
            entry = {"type": layer.kind}
            if isinstance(layer, (FDense, FConv2d)):
                arrays[f"{i}.weight"], arrays[f"{i}.bias"] = layer.weight, layer.bias
            if isinstance(layer, FConv2d):
                entry["stride"], entry["padding"] = list(layer.stride), list(layer.padding)
            if isinstance(layer, FMaxPool2d):
                entry["kernel"] = list(layer.kernel)
                entry["stride"] = list(layer.stride) if layer.stride else None
            spec.append(entry)
        arrays["spec"] = np.array(json.dumps({"input_shape": list(self.input_shape), "layers": spec,
                                              "name": self.name}))
        with atomic_file(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load_npz(cls, path) -> "FloatNet":
        from ..inputs import read_npz
        path = Path(path)
        data, _ = read_npz(path, "model file")
        if "spec" not in data:
            raise LowbitError(f"{path} has no 'spec' entry describing the layers",
                              "see docs/model-format.md for the float .npz format")
        hint = "see docs/model-format.md for the float .npz format"
        try:
            spec = json.loads(str(data["spec"]))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise LowbitError(f"{path}: 'spec' is not a JSON layer description ({type(exc).__name__})", hint) from None
        try:
            if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list):
                raise LowbitError(f"{path}: 'spec' must be an object with a list of 'layers'", hint)
            layers = []
            for i, e in enumerate(spec["layers"]):
                if not isinstance(e, dict):
                    raise LowbitError(f"{path}: layer {i} must be an object with a 'type'", hint)
                t = e.get("type")
                where = f"{path}: layer {i} ({t})"
                if t == "dense":
                    layers.append(FDense(_f64(data, f"{i}.weight", 2), _f64(data, f"{i}.bias", 1)))
                elif t == "conv2d":
                    layers.append(FConv2d(_f64(data, f"{i}.weight", 4), _f64(data, f"{i}.bias", 1),
                                          _pair(e.get("stride", [1, 1]), f"{where} stride", 1),
                                          _pair(e.get("padding", [0, 0]), f"{where} padding", 0)))
                elif t == "relu":
                    layers.append(FReLU())
                elif t == "maxpool2d":
                    layers.append(FMaxPool2d(_pair(e.get("kernel", [2, 2]), f"{where} kernel", 1),
                                             _pair(e["stride"], f"{where} stride", 1) if e.get("stride") else None))
                elif t == "flatten":
                    layers.append(FFlatten())
                elif t == "batchnorm":
                    eps = e.get("eps", 1e-5)
                    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
                        raise LowbitError(f"{where}: eps {eps!r:.40} must be a number between 0 and 1", hint)
                    layers.append(FBatchNorm(*(_f64(data, f"{i}.{k}", 1) for k in ("gamma", "beta", "mean", "var")),
                                             float(eps)))
                else:
                    raise LowbitError(f"{path}: layer {i} has unsupported type {t!r:.40}",
                                      f"supported: {', '.join(SUPPORTED_LAYERS)}")
            name = spec.get("name", path.stem)
            if not isinstance(name, str):
                raise LowbitError(f"{path}: 'name' must be a string", hint)
            return cls(check_input_shape(spec["input_shape"], str(path)), layers, name)
        except KeyError as exc:
            raise LowbitError(f"{path}: malformed layer spec (missing {exc})", hint) from None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise LowbitError(f"{path}: malformed layer spec ({type(exc).__name__}: {str(exc)[:100]})", hint) from None


def _pair(value, what, least) -> tuple:
    """Two integers from ``least`` to 65536 (a stride, padding or kernel of the float format)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and least <= v <= 1 << 16 for v in value):
        raise LowbitError(f"{what} {value!r:.40} must be two integers from {least} to 65536",
                          "see docs/model-format.md for the float .npz format")
    return tuple(value)


def _f64(data, key, ndim):
    if key not in data:
        raise LowbitError(f"float model is missing array {key!r}", "each Dense/Conv2d layer i needs i.weight and i.bias")
    arr = np.asarray(data[key])
    if arr.dtype.kind not in "fiu" or arr.ndim != ndim:
        raise LowbitError(f"array {key!r} must be a {ndim}-D number array, got {arr.ndim}-D {arr.dtype}")
    return arr.astype(np.float64)
