"""The benchmarks behind ``lowbit bench``, anyone can rerun them: cycles and utilisation of the demo
models and of Dense layers (GEMV) of growing size, measured in simulation; reference inferences/s; and
synthesis figures of arrays and engines on UP5K and ECP5-85F.

:func:`synth_core` measures a core's logic, DSP and BRAM use and Fmax on a device, out of context,
behind :class:`lowbit.hw.iowrap.SerialWrapper` (a UP5K has only 39 I/Os). The wrapper costs one
logic cell per input bit (an iCE40/ECP5 flip-flop takes a cell with a pass-through LUT) and an XOR
tree of about one LUT4 per three output bits; that estimate is subtracted, and both the total and the
estimate are reported, so the figure can be checked.
"""

from __future__ import annotations

import time
from pathlib import Path

from amaranth.back import verilog

from ..hw.iowrap import SerialWrapper, wrapper_overhead
from .data.synthetic import random_dense_model
from .errors import LowbitError
from .flow.synth import device as get_device
from .flow.synth import implement

__all__ = ["synth_core", "cycle_rows", "synth_rows", "reference_rows", "overlay_rows", "GEMMS", "SYNTH_CONFIGS",
           "OVERLAY_MODELS"]

#: (name, K, N, rows, cols) of the Dense-layer rows.
GEMMS = [("gemv-64x32", 64, 32, 8, 8), ("gemv-128x64", 128, 64, 8, 8), ("gemv-256x64", 256, 64, 8, 8),
         ("gemv-256x128", 256, 128, 16, 8), ("gemv-100x30", 100, 30, 8, 8)]
#: (what, device, rows, cols, bits, multipliers, reduction) of the synthesis rows. "array" is the MAC
#: array alone (lowbit.hw.array.MacArray: products and column sums, what the acceptance figures per MAC
#: are about); "engine" adds the input buffer, weight ROM, sequencer, accumulators and requantizer of a
#: layer engine (an 8R x 4C layer). Multipliers: "dsp" lets Yosys map the products to SB_MAC16 (UP5K
#: has 8) or MULT18X18D (85F has 156), "dsp-pack" also computes two columns' products with one
#: multiplier (ArrayConfig.dsp_pack), "lut" keeps them in logic. Reduction: "tree" (adder tree),
#: "systolic" (skewed partial-sum chain of PEs) or "systolic2d" (activations hop column to column too).
SYNTH_CONFIGS = [
    ("array", "ice40-up5k", 4, 4, 4, "lut", "tree"), ("array", "ice40-up5k", 4, 4, 4, "lut", "systolic"),
    ("array", "ice40-up5k", 4, 4, 2, "lut", "tree"), ("array", "ice40-up5k", 4, 4, 2, "lut", "systolic"),
    ("array", "ice40-up5k", 8, 8, 4, "lut", "tree"), ("array", "ice40-up5k", 8, 8, 4, "lut", "systolic"),
    ("array", "ice40-up5k", 8, 8, 2, "lut", "tree"), ("array", "ice40-up5k", 8, 8, 2, "lut", "systolic"),
    ("array", "ecp5-85f", 16, 16, 4, "lut", "tree"), ("array", "ecp5-85f", 16, 16, 4, "lut", "systolic"),
    ("array", "ecp5-85f", 16, 16, 4, "lut", "systolic2d"),
    ("engine", "ice40-up5k", 4, 4, 4, "lut", "tree"), ("engine", "ice40-up5k", 4, 4, 4, "lut", "systolic"),
    ("engine", "ice40-up5k", 4, 4, 2, "lut", "tree"), ("engine", "ice40-up5k", 8, 8, 4, "lut", "tree"),
    ("engine", "ice40-up5k", 8, 8, 4, "lut", "systolic"),
    ("engine", "ice40-up5k", 8, 8, 2, "lut", "tree"), ("engine", "ice40-up5k", 2, 4, 8, "lut", "tree"),
    ("engine", "ice40-up5k", 2, 4, 8, "dsp", "tree"), ("engine", "ice40-up5k", 1, 4, 8, "dsp", "tree"),
    ("engine", "ice40-up5k", 2, 4, 4, "lut", "tree"), ("engine", "ice40-up5k", 2, 4, 4, "dsp", "tree"),
    ("engine", "ice40-up5k", 2, 4, 4, "dsp-pack", "tree"),
    ("engine", "ecp5-85f", 16, 16, 4, "lut", "tree"), ("engine", "ecp5-85f", 16, 16, 4, "lut", "systolic"),
    ("engine", "ecp5-85f", 8, 8, 8, "lut", "tree"), ("engine", "ecp5-85f", 8, 8, 8, "dsp", "tree"),
    # The overlay engine (hw/overlay.py) alone, for a layer of the row's width: one array for every layer.
    ("overlay", "ice40-up5k", 4, 8, 4, "lut", "tree"), ("overlay", "ice40-up5k", 8, 8, 2, "lut", "tree"),
    ("overlay", "ice40-up5k", 8, 8, 1, "lut", "tree"), ("overlay", "ice40-up5k", 16, 4, 1, "lut", "tree")]

