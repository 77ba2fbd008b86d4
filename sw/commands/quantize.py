"""``lowbit quantize``: float model + calibration data -> quantized model file (.lbm)."""

from ..cli import emit
from ..errors import LowbitError
from ..floatnet import check_input_shape
from ..loaders import load_data, load_float_net
from ..outputs import check_output_path
from ..posttrain import CALIBRATIONS, error_report, quantize_net

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
    p.add_argument("--report", action="store_true", help="per-layer error (MSE, max abs error, SQNR)")
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
    model = quantize_net(net, x, weight_bits=args.weight_bits, act_bits=args.act_bits,
                         per_channel=args.per_channel, calib=args.calib)
    model.save(args.output)
    result = {"output": args.output, "layers": len(model.layers), "weight_bits": args.weight_bits,
              "act_bits": args.act_bits, "per_channel": args.per_channel, "calib": args.calib}
    lines = [f"wrote {args.output}: {len(model.compute_layers())} compute layers, "
             f"{args.weight_bits}-bit weights, {args.act_bits}-bit activations"]
    if args.report:
        rep = [r.as_dict() for r in error_report(net, model, x)]
        result["report"] = rep
        lines.append(f"{'layer':>5} {'kind':<7} {'MSE':>10} {'max abs':>9} {'SQNR dB':>8}")
        lines += [f"{r['layer']:>5} {r['kind']:<7} {r['mse']:>10.4g} {r['max_abs_error']:>9.4g} {r['sqnr_db']:>8}"
                  for r in rep]
    emit(result, args.json, "\n".join(lines))
    return 0
