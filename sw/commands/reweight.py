"""``lowbit reweight``: put a new model's weights into an existing reweightable build, in seconds."""

import sys

from ..cli import emit
from ..quant.load import load_model
from ..flow.reweight import reweight

NAME = "reweight"
HELP = "patch a new model's weights into a --reweightable build without synthesis or place-and-route"


def add_arguments(p):
    p.add_argument("build", help="build folder made with 'lowbit build ... --reweightable'")
    p.add_argument("model", help="quantized model (.lbm or QDQ .onnx) with the same architecture")
    p.add_argument("--json", action="store_true")


def run(args):
    progress = (lambda m: None) if args.json else (lambda m: sys.stderr.write(f"[lowbit] {m}\n"))
    result = reweight(args.build, load_model(args.model), progress)
    emit(result, args.json, f"patched {result['roms']} ROMs of {args.build} in {result['seconds']} s "
                            f"(top.bin, model.lbm and roms/ now hold the new weights)")
    return 0
