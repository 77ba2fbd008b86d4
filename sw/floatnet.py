"""Float networks before quantization: layer list, forward pass, and the ``.npz`` float-model format.

Importers turn PyTorch, ONNX or ``.npz`` files into a :class:`FloatNet`; :mod:`lowbit.sw.posttrain`
quantizes it into a :class:`lowbit.sw.model.Model`. Layout is NHWC with Conv2d weights
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
from .errors import LowbitError

__all__ = ["FDense", "FConv2d", "FReLU", "FMaxPool2d", "FFlatten", "FBatchNorm", "FloatNet", "fold_batchnorm",
           "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = ("dense", "conv2d", "relu", "maxpool2d", "flatten", "batchnorm")


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
        from .outputs import atomic_file
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
        from .loaders import read_npz
        path = Path(path)
        data, _ = read_npz(path, "model file")
        if "spec" not in data:
            raise LowbitError(f"{path} has no 'spec' entry describing the layers",
                              "see docs/model-format.md for the float .npz format")
        try:
            spec = json.loads(str(data["spec"]))
            layers = []
            for i, e in enumerate(spec["layers"]):
                t = e.get("type")
                if t == "dense":
                    layers.append(FDense(_f64(data, f"{i}.weight", 2), _f64(data, f"{i}.bias", 1)))
                elif t == "conv2d":
                    layers.append(FConv2d(_f64(data, f"{i}.weight", 4), _f64(data, f"{i}.bias", 1),
                                          tuple(e.get("stride", (1, 1))), tuple(e.get("padding", (0, 0)))))
                elif t == "relu":
                    layers.append(FReLU())
                elif t == "maxpool2d":
                    layers.append(FMaxPool2d(tuple(e.get("kernel", (2, 2))),
                                             tuple(e["stride"]) if e.get("stride") else None))
                elif t == "flatten":
                    layers.append(FFlatten())
                elif t == "batchnorm":
                    layers.append(FBatchNorm(*(_f64(data, f"{i}.{k}", 1) for k in ("gamma", "beta", "mean", "var")),
                                             float(e.get("eps", 1e-5))))
                else:
                    raise LowbitError(f"{path}: layer {i} has unsupported type {t!r}",
                                      f"supported: {', '.join(SUPPORTED_LAYERS)}")
            return cls(tuple(spec["input_shape"]), layers, spec.get("name", path.stem))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise LowbitError(f"{path}: malformed layer spec ({type(exc).__name__}: {exc})",
                              "see docs/model-format.md for the float .npz format") from None


def _f64(data, key, ndim):
    if key not in data:
        raise LowbitError(f"float model is missing array {key!r}", "each Dense/Conv2d layer i needs i.weight and i.bias")
    arr = np.asarray(data[key])
    if arr.dtype.kind not in "fiu" or arr.ndim != ndim:
        raise LowbitError(f"array {key!r} must be a {ndim}-D number array, got {arr.ndim}-D {arr.dtype}")
    return arr.astype(np.float64)
