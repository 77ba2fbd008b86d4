"""``lowbit verilog``: Verilog of the MAC array, of a layer engine (array + sequencing + requantizer) or
of a model's core."""

import numpy as np

from ..cli import emit
from ..errors import LowbitError
from ..outputs import atomic_file, check_output_path

NAME = "verilog"
#: Largest --k / --n of a random engine layer (its weights are generated in memory).
MAX_ENGINE_SIZE = 4096
HELP = ("write Verilog: an R x C MAC array, with --engine a layer engine for a random layer, or (given a .lbm) "
        "the model's accelerator core")


def add_arguments(p):
    p.add_argument("model", nargs="?", help="quantized model (.lbm): write its board core instead")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--act-signed", action="store_true", help="signed activation codes (default unsigned)")
    p.add_argument("--weight-unsigned", action="store_true", help="unsigned weight codes (default signed)")
    p.add_argument("--binary", action="store_true", help="±1 activations and weights (XNOR-popcount)")
    p.add_argument("--binary-weights", action="store_true",
                   help="±1 weights on --act-bits integer activations (a conditional negate per product)")
    p.add_argument("--mult", choices=["lut", "dsp"], default="lut",
                   help="products in logic, or in DSP blocks where Yosys maps them")
    p.add_argument("--dsp-pack", action="store_true", help="with --mult dsp: two columns' products per DSP")
    p.add_argument("--no-product-reg", action="store_true", help="no register between products and sums")
    p.add_argument("--engine", action="store_true",
                   help="a whole layer engine (input buffer, weight ROM, sequencer, requantizer) for a random layer")
    p.add_argument("--systolic", action="store_true",
                   help="column sums by a skewed partial-sum chain instead of an adder tree")
    p.add_argument("--systolic-2d", action="store_true",
                   help="with --systolic: activations hop column to column, outputs de-skewed")
    p.add_argument("--k", type=int, help=f"with --engine: layer inputs, 1 to {MAX_ENGINE_SIZE} (default 4 x rows)")
    p.add_argument("--n", type=int, help=f"with --engine: layer outputs, 1 to {MAX_ENGINE_SIZE} (default 4 x cols)")
    p.add_argument("--board", default="icebreaker", help="with a model: board whose device sizes the arrays")
    p.add_argument("--lint", action="store_true", help="lint the result with Verilator (documented waivers)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", action="store_true")


def run(args):
    from amaranth.back import verilog

    from ...hw.config import ArrayConfig
    for option, value in (("--k", args.k), ("--n", args.n)):
        # 0 used to mean "default" silently; the defaults are spelled out in --help.
        if value is not None and not 1 <= value <= MAX_ENGINE_SIZE:
            raise LowbitError(f"{option} {value} is outside 1 to {MAX_ENGINE_SIZE}",
                              f"leave {option} out for the default (4 x rows or 4 x cols)")
    check_output_path(args.output)
    if args.model:
        from ...boards.targets import board_device, platform_class
        from ...hw.accel import AccelCore
        from ..flow.build import fold_model
        from ..flow.record import DEFAULT_BAUD
        from ..quant.load import load_model
        model = load_model(args.model)
        platform = platform_class(args.board)()
        arrays = [(f.rows, f.cols) for f in fold_model(model, board_device(platform)).layers]
        top, name = AccelCore(model, arrays, platform.default_clk_frequency, DEFAULT_BAUD), "lowbit_core"
        what = f"accelerator core of {args.model} with arrays {arrays}"
    else:
        bits_a, bits_w = (1, 1) if args.binary else (args.act_bits, 1 if args.binary_weights else args.weight_bits)
        try:
            cfg = ArrayConfig(rows=args.rows, cols=args.cols, act_bits=bits_a, weight_bits=bits_w,
                              act_signed=args.act_signed, weight_signed=not args.weight_unsigned,
                              binary=args.binary, weight_binary=args.binary_weights,
                              max_k=args.k if args.k is not None else 4 * args.rows, mult=args.mult,
                              dsp_pack=args.dsp_pack, product_reg=not args.no_product_reg,
                              systolic=args.systolic or args.systolic_2d, systolic_2d=args.systolic_2d)
        except ValueError as exc:
            raise LowbitError(str(exc), "see `lowbit verilog --help` for the accepted values") from None
        if args.engine:
            top, name, what = _random_engine(cfg, args)
        else:
            from ...hw.array import MacArray
            top, name = MacArray(cfg), "lowbit_array"
            what = f"{args.rows}x{args.cols} MAC array (latency {top.latency})"
    text = verilog.convert(top, name=name)
    with atomic_file(args.output, "w") as f:
        f.write(text)
    result = {"output": args.output, "top": name, "bytes": len(text), "what": what}
    if args.lint:
        from ...sim.verilator import lint
        lint(args.output, name)
        result["lint"] = "clean (documented waivers)"
    emit(result, args.json, f"wrote {args.output}: {what}" + (" (lints clean)" if args.lint else ""))
    return 0


def _random_engine(cfg, args):
    from ...hw.dense import DenseEngine, EngineParams
    from ..data.synthetic import random_dense_model
    from ..ir.model import Dense, QuantSpec, Thresholds
    k = args.k if args.k is not None else 4 * args.rows
    n = args.n if args.n is not None else 4 * args.cols
    if cfg.binary:
        rng = np.random.default_rng(0)
        b = QuantSpec(1, True, binary=True)
        layer, in_q = Dense(rng.choice([-1, 1], (k, n)), np.zeros(n, np.int64), b, b,
                            Thresholds(np.zeros((n, 1), np.int64), -1, 2)), b
    else:
        model = random_dense_model(k, n, cfg.weight_bits, requant=True, weight_signed=cfg.weight_signed)
        layer = model.layers[0]
        if cfg.weight_binary:
            w = np.random.default_rng(0).choice([-1, 1], (k, n))
            layer = Dense(w, layer.bias, QuantSpec(1, True, binary=True), layer.out_q, layer.requant)
        in_q = QuantSpec(cfg.act_bits, cfg.act_signed)
    engine = DenseEngine(cfg, EngineParams.from_layer(layer, in_q))
    return engine, "lowbit_engine", f"{args.rows}x{args.cols} engine for a random {k}x{n} layer"
