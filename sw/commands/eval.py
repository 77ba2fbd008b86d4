"""``lowbit eval``: accuracy of a model's integer reference on a data set, and its outputs on request."""

import numpy as np

from ..cli import emit
from ..errors import LowbitError
from ..ir.intref import predict
from ..inputs import load_data
from ..quant.load import load_model
from ..outputs import atomic_file, check_output_path

NAME = "eval"
HELP = "run the integer reference model on a data set and report accuracy"


def add_arguments(p):
    p.add_argument("model", help=".lbm model, or a float model (then --calib-data quantizes it)")
    p.add_argument("--data", required=True, help=".npz with inputs x and optional labels y")
    p.add_argument("--calib-data", help="calibration inputs for a float model")
    p.add_argument("--save-outputs", metavar="OUT.npz",
                   help="write the reference's outputs: 'outputs' (N x outputs, the final layer's integers) "
                        "and 'argmax' (N), to compare with the tool the model came from")
    p.add_argument("--json", action="store_true")


def evaluate(model, x, y=None) -> tuple[dict, np.ndarray]:
    """The integer reference on inputs ``x`` (labels ``y`` optional): ``(result dict, outputs)``.

    Labels must name one of the model's outputs (``0 <= y < outputs``); others are a LowbitError, since
    an accuracy over labels the model cannot predict means nothing.
    """
    out, pred = predict(model, x)
    out = out.reshape(len(out), -1)
    n_classes = out.shape[1]
    result = {"n": int(len(x)), "n_outputs": int(n_classes), "predictions": np.bincount(pred, minlength=1).tolist()}
    if y is not None:
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise LowbitError(f"label {int(y[i])} (sample {i}) is not one of the model's {n_classes} outputs "
                              f"(0 to {n_classes - 1}); {int(bad.sum())} of {len(y)} labels are outside",
                              "pass the labels of this model's classes, or omit y")
        acc = float(np.mean(pred == y))
        classes = sorted(set(y.tolist()) | set(pred.tolist()))
        per_class = {int(c): {"n": int(np.sum(y == c)), "correct": int(np.sum((y == c) & (pred == c)))} for c in classes}
        result.update(accuracy=acc, per_class=per_class)
    return result, out


def run(args):
    save = check_output_path(args.save_outputs) if args.save_outputs else None
    x, y = load_data(args.data)
    calib = load_data(args.calib_data)[0] if args.calib_data else None
    # A float model is quantized with 'lowbit quantize''s defaults (per-tensor weights), so the two agree.
    model = load_model(args.model, calib, per_channel=False)
    result, out = evaluate(model, x, y)
    text = [f"{len(x)} inputs"]
    if "accuracy" in result:
        text.append(f"accuracy {result['accuracy']:.2%}")
        text += [f"  class {c}: {v['correct']}/{v['n']}" for c, v in result["per_class"].items()]
    if save is not None:
        with atomic_file(save) as f:
            np.savez(f, outputs=out, argmax=np.argmax(out, axis=1))
        result["saved_outputs"] = str(save)
        text.append(f"outputs written to {save}")
    emit(result, args.json, "\n".join(text))
    return 0
