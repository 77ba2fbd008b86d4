"""``lowbit plan``: what ``lowbit build`` would do, without synthesis."""

from ..cli import emit
from ..flow.build import plan_build
from ..flow.record import DEFAULT_BAUD, MAX_BATCH
from ..quant.load import load_model
from .build import check_options

NAME = "plan"
HELP = "what 'lowbit build' would do (architecture, arrays, memory map, estimate, cycles), in a second"


def add_arguments(p):
    p.add_argument("model", help="quantized model (.lbm, QONNX, QDQ)")
    p.add_argument("--board", required=True)
    p.add_argument("--arch", choices=("auto", "dataflow", "overlay"), default="auto")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    p.add_argument("--max-batch", type=int, default=8, help=f"1 to {MAX_BATCH} (default 8)")
    p.add_argument("--clock-mhz", type=float, default=None)
    p.add_argument("--into", metavar="DIR", help="also say whether the model fits this built overlay")
    p.add_argument("--array", metavar="RxC", default=None, help="as lowbit build --array: an overlay of this array")
    p.add_argument("--loadable", action="store_true", help="plan a loadable overlay (as lowbit build --loadable)")
    p.add_argument("--also", nargs="+", metavar="MODEL", default=[], help="as lowbit build --also")
    p.add_argument("--json", action="store_true")


def run(args):
    check_options(args)
    model = load_model(args.model)
    r = plan_build(model, args.board, arch=args.arch, baud=args.baud, max_batch=args.max_batch,
                   clock_mhz=args.clock_mhz, into=args.into, loadable=args.loadable,
                   also=[load_model(path) for path in args.also],
                   array=args.array_shape)
    if r["fits"]:
        est = r["estimate"]
        lines = [f"{args.board} ({r['device']}): {r['architecture']} ({r['architecture_reason']}), {r['pes']} PEs, "
                 f"arrays {r['arrays']}",
                 f"estimate {est} of {r['capacity']}",
                 f"{r['cycles_per_inference']} cycles per inference ({r['cycles_source']}) -> "
                 f"{r['compute_inferences_per_s']} inferences/s computed at {r['clock_mhz']:g} MHz; the link "
                 f"carries {r['link']['inferences_per_s']}: the {r['bound']} binds",
                 "per layer: " + ", ".join(f"{l['cycles']} cycles ({l['roofline_fraction']:.0%} of roofline"
                                          + (f", {l['bound']}-bound)" if "bound" in l else ")")
                                          for l in r["layers"])]
    else:
        lines = [f"does not fit: {r['reason']}"]
    if "into" in r:
        lines.append(f"fits the overlay in {args.into}: " + ("yes" if r["into"]["fits"] else f"no, {r['into']['reason']}"))
    emit(r, args.json, "\n".join(lines))
    return 0 if r["fits"] and r.get("into", {"fits": True})["fits"] else 1
