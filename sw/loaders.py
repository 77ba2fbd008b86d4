"""Loading what users hand the CLI: data sets (.npz with x and optional y) and models of any kind.

Every failure is a one-line :class:`LowbitError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import LowbitError

__all__ = ["load_data", "load_float_net", "load_model"]

FLOAT_SUFFIXES = (".npz",)


def load_data(path, need_labels: bool = False):
    """``(x, y)`` from an .npz holding ``x`` (N, ...) floats and optionally ``y`` (N,) integer labels."""
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "x" not in files:
                raise LowbitError(f"{path} has no array 'x' (it has {', '.join(sorted(files)) or 'nothing'})",
                                  "save inputs as x (and labels as y) with numpy.savez")
            x = z["x"]
            y = z["y"] if "y" in files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise LowbitError(f"{path} is not a readable .npz file ({type(exc).__name__})") from None
    if x.dtype.kind not in "fiu" or x.ndim < 2 or len(x) == 0:
        raise LowbitError(f"{path}: x must be a non-empty numeric array of shape (N, ...), got {x.dtype} {x.shape}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise LowbitError(f"{path}: x contains NaN or infinity")
    if y is not None:
        if y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise LowbitError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
        y = y.astype(np.int64)
    elif need_labels:
        raise LowbitError(f"{path} has no labels 'y'", "accuracy needs integer labels y")
    return x, y


def load_float_net(path, input_shape=None):
    """A FloatNet from ``.npz`` (lowbit's float format), ``.onnx``, or ``.pt``/``.pth`` (a pickled
    ``nn.Sequential``, which needs ``input_shape`` as ``(C, H, W)`` or ``(K,)``)."""
    from .floatnet import FloatNet
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"model file {path} does not exist")
    if path.suffix == ".npz":
        return FloatNet.load_npz(path)
    if path.suffix == ".onnx":
        from .onnx_import import load_onnx
        from .qdq_import import is_qdq
        from .qonnx_import import is_qonnx
        if is_qonnx(path):
            raise LowbitError(f"{path.name} is an already-quantized QONNX model",
                              "use it directly with lowbit eval/build/verilog; it needs no re-quantization")
        if is_qdq(path):
            raise LowbitError(f"{path.name} is an already-quantized QDQ model",
                              "use it directly with lowbit eval/build/verilog; it needs no re-quantization")
        return load_onnx(path)
    if path.suffix in (".pt", ".pth"):
        if not input_shape:
            raise LowbitError(f"{path.name} is a PyTorch model and needs its input shape",
                              "pass --input-shape C,H,W (or K for vectors)")
        from .torch_import import load_torch
        return load_torch(path, input_shape)
    raise LowbitError(f"cannot read a float model from {path.name}",
                      "supported: .npz float models (docs/model-format.md), float .onnx, PyTorch .pt; "
                      "quantized models are .lbm")


def load_model(path, calib_x=None, **ptq):
    """A quantized Model from an ``.lbm``, or from a float model quantized with calibration inputs
    ``calib_x`` (``ptq`` are :func:`lowbit.sw.posttrain.quantize_net` options)."""
    from .model import Model
    path = Path(path)
    if path.suffix == ".lbm":
        return Model.load(path)
    if path.suffix == ".onnx" and path.is_file():
        from .qdq_import import is_qdq, load_qdq
        from .qonnx_import import is_qonnx, load_qonnx
        if is_qonnx(path):
            return load_qonnx(path)
        if is_qdq(path):
            return load_qdq(path)
    net = load_float_net(path)
    if calib_x is None:
        raise LowbitError(f"{path.name} is a float model and needs calibration data to be quantized",
                          "pass --calib-data D.npz (inputs x of a few hundred samples)")
    from .posttrain import quantize_net
    return quantize_net(net, calib_x, **ptq)
