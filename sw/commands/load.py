"""``lowbit load``: load a model into a built overlay, on a board (serial port) or its simulation."""

import sys

from ..cli import emit
from ..flow.loader import load
from ..quant.load import load_model

NAME = "load"
HELP = "load another model into a built overlay (--port: the board keeps it; --sim: check it in simulation)"


def add_arguments(p):
    p.add_argument("build", help="loadable overlay build folder ('lowbit build --loadable' or '--also MODEL')")
    p.add_argument("model", help="quantized model (.lbm, QONNX, QDQ) that fits the overlay")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB1")
    target.add_argument("--sim", action="store_true",
                        help="load it into the simulated board through its UART pins and check the board "
                             "identifies as the model (nothing persists: 'lowbit run --model' loads and runs data)")
    p.add_argument("--json", action="store_true")


def run(args):
    say = lambda m: sys.stderr.write(f"[lowbit] {m}\n")
    result = load(args.build, load_model(args.model), port=None if args.sim else args.port, progress=say)
    emit(result, args.json, f"loaded {result['bytes']} bytes (model {result['config_hash']}); the link carries "
                            f"them in {result['link_seconds']} s")
    return 0
