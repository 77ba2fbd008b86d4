"""``lowbit build``: a quantized model -> bitstream, ROM images and report for a board."""

import sys

from ..build import DEFAULT_BAUD, build, summary_text
from ..cli import emit
from ..loaders import load_model
from ..outputs import check_output_path

NAME = "build"
HELP = "build a bitstream for a board (icebreaker, ulx3s-85f or any amaranth-boards name)"


def add_arguments(p):
    p.add_argument("model", help="quantized model (.lbm)")
    p.add_argument("--board", required=True)
    p.add_argument("-o", "--output", required=True, help="output folder (replaced only if the build succeeds)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="run the design from a PLL at this frequency (default: the board's oscillator)")
    p.add_argument("--mult", choices=("lut", "dsp"), default="lut",
                   help="multipliers in logic (any device) or in DSP blocks (SB_MAC16 / MULT18X18D)")
    p.add_argument("--reweightable", action="store_true",
                   help="keep the weight ROMs patchable by 'lowbit reweight' (iCE40 and ECP5; wider requantizers)")
    p.add_argument("--json", action="store_true")


def run(args):
    # Refused now, not when the finished build is renamed into place after minutes of synthesis.
    check_output_path(args.output, folder=True)
    model = load_model(args.model)
    # Progress goes to stderr in every mode: --json output on stdout stays clean.
    progress = lambda m: sys.stderr.write(f"[lowbit] {m}\n")
    report = build(model, args.board, args.output, baud=args.baud, max_batch=args.max_batch, progress=progress,
                   reweightable=args.reweightable, clock_mhz=args.clock_mhz,
                   mult=args.mult)
    emit(report, args.json, summary_text(report) + f"artefacts in {args.output}")
    return 0
