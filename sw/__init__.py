"""Host side of lowbit, in the order a model goes through it (``docs/architecture.md``):

``ir`` (the arithmetic contract, the ``.lbm`` IR, the integer reference) -> ``importers`` (model files in)
-> ``quant`` (quantization) -> ``flow`` (folding, ROM images, build, re-weighting, simulation of what
was built) -> ``link`` (protocol and driver); ``data`` holds the demo data and trainers, ``commands`` the
CLI, :mod:`lowbit.sw.api` the same operations as Python functions.

Modules that lived directly in ``lowbit.sw`` before the stage folders (``lowbit.sw.model``,
``lowbit.sw.posttrain``, ...) still import, as the module at the new place, with a DeprecationWarning.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module name (under lowbit.sw) -> where it lives now.
MOVED = {
    "arith": "ir.arith", "model": "ir.model", "floatnet": "ir.floatnet", "intref": "ir.intref",
    "onnx_import": "importers.onnx_float", "qdq_import": "importers.onnx_qdq",
    "qonnx_import": "importers.onnx_qonnx", "torch_import": "importers.pytorch",
    "posttrain": "quant.posttrain", "adaround": "quant.adaround", "qat": "quant.qat",
    "digits": "data.digits", "demo_models": "data.demo_models", "benchmarks": "bench",
    "frames": "link.frames", "host": "link.host", "loaders": "inputs",
    "fold": "flow.fold", "rom": "flow.rom", "build": "flow.build", "synth": "flow.synth",
    "toolchain": "flow.toolchain", "reweight": "flow.reweight", "bitstream_roms": "flow.bitstream_roms",
    "simulate": "flow.simulate",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.rpartition(".")
        if head == __name__ and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._own_spec = module.__spec__      # the import system sets the alias's spec on the module
        return module

    def exec_module(self, module):
        module.__spec__ = self._own_spec


sys.meta_path.append(_MovedModules())
