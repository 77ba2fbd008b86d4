"""lowbit's Python API: the operations of the ``lowbit`` CLI as functions, importable from one place.

Each CLI command is a thin wrapper around one of these (``docs/architecture.md`` names the module that
does each step)::

    from lowbit.sw.api import load_float_net, quantize_net, build, simulate_build, reference

    net = load_float_net("mlp.npz")                       # or .onnx, .pt (importers)
    model = quantize_net(net, calib_x, weight_bits=4, act_bits=4)   # lowbit quantize
    model.save("mlp.lbm")
    report = build(model, "icebreaker", "out/build")      # lowbit build
    sim = simulate_build("out/build", model.quantize_input(x).reshape(len(x), -1))   # lowbit run --sim
    # an overlay built with build(..., loadable=True) or also=[other]: lowbit load / run --model
    load_into_overlay("out/overlay", other, port="/dev/ttyUSB1")
    assert (sim["values"] == reference(model, model.quantize_input(x)).reshape(len(x), -1)).all()

Errors are :class:`LowbitError` (one line: what is wrong, and what to do).
"""

from __future__ import annotations

from .data.digits import digits_split, mnist_5k_split
from .errors import LowbitError
from .flow.build import build
from .flow.fold import fold
from .flow.loader import load as load_into_overlay
from .flow.record import load_build
from .flow.reweight import reweight
from .flow.simulate import simulate_build
from .importers.load import load_float_net, load_quantized
from .inputs import load_data
from .ir.floatnet import FloatNet
from .ir.intref import predict, run as reference
from .ir.model import Model
from .link.host import Device, SerialTransport
from .quant.load import load_model
from .quant.posttrain import error_report, quantize_net
from .quant.qat import train_qat

__all__ = [
    # files in
    "load_float_net", "load_quantized", "load_model", "load_data", "digits_split", "mnist_5k_split",
    # the IR and its reference
    "FloatNet", "Model", "reference", "predict",
    # quantization
    "quantize_net", "train_qat", "error_report",
    # the build flow
    "fold", "build", "load_build", "reweight", "simulate_build", "load_into_overlay",
    # the link
    "Device", "SerialTransport",
    "LowbitError",
]
