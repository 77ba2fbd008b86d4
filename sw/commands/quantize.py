"""``lowbit quantize``: float model + calibration data -> quantized model file (.lbm)."""

import sys

from ..cli import emit
from ..errors import LowbitError
from ..ir.floatnet import check_input_shape
from ..importers.load import load_float_net
from ..inputs import load_data
from ..outputs import check_output_path
from ..quant.posttrain import CALIBRATIONS, compare_reports, equalize_net, error_report, quantize_net

NAME = "quantize"
HELP = "post-training quantization of a float model into a lowbit model (.lbm)"


def add_arguments(p):
    p.add_argument("model", help="float model: .npz (docs/model-format.md), .onnx, or PyTorch .pt")
    p.add_argument("--input-shape", help="input shape of a PyTorch model, C,H,W or K")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a .pt that holds a whole pickled nn.Sequential: unpickling RUNS CODE FROM THE FILE, "
                        "so only for files you trust (without it, only tensors and lowbit's layer list are read)")
    p.add_argument("--calib-data", required=True, help=".npz with calibration inputs x")
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--calib", choices=CALIBRATIONS, default="mse")
    p.add_argument("--bias-correction", action="store_true",
                   help="fold each layer's mean output error on the calibration data into its integer bias")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer range equalisation of ReLU layer pairs before quantizing")
    p.add_argument("--adaround", action="store_true",
                   help="learned rounding (AdaRound): round each weight up or down to minimise the layer's "
                        "output error on the calibration data (seconds per layer)")
    p.add_argument("--seed", type=int, default=0, help="seed of --adaround's mini-batches (default 0)")
    p.add_argument("--report", action="store_true",
                   help="per-layer error (MSE, max abs error, SQNR); with a compensation flag, before and after")
    p.add_argument("-o", "--output", required=True, help="output .lbm file")
    p.add_argument("--json", action="store_true")


def run(args):
    if not args.output.endswith(".lbm"):
        raise LowbitError(f"output {args.output} should end in .lbm", "lowbit model files are .lbm")
    check_output_path(args.output)
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise LowbitError(f"--input-shape {args.input_shape!r} is not a list of integers", "e.g. 1,8,8") from None
        check_input_shape(shape, "--input-shape")
    net = load_float_net(args.model, shape, trust_pickle=args.trust_pickle)
    x, _ = load_data(args.calib_data)
    common = dict(weight_bits=args.weight_bits, act_bits=args.act_bits, per_channel=args.per_channel,
                  calib=args.calib)
    steps = [name for name, on in (("equalize", args.equalize), ("bias_correction", args.bias_correction),
                                   ("adaround", args.adaround)) if on]
    qnet, channel_scale = equalize_net(net) if args.equalize else (net, None)
    if args.adaround:
        print("[lowbit] AdaRound: learning the rounding of each layer on the calibration data", file=sys.stderr)
    model = quantize_net(qnet, x, bias_correction=args.bias_correction, adaround=args.adaround, seed=args.seed,
                         **common)
    if args.equalize:
        model.meta["equalize"] = True
    model.save(args.output)
    result = {"output": args.output, "layers": len(model.layers), "weight_bits": args.weight_bits,
              "act_bits": args.act_bits, "per_channel": args.per_channel, "calib": args.calib,
              "compensation": steps}
    lines = [f"wrote {args.output}: {len(model.compute_layers())} compute layers, "
             f"{args.weight_bits}-bit weights, {args.act_bits}-bit activations"
             + (f", {' + '.join(steps)}" if steps else "")]
    if args.report and steps:
        # Before: plain PTQ with the same settings; after: this model. Both against the original float net.
        before = error_report(net, quantize_net(net, x, **common), x)
        rep = compare_reports(before, error_report(net, model, x, channel_scale))
        result["report"] = rep
        lines.append(f"per-layer error on the calibration data, plain PTQ -> {' + '.join(steps)}:")
        lines.append(f"{'layer':>5} {'kind':<7} {'MSE before':>11} {'MSE after':>11} {'SQNR dB before':>15} "
                     f"{'after':>7}")
        lines += [f"{r['layer']:>5} {r['kind']:<7} {r['mse_before']:>11.4g} {r['mse_after']:>11.4g} "
                  f"{r['sqnr_db_before']:>15} {r['sqnr_db_after']:>7}" for r in rep]
    elif args.report:
        rep = [r.as_dict() for r in error_report(net, model, x)]
        result["report"] = rep
        lines.append(f"{'layer':>5} {'kind':<7} {'MSE':>10} {'max abs':>9} {'SQNR dB':>8}")
        lines += [f"{r['layer']:>5} {r['kind']:<7} {r['mse']:>10.4g} {r['max_abs_error']:>9.4g} {r['sqnr_db']:>8}"
                  for r in rep]
    emit(result, args.json, "\n".join(lines))
    return 0
