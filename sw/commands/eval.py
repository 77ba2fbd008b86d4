"""``lowbit eval``: accuracy of a model's integer reference on a data set."""

import numpy as np

from ..cli import emit
from ..intref import predict
from ..loaders import load_data, load_model

NAME = "eval"
HELP = "run the integer reference model on a data set and report accuracy"


def add_arguments(p):
    p.add_argument("model", help=".lbm model, or a float model (then --calib-data quantizes it)")
    p.add_argument("--data", required=True, help=".npz with inputs x and optional labels y")
    p.add_argument("--calib-data", help="calibration inputs for a float model")
    p.add_argument("--json", action="store_true")


def run(args):
    x, y = load_data(args.data)
    calib = load_data(args.calib_data)[0] if args.calib_data else None
    # A float model is quantized with 'lowbit quantize''s defaults (per-tensor weights), so the two agree.
    model = load_model(args.model, calib, per_channel=False)
    _, pred = predict(model, x)
    result = {"n": int(len(x)), "predictions": np.bincount(pred, minlength=1).tolist()}
    text = [f"{len(x)} inputs"]
    if y is not None:
        acc = float(np.mean(pred == y))
        classes = sorted(set(y.tolist()) | set(pred.tolist()))
        per_class = {int(c): {"n": int(np.sum(y == c)), "correct": int(np.sum((y == c) & (pred == c)))} for c in classes}
        result.update(accuracy=acc, per_class=per_class)
        text.append(f"accuracy {acc:.2%}")
        text += [f"  class {c}: {v['correct']}/{v['n']}" for c, v in per_class.items()]
    emit(result, args.json, "\n".join(text))
    return 0