#: nextpnr's timing target per device: iCEBreaker's 12 MHz clock for UP5K; 100 MHz for ECP5-85F, so that
#: timing-driven placement works towards the >= 90 MHz goal (the reported Fmax is what was reached).
SYNTH_TARGET_MHZ = {"ice40-up5k": 12, "ecp5-85f": 100}

REDUCTIONS = {"tree": {}, "systolic": {"systolic": True}, "systolic2d": {"systolic": True, "systolic_2d": True}}


def synth_config_name(what, dev, r, c, bits, mult, reduction) -> str:
    """Row name, e.g. ``array-8x8-4bit-systolic`` or ``engine-2x4-4bit-dsp-pack``."""
    return (f"{what}-{r}x{c}-{bits}bit" + ("" if mult == "lut" else f"-{mult}")
            + ("" if reduction == "tree" else f"-{reduction}"))


def cycle_rows(progress=lambda m: None) -> list[dict]:
    from .flow.build import fold_model, layer_shapes, measure_cycles
    from .data.digits import digits_split, train_cnn, train_mlp
    from .quant.posttrain import quantize_net
    from .flow.synth import device
    rows = []
    xtr, ytr, _, _ = digits_split()
    for name, trainer in (("digits-mlp-4bit", train_mlp), ("digits-cnn-4bit", train_cnn)):
        progress(f"simulating {name}")
        model = quantize_net(trainer(xtr, ytr), xtr, per_channel=True)
        arrays = [(f.rows, f.cols) for f in fold_model(model, device("ice40-up5k")).layers]
        cyc = measure_cycles(model, arrays)
        macs = sum(s.macs for s in layer_shapes(model))
        pes = sum(r * c for r, c in arrays)
        rows.append({"name": name, "arrays": arrays, "macs": macs, "cycles": cyc["cycles_per_inference"],
                     "utilization": round(macs / (pes * cyc["cycles_per_inference"]), 4),
                     "latency_cycles": cyc["latency_cycles"]})
    for name, k, n, r, c in GEMMS:
        progress(f"simulating {name} on a {r}x{c} array")
        cyc = measure_cycles(random_dense_model(k, n), [(r, c)])
        rows.append({"name": name, "arrays": [(r, c)], "macs": k * n, "cycles": cyc["cycles_per_inference"],
                     "utilization": round(k * n / (r * c * cyc["cycles_per_inference"]), 4),
                     "latency_cycles": cyc["latency_cycles"]})
    return rows


def synth_rows(outdir, progress=lambda m: None, only: str | None = None) -> list[dict]:
    """Synthesise the :data:`SYNTH_CONFIGS` rows whose name (or device) contains ``only`` (all if None)."""
    import functools


    from ..hw.array import MacArray
    from ..hw.config import ArrayConfig
    from ..hw.dense import DenseEngine, EngineParams
    rows = []
    for what, dev, r, c, bits, mult, reduction in SYNTH_CONFIGS:
        name = synth_config_name(what, dev, r, c, bits, mult, reduction)
        if only and only not in name and only not in dev:
            continue
        progress(f"synthesising {name} for {dev}")
        model = random_dense_model(8 * r, 4 * c, bits, requant=True)
        layer = model.layers[0]
        cfg = ArrayConfig(rows=r, cols=c, act_bits=bits, weight_bits=bits, act_signed=False, weight_signed=True,
                          max_k=layer.k, mult="dsp" if mult.startswith("dsp") else mult,
                          dsp_pack=mult == "dsp-pack", **REDUCTIONS[reduction])
        if what == "array":
            make = functools.partial(MacArray, cfg)
        elif what == "overlay":
            from .flow.overlay import compile_program, config_for
            from ..hw.overlay import OverlayEngine
            ocfg = config_for(model, r, c)
            prog = compile_program(model, ocfg)
            make = functools.partial(OverlayEngine, ocfg, prog.descriptors, prog.weights, prog.params)
        else:
            make = functools.partial(DenseEngine, cfg, EngineParams.from_layer(layer, model.input_q))
        head = {"name": name, "what": what, "device": dev, "rows": r, "cols": c, "bits": bits, "mult": mult,
                "reduction": reduction}
        try:
            row = synth_core(make, dev, Path(outdir) / f"{dev}_{name}",
                             clock_mhz=SYNTH_TARGET_MHZ[dev], mult=cfg.mult)
        except LowbitError as exc:          # a configuration that does not fit is a result too
            rows.append({**head, "fits": False, "error": exc.message, "logic": None, "lcs_per_mac": None,
                         "bram": None, "dsp": None, "fmax_mhz": None})
            continue
        rows.append({**head, "fits": True, "lcs_per_mac": round(row["logic"] / (r * c), 1), **row,
                     "pes": r * c, "macs_per_s_at_fmax": round(r * c * row["fmax_mhz"] * 1e6)})
    return rows


