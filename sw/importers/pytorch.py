"""Import a PyTorch ``nn.Sequential`` (or its ``state_dict`` plus a layer spec) as a FloatNet.

A ``.pt`` file is loaded with ``torch.load(..., weights_only=True)``, which reads tensors and plain
containers and never runs code from the file. That reads lowbit's safe format,
``torch.save({"lowbit_layers": [...], "state_dict": model.state_dict()}, path)``: ``lowbit_layers`` lists
the Sequential's modules in order as ``{"type": ...}`` entries (``dense`` for Linear, ``conv2d`` with
``stride``/``padding``, ``relu``, ``maxpool2d`` with ``kernel``/``stride``, ``flatten``, ``batchnorm`` with
``eps``, ``dropout``, ``identity``), so entry ``i`` owns the state-dict keys ``"{i}.weight"`` etc. (see
:func:`from_state_dict`). A whole pickled module (``torch.save(model, path)``) can only be loaded by
unpickling it, which runs whatever code the file holds: :func:`load_torch` does that only with
``trust_pickle=True`` (``lowbit quantize --trust-pickle``).

torch is optional and imported only here. Supported modules: ``Linear``, ``Conv2d`` (one group, no
dilation, integer or tuple padding), ``ReLU``, ``MaxPool2d`` (no padding), ``Flatten``, ``BatchNorm1d``/
``BatchNorm2d`` (folded into the layer before), ``Identity`` and ``Dropout`` (ignored at inference).
PyTorch is NCHW; lowbit is NHWC: convolution weights are transposed and the rows of the first Linear
after a flattened feature map are permuted from (c, h, w) to (h, w, c), so inputs are given NHWC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LowbitError
from ..ir.floatnet import FBatchNorm, FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU, check_input_shape
from .onnx_float import _permute_rows

__all__ = ["from_torch", "from_state_dict", "load_torch", "SUPPORTED_MODULES", "STATE_DICT_LAYERS"]

SUPPORTED_MODULES = ("Linear", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "BatchNorm1d", "BatchNorm2d",
                     "Identity", "Dropout")
#: Entry types of ``lowbit_layers`` in the safe ``.pt`` format.
STATE_DICT_LAYERS = ("dense", "conv2d", "relu", "maxpool2d", "flatten", "batchnorm", "dropout", "identity")

_SAFE_FORMAT = ("save {'lowbit_layers': [...], 'state_dict': model.state_dict()} (docs/model-format.md), "
                "or pass --trust-pickle if you trust whoever made the file")


def _np(t):
    if isinstance(t, np.ndarray):
        return t.astype(np.float64)
    return t.detach().cpu().double().numpy()


def _nchw_to_nhwc(input_shape_nchw) -> tuple:
    dims = check_input_shape(input_shape_nchw, "input shape")
    if len(dims) == 2:
        raise LowbitError(f"input shape {dims} must be (C, H, W) or (K,)", "e.g. --input-shape 1,8,8 or 64")
    return (dims[1], dims[2], dims[0]) if len(dims) == 3 else dims


def _flattened_map(layers, shape):
    """The (C, H, W) of the map a Flatten after ``layers`` flattens, or None for a vector."""
    probe = np.zeros((1, *shape))
    for layer in layers:
        probe = layer.forward(probe)
    if probe.ndim == 4:
        h, w, c = probe.shape[1:]
        return (c, h, w)
    return None


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def from_torch(module, input_shape_nchw) -> FloatNet:
    """Convert ``module`` (an ``nn.Sequential``) for inputs of shape ``(C, H, W)`` or ``(K,)``."""
    try:
        import torch
        from torch import nn
    except ImportError:
        raise LowbitError("PyTorch is not installed", "pip install torch (only needed to import PyTorch models)") from None
    if not isinstance(module, nn.Sequential):
        raise LowbitError(f"lowbit imports nn.Sequential models, not {type(module).__name__}",
                          "wrap the layers in nn.Sequential")
    shape = _nchw_to_nhwc(input_shape_nchw)
    layers, pending = [], None
    for i, m in enumerate(module):
        kind = type(m).__name__
        if isinstance(m, nn.Linear):
            b = _np(m.bias) if m.bias is not None else np.zeros(m.out_features)
            layers.append(FDense(_permute_rows(_np(m.weight).T, pending), b))
            pending = None
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or _pair(m.dilation) != (1, 1) or isinstance(m.padding, str):
                raise LowbitError(f"module {i} (Conv2d): groups, dilation and string padding are not supported")
            b = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
            layers.append(FConv2d(_np(m.weight).transpose(2, 3, 1, 0), b, _pair(m.stride), _pair(m.padding)))
        elif isinstance(m, nn.ReLU):
            layers.append(FReLU())
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1):
                raise LowbitError(f"module {i} (MaxPool2d): padding and dilation are not supported")
            layers.append(FMaxPool2d(_pair(m.kernel_size), _pair(m.stride) if m.stride is not None else None))
        elif isinstance(m, nn.Flatten):
            pending = _flattened_map(layers, shape)
            layers.append(FFlatten())
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layers.append(FBatchNorm(_np(m.weight), _np(m.bias), _np(m.running_mean), _np(m.running_var), m.eps))
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        else:
            raise LowbitError(f"module {i} is a {kind}, which lowbit cannot import",
                              f"supported: {', '.join(SUPPORTED_MODULES)}")
    return FloatNet(shape, layers, "torch")


def from_state_dict(layer_spec, state, input_shape_nchw, name: str = "torch") -> FloatNet:
    """A FloatNet from a Sequential's ``state_dict`` (``state``: name -> tensor or array, PyTorch layout)
    and ``layer_spec``, the list of its modules as ``{"type": ...}`` entries (:data:`STATE_DICT_LAYERS`).

    Entry ``i`` owns keys ``"{i}.weight"`` and ``"{i}.bias"`` (Linear ``(out, in)``, Conv2d ``(out, in, kh,
    kw)``; a missing bias is zero) or, for ``batchnorm``, ``"{i}.weight"``, ``"{i}.bias"``,
    ``"{i}.running_mean"``, ``"{i}.running_var"`` — the names ``nn.Sequential.state_dict()`` gives. The
    same conversions as :func:`from_torch` apply (NCHW -> NHWC).
    """
    from ..ir.floatnet import _pair
    hint = "see the PyTorch section of docs/model-format.md"
    if not isinstance(layer_spec, list) or not all(isinstance(e, dict) for e in layer_spec):
        raise LowbitError("lowbit_layers must be a list of {'type': ...} entries", hint)
    if not isinstance(state, dict):
        raise LowbitError(f"state_dict must map names to tensors, not {type(state).__name__}", hint)
    shape = _nchw_to_nhwc(input_shape_nchw)

    def tensor(i, key, ndim, required=True):
        t = state.get(f"{i}.{key}")
        if t is None:
            if required:
                raise LowbitError(f"state_dict has no '{i}.{key}' for layer {i} ({layer_spec[i]['type']})", hint)
            return None
        try:
            arr = _np(t)
        except Exception:   # anything that is not a float tensor or array
            raise LowbitError(f"state_dict entry '{i}.{key}' is not a number tensor ({type(t).__name__})",
                              hint) from None
        if arr.ndim != ndim:
            raise LowbitError(f"state_dict entry '{i}.{key}' has shape {arr.shape}, expected {ndim} dimensions",
                              hint)
        return arr

    layers, pending = [], None
    for i, e in enumerate(layer_spec):
        kind = e.get("type")
        where = f"lowbit_layers[{i}] ({kind})"
        if kind == "dense":
            w = tensor(i, "weight", 2)
            b = tensor(i, "bias", 1, required=False)
            layers.append(FDense(_permute_rows(w.T, pending), b if b is not None else np.zeros(w.shape[0])))
            pending = None
        elif kind == "conv2d":
            w = tensor(i, "weight", 4)
            b = tensor(i, "bias", 1, required=False)
            layers.append(FConv2d(w.transpose(2, 3, 1, 0), b if b is not None else np.zeros(w.shape[0]),
                                  _pair(e.get("stride", [1, 1]), f"{where} stride", 1),
                                  _pair(e.get("padding", [0, 0]), f"{where} padding", 0)))
        elif kind == "relu":
            layers.append(FReLU())
        elif kind == "maxpool2d":
            kernel = _pair(e.get("kernel", [2, 2]), f"{where} kernel", 1)
            layers.append(FMaxPool2d(kernel, _pair(e["stride"], f"{where} stride", 1) if e.get("stride") else None))
        elif kind == "flatten":
            pending = _flattened_map(layers, shape)
            layers.append(FFlatten())
        elif kind == "batchnorm":
            eps = e.get("eps", 1e-5)
            if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
                raise LowbitError(f"{where}: eps {eps!r:.40} must be a number between 0 and 1", hint)
            layers.append(FBatchNorm(*(tensor(i, k, 1) for k in ("weight", "bias", "running_mean", "running_var")),
                                     float(eps)))
        elif kind in ("dropout", "identity"):
            continue
        else:
            raise LowbitError(f"{where} is not a layer lowbit imports", f"supported: {', '.join(STATE_DICT_LAYERS)}")
    return FloatNet(shape, layers, name)


def load_torch(path, input_shape_nchw, trust_pickle: bool = False) -> FloatNet:
    """Load a ``.pt`` file: lowbit's safe format (a state dict plus ``lowbit_layers``, read with
    ``weights_only=True``) or, only with ``trust_pickle``, a whole pickled ``nn.Sequential`` saved with
    ``torch.save(model, path)`` — unpickling runs whatever code the file holds."""
    try:
        import torch
    except ImportError:
        raise LowbitError("PyTorch is not installed", "pip install torch (only needed to import PyTorch models)") from None
    try:
        if trust_pickle:
            # --trust-pickle: the user vouches for the file; this runs code from it.
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if not trust_pickle and ("weights only" in str(exc).lower() or type(exc).__name__ == "UnpicklingError"):
            raise LowbitError(f"{path} holds pickled Python objects, not only tensors; lowbit does not unpickle "
                              "(it runs code from the file) unless told to", _SAFE_FORMAT) from None
        raise LowbitError(f"{path} is not a readable PyTorch file ({type(exc).__name__})") from None
    if isinstance(obj, dict) and "lowbit_layers" in obj and "state_dict" in obj:
        return from_state_dict(obj["lowbit_layers"], obj["state_dict"], input_shape_nchw, Path(path).stem)
    if isinstance(obj, dict):
        raise LowbitError(f"{path} holds a dict without 'lowbit_layers' and 'state_dict' (a bare state dict "
                          "does not say which layers it belongs to)", _SAFE_FORMAT)
    if not trust_pickle:     # weights_only=True returns only tensors and containers
        raise LowbitError(f"{path} holds a {type(obj).__name__}, not lowbit's layer list and state dict",
                          _SAFE_FORMAT)
    return from_torch(obj, input_shape_nchw)
