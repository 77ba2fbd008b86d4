"""``lowbit train``: quantization-aware fine-tuning of a float model into a lowbit model (.lbm)."""

from ..cli import emit
from ..errors import LowbitError
from ..ir.floatnet import check_input_shape
from ..importers.load import load_float_net
from ..inputs import load_data
from ..outputs import check_output_path
from ..quant.qat import SCALES, stderr_log, train_qat

NAME = "train"
HELP = "quantization-aware training (fake-quantized weights and activations) into a lowbit model (.lbm)"


def add_arguments(p):
    p.add_argument("model", help="float model: .npz (docs/model-format.md), .onnx, or PyTorch .pt")
    p.add_argument("--input-shape", help="input shape of a PyTorch model, C,H,W or K")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a .pt that holds a whole pickled nn.Sequential (RUNS CODE FROM THE FILE)")
    p.add_argument("--train-data", required=True, help=".npz with training inputs x and integer labels y")
    p.add_argument("--val-data", help=".npz with validation x, y: the epoch with the best validation accuracy "
                                      "is exported (else the last)")
    p.add_argument("--weight-bits", type=int, required=True, help="2 to 8, or 1 with --act-bits 1 (binary)")
    p.add_argument("--act-bits", type=int, required=True)
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per layer (default: per channel)")
    p.add_argument("--scales", choices=SCALES, default="learned",
                   help="learn the quantization scales (LSQ) or keep the calibrated start (default learned)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, help="Adam learning rate at the start of the cosine decay "
                                            "(default 1e-3, binary 3e-2)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--distill", type=float, help="weight 0 to 1 of the float model's softmax in the target "
                                                "(knowledge distillation; default 0, binary 1)")
    p.add_argument("--input-noise", type=float, help="std of Gaussian noise added to each batch's inputs before "
                                                     "quantization (default 0, binary 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="output .lbm file")
    p.add_argument("--json", action="store_true")


def run(args):
    if not args.output.endswith(".lbm"):
        raise LowbitError(f"output {args.output} should end in .lbm", "lowbit model files are .lbm")
    check_output_path(args.output)
    if not 0 <= args.epochs <= 100_000:
        raise LowbitError(f"--epochs {args.epochs} must be from 0 to 100000")
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise LowbitError(f"--input-shape {args.input_shape!r} is not a list of integers", "e.g. 1,8,8") from None
        check_input_shape(shape, "--input-shape")
    net = load_float_net(args.model, shape, trust_pickle=args.trust_pickle)
    x, y = load_data(args.train_data, need_labels=True)
    val = load_data(args.val_data, need_labels=True) if args.val_data else None
    stderr_log(f"training {args.weight_bits}/{args.act_bits} for {args.epochs} epochs on {len(x)} inputs")
    result = train_qat(net, x, y, weight_bits=args.weight_bits, act_bits=args.act_bits, epochs=args.epochs,
                       lr=args.lr, seed=args.seed, batch=args.batch, per_channel=not args.per_tensor,
                       scales=args.scales, val=val, log=stderr_log, distill=args.distill,
                       input_noise=args.input_noise)
    result.model.save(args.output)
    train_acc = float((result.net.predict_logits(x).argmax(axis=1) == y).mean())
    out = {"output": args.output, "weight_bits": args.weight_bits, "act_bits": args.act_bits,
           "epochs": args.epochs, "seconds": round(result.seconds, 2), "train_accuracy": train_acc,
           "history": result.history}
    text = [f"wrote {args.output}: {len(result.model.compute_layers())} compute layers, "
            f"{args.weight_bits}-bit weights, {args.act_bits}-bit activations, trained {args.epochs} epochs "
            f"in {result.seconds:.1f} s", f"training accuracy {train_acc:.2%}"]
    if val is not None:
        out["val_accuracy"] = max(h["val_accuracy"] for h in result.history) if result.history else None
        if out["val_accuracy"] is not None:
            text.append(f"validation accuracy {out['val_accuracy']:.2%} (best epoch, exported)")
    emit(out, args.json, "\n".join(text))
    return 0
