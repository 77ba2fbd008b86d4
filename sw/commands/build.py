"""``lowbit build``: a quantized model -> bitstream, ROM images and report for a board."""

import math
import sys

from ...hw.dense import LOGIT_BITS
from ..link import frames
from ..flow.build import build, summary_text
from ..flow.overlay import parse_array
from ..flow.record import DEFAULT_BAUD, MAX_BATCH, MAX_BAUD
from ..cli import emit
from ..errors import LowbitError
from ..quant.load import load_model
from ..outputs import check_output_path

NAME = "build"
HELP = "build a bitstream for a board (icebreaker, ulx3s-85f or any amaranth-boards name)"

#: Largest INFER frame payload (the frame's length field is 16 bits).
MAX_FRAME_PAYLOAD = 0xFFFF


def add_arguments(p):
    p.add_argument("model", help="quantized model (.lbm)")
    p.add_argument("--board", required=True)
    p.add_argument("-o", "--output", required=True, help="output folder (replaced only if the build succeeds)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"UART rate, 1 to {MAX_BAUD} and at most a quarter of the clock (default {DEFAULT_BAUD})")
    p.add_argument("--max-batch", type=int, default=8,
                   help=f"most inputs one INFER frame may carry, 1 to {MAX_BATCH} (default 8)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="run the design from a PLL at this frequency (default: the board's oscillator)")
    p.add_argument("--mult", choices=("lut", "dsp"), default="lut",
                   help="multipliers in logic (any device) or in DSP blocks (SB_MAC16 / MULT18X18D)")
    p.add_argument("--arch", choices=("auto", "dataflow", "overlay"), default="auto",
                   help="one engine per layer (dataflow), one array for every layer (overlay), or whichever "
                        "fits and is faster by the estimate (auto, the default)")
    p.add_argument("--array", metavar="RxC", default=None,
                   help="an overlay of this array (e.g. 8x6) instead of the one the planner picks; the logic "
                        "estimate is then not a refusal, synthesis counts the real logic before placement "
                        "(implies --arch overlay)")
    p.add_argument("--loadable", action="store_true",
                   help="an overlay that takes other models at run time ('lowbit load'); on iCE40 UltraPlus "
                        "its weights live in SPRAM, loaded after power-up (implies --arch overlay)")
    p.add_argument("--also", nargs="+", metavar="MODEL", default=[],
                   help="size the overlay to load these models too ('lowbit load'): their formats, weights, "
                        "layers and inputs fit its memories (implies --arch overlay)")
    p.add_argument("--reweightable", action="store_true",
                   help="keep the weight ROMs patchable by 'lowbit reweight' (iCE40 and ECP5; wider requantizers)")
    p.add_argument("--seed", type=int, default=1,
                   help="nextpnr's placement seed (default 1): a design that misses timing by a little may "
                        "meet it placed with another seed")
    p.add_argument("--json", action="store_true")


def check_options(args) -> None:
    """Every numeric option in range, and the UART rate reachable from the board's clock: refused before
    the model is read, let alone simulated or synthesised."""
    from ...boards.targets import board_clock
    from ...hw.serial import divisor_for
    if not 1 <= args.baud <= MAX_BAUD:
        raise LowbitError(f"--baud {args.baud} is outside 1 to {MAX_BAUD}",
                          f"common rates: 115200, {DEFAULT_BAUD} (the default), 3000000")
    if not 1 <= args.max_batch <= MAX_BATCH:
        raise LowbitError(f"--max-batch {args.max_batch} is outside 1 to {MAX_BATCH}",
                          "it sizes the board's input buffer; 8 (the default) keeps the link busy")
    if args.clock_mhz is not None and not (math.isfinite(args.clock_mhz) and args.clock_mhz > 0):
        raise LowbitError(f"--clock-mhz {args.clock_mhz:g} must be a positive frequency", "e.g. --clock-mhz 24")
    if not 0 <= getattr(args, "seed", 1) < 2 ** 31:
        raise LowbitError(f"--seed {args.seed} is outside 0 to {2 ** 31 - 1}", "e.g. --seed 2")
    # Parsed once, here, for every command that takes --array.
    args.array_shape = None if args.array is None else parse_array(args.array)
    clk_hz, _ = board_clock(args.board, args.clock_mhz)
    try:
        divisor_for(clk_hz, args.baud)
    except ValueError as exc:
        raise LowbitError(f"{args.board}: {exc}", "choose another --baud") from None


def run(args):
    check_options(args)
    # Refused now, not when the finished build is renamed into place after minutes of synthesis.
    check_output_path(args.output, folder=True)
    model = load_model(args.model)
    also = [load_model(path) for path in args.also]
    # A frame carries a batch of inputs (one byte a code) and its answer (values of at most LOGIT_BITS
    # and the argmax).
    per_input = max(max(math.prod(m.input_shape),
                        frames.value_bytes(LOGIT_BITS) * math.prod(m.output_shape) + frames.ARGMAX_BYTES)
                    for m in (model, *also))
    if args.max_batch * per_input > MAX_FRAME_PAYLOAD:
        most = max(1, MAX_FRAME_PAYLOAD // per_input)
        raise LowbitError(f"--max-batch {args.max_batch} inputs of this model do not fit one frame "
                          f"({MAX_FRAME_PAYLOAD} bytes)", f"use --max-batch {most} or less")
    # Progress goes to stderr in every mode: --json output on stdout stays clean.
    progress = lambda m: sys.stderr.write(f"[lowbit] {m}\n")
    report = build(model, args.board, args.output, baud=args.baud, max_batch=args.max_batch, progress=progress,
                   reweightable=args.reweightable, clock_mhz=args.clock_mhz,
                   mult=args.mult, arch=args.arch, also=also, loadable=args.loadable,
                   array=args.array_shape, seed=args.seed)
    emit(report, args.json, summary_text(report) + f"artefacts in {args.output}")
    return 0
