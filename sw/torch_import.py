"""Import a PyTorch ``nn.Sequential`` (or its ``state_dict`` plus a layer spec) as a FloatNet.

torch is optional and imported only here. Supported modules: ``Linear``, ``Conv2d`` (one group, no
dilation, integer or tuple padding), ``ReLU``, ``MaxPool2d`` (no padding), ``Flatten``, ``BatchNorm1d``/
``BatchNorm2d`` (folded into the layer before), ``Identity`` and ``Dropout`` (ignored at inference).
PyTorch is NCHW; lowbit is NHWC: convolution weights are transposed and the rows of the first Linear
after a flattened feature map are permuted from (c, h, w) to (h, w, c), so inputs are given NHWC.
"""

from __future__ import annotations

import numpy as np

from .errors import LowbitError
from .floatnet import FBatchNorm, FConv2d, FDense, FFlatten, FloatNet, FMaxPool2d, FReLU
from .onnx_import import _permute_rows

__all__ = ["from_torch", "load_torch", "SUPPORTED_MODULES"]

SUPPORTED_MODULES = ("Linear", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "BatchNorm1d", "BatchNorm2d",
                     "Identity", "Dropout")


def _np(t):
    return t.detach().cpu().double().numpy()


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
    dims = tuple(input_shape_nchw)
    shape = (dims[1], dims[2], dims[0]) if len(dims) == 3 else dims
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
            probe = np.zeros((1, *shape))
            for layer in layers:
                probe = layer.forward(probe)
            if probe.ndim == 4:
                h, w, c = probe.shape[1:]
                pending = (c, h, w)
            layers.append(FFlatten())
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layers.append(FBatchNorm(_np(m.weight), _np(m.bias), _np(m.running_mean), _np(m.running_var), m.eps))
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        else:
            raise LowbitError(f"module {i} is a {kind}, which lowbit cannot import",
                              f"supported: {', '.join(SUPPORTED_MODULES)}")
    return FloatNet(shape, layers, "torch")


def load_torch(path, input_shape_nchw) -> FloatNet:
    """Load a whole pickled ``nn.Sequential`` saved with ``torch.save(model, path)``."""
    try:
        import torch
    except ImportError:
        raise LowbitError("PyTorch is not installed", "pip install torch (only needed to import PyTorch models)") from None
    try:
        module = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:
        raise LowbitError(f"{path} is not a readable PyTorch file ({type(exc).__name__})") from None
    return from_torch(module, input_shape_nchw)