#: Models of the overlay rows: FINN's TFC topology at 1, 2 and 4 bits, the digits MLP's shape, and the
#: MNIST CNN's (``"cnn"``: conv 3x3 1->8, pool, conv 3x3 8->16, pool, dense 10; multi-threshold
#: activations, as ``train_qat`` gives it).
OVERLAY_MODELS = [("tfc-w1a1", (784, 64, 64, 64, 10), 1), ("tfc-w2a2", (784, 64, 64, 64, 10), 2),
                  ("tfc-w4a4", (784, 64, 64, 64, 10), 4), ("mlp-64-32-10-w4a4", (64, 32, 10), 4),
                  ("mnist-cnn-w2a2", "cnn", 2)]


def overlay_rows(progress=lambda m: None, devices=("ice40-up5k", "ecp5-85f")) -> list[dict]:
    """The overlay the planner picks for each of :data:`OVERLAY_MODELS` on each device (random weights:
    the plan depends only on shapes and widths): array, PEs, weight port, cycles per inference (the cycle
    model, equal to simulation by tests/test_overlay.py), products in DSP blocks, and each layer's
    fraction of its roofline
    ``max(compute roof, weight-bandwidth roof)`` — or why it does not fit."""
    from .data.synthetic import random_cnn, random_mlp
    from .flow.overlay import plan_overlay
    rows = []
    for name, shape, bits in OVERLAY_MODELS:
        model = random_cnn(bits=bits, thresholds=True) if shape == "cnn" else random_mlp(shape, bits)
        for dev_name in devices:
            progress(f"planning {name} on {dev_name}")
            head = {"name": name, "device": dev_name, "bits": bits}
            try:
                plan = plan_overlay(model, get_device(dev_name), max_batch=2)
            except LowbitError as exc:
                rows.append({**head, "fits": False, "error": exc.message})
                continue
            cfg = plan.config
            rows.append({**head, "fits": True, "array": [cfg.rows, cfg.cols], "pes": cfg.macs,
                         "dsp_products": 2 * cfg.dsp_pairs,
                         "port_bits": cfg.port_bits, "cycles": plan.cycles, "estimate": plan.estimate,
                         "kinds": [p.kind for p in plan.program.layers],
                         "roofline_fraction": [round(p.roofline_fraction, 3) for p in plan.program.layers],
                         "bounds": [p.bound for p in plan.program.layers]})
    return rows


def reference_rows(repeats: int = 5) -> list[dict]:
    """Inferences per second of the integer reference on the digits test split (one batch of 540)."""
    import time

    from .data.digits import digits_split, train_cnn, train_mlp
    from .ir.intref import run
    from .quant.posttrain import quantize_net
    xtr, ytr, xte, _ = digits_split()
    rows = []
    for name, trainer in (("digits-mlp-4bit", train_mlp), ("digits-cnn-4bit", train_cnn)):
        model = quantize_net(trainer(xtr, ytr), xtr, per_channel=True)
        codes = model.quantize_input(xte)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(model, codes)
            best = min(best, time.perf_counter() - t0)
        rows.append({"name": name, "batch": len(codes), "inferences_per_s": round(len(codes) / best, 1)})
    return rows


def synth_core(make_core, device_name: str, outdir, *, clock_mhz: float = 12.0, mult: str = "lut",
               name: str = "core", progress=lambda msg: None) -> dict:
    """Synthesise, place and route ``make_core()`` out of context; return a row of figures.

    Keys: ``device``, ``logic`` (core only: total less the wrapper estimate), ``logic_resource``,
    ``logic_total``, ``wrapper_logic_estimate``, ``dsp``, ``bram``, ``fmax_mhz``, ``seconds``.
    """
    dev = get_device(device_name)
    outdir = Path(outdir)
    t0 = time.monotonic()
    core = make_core()
    bits = wrapper_overhead(core)
    wrapper = bits["input_bits"] + -(-(bits["output_bits"] - 1) // 3) + 1
    wrapped = outdir / "core"
    wrapped.mkdir(parents=True, exist_ok=True)
    (wrapped / f"{name}.v").write_text(verilog.convert(SerialWrapper(core), name=name))
    result = implement([wrapped / f"{name}.v"], name, dev, wrapped, clock_mhz=clock_mhz, mult=mult,
                       pack=False, progress=progress, timing_allow_fail=True)
    res, dsp, bram = dev.logic_resource, dev.dsp_resource, dev.bram_resource
    total = result.utilization[res]["used"]
    return {
        "device": dev.name, "logic_resource": res, "logic": max(0, total - wrapper), "logic_total": total,
        "wrapper_logic_estimate": wrapper, "dsp": result.utilization.get(dsp, {}).get("used", 0),
        "bram": result.utilization.get(bram, {}).get("used", 0), "fmax_mhz": round(result.fmax_mhz, 2),
        "seconds": round(time.monotonic() - t0, 1),
    }
