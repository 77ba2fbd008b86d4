"""Which importer reads a model file: :func:`load_float_net` for float models, :func:`load_quantized` for
files that already hold a quantized model (``.lbm``, QONNX, QDQ)."""

from __future__ import annotations

from ..errors import LowbitError
from ..inputs import check_input_file

__all__ = ["load_float_net", "load_quantized"]


def load_float_net(path, input_shape=None, trust_pickle: bool = False):
    """A FloatNet from ``.npz`` (lowbit's float format), ``.onnx``, or ``.pt``/``.pth`` (a state dict
    with its layer list, or with ``trust_pickle`` a pickled ``nn.Sequential``, which runs code from the
    file: :func:`lowbit.sw.importers.pytorch.load_torch`), which needs ``input_shape`` as ``(C, H, W)`` or
    ``(K,)``."""
    from ..ir.floatnet import FloatNet
    path = check_input_file(path, "model file")
    if path.suffix == ".npz":
        return FloatNet.load_npz(path)
    if path.suffix == ".onnx":
        from .onnx_float import load_onnx
        from .onnx_qdq import is_qdq
        from .onnx_qonnx import is_qonnx
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
        from .pytorch import load_torch
        return load_torch(path, input_shape, trust_pickle=trust_pickle)
    raise LowbitError(f"cannot read a float model from {path.name}",
                      "supported: .npz float models (docs/model-format.md), float .onnx, PyTorch .pt; "
                      "quantized models are .lbm")


def load_quantized(path):
    """The quantized Model in ``path`` (``.lbm``, QONNX or QDQ ONNX), or None if it holds a float model."""
    from ..ir.model import Model
    path = check_input_file(path, "model file")
    if path.suffix == ".lbm":
        return Model.load(path)
    if path.suffix == ".onnx":
        from .onnx_qdq import is_qdq, load_qdq
        from .onnx_qonnx import is_qonnx, load_qonnx
        if is_qonnx(path):
            return load_qonnx(path)
        if is_qdq(path):
            return load_qdq(path)
    return None
