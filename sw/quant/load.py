"""A model argument of the CLI, whatever its kind, as a quantized Model."""

from __future__ import annotations

from ..errors import LowbitError
from ..importers.load import load_float_net, load_quantized
from ..inputs import check_input_file

__all__ = ["load_model"]


def load_model(path, calib_x=None, **ptq):
    """A quantized Model from an ``.lbm``, QONNX or QDQ file, or from a float model quantized with
    calibration inputs ``calib_x`` (``ptq`` are :func:`lowbit.sw.quant.posttrain.quantize_net` options)."""
    path = check_input_file(path, "model file")
    model = load_quantized(path)
    if model is not None:
        return model
    net = load_float_net(path)
    if calib_x is None:
        raise LowbitError(f"{path.name} is a float model and needs calibration data to be quantized",
                          "pass --calib-data D.npz (inputs x of a few hundred samples)")
    from .posttrain import quantize_net
    return quantize_net(net, calib_x, **ptq)
