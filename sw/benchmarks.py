"""The tables behind ``lowbit bench``: cycles and utilisation of the demo models and of Dense layers
(GEMV) of growing size, measured in simulation; synthesis figures of engines on UP5K and ECP5-85F."""

from __future__ import annotations

import numpy as np

from . import arith
from .errors import LowbitError
from .model import Dense, Model, QuantSpec, Requant

__all__ = ["random_dense_model", "cycle_rows", "synth_rows", "reference_rows", "GEMMS", "SYNTH_CONFIGS"]

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
    ("engine", "ecp5-85f", 8, 8, 8, "lut", "tree"), ("engine", "ecp5-85f", 8, 8, 8, "dsp", "tree")]

#: nextpnr's timing target per device: iCEBreaker's 12 MHz clock for UP5K; 100 MHz for ECP5-85F, so that
#: timing-driven placement works towards the >= 90 MHz goal (the reported Fmax is what was reached).
SYNTH_TARGET_MHZ = {"ice40-up5k": 12, "ecp5-85f": 100}

REDUCTIONS = {"tree": {}, "systolic": {"systolic": True}, "systolic2d": {"systolic": True, "systolic_2d": True}}


def synth_config_name(what, dev, r, c, bits, mult, reduction) -> str:
    """Row name, e.g. ``array-8x8-4bit-systolic`` or ``engine-2x4-4bit-dsp-pack``."""
    return (f"{what}-{r}x{c}-{bits}bit" + ("" if mult == "lut" else f"-{mult}")
            + ("" if reduction == "tree" else f"-{reduction}"))


def random_dense_model(k: int, n: int, bits: int = 4, seed: int = 0, requant: bool = False,
                       weight_signed: bool = True) -> Model:
    """One random Dense layer with ``bits``-bit weights and unsigned ``bits``-bit inputs."""
    rng = np.random.default_rng(seed)
    lo, hi = arith.int_range(bits, weight_signed)
    w = rng.integers(lo, hi + 1, (k, n))
    b = rng.integers(-100, 100, n)
    if requant:
        mult, shift = arith.quantize_multiplier(np.full(n, 0.01))
        layer = Dense(w, b, QuantSpec(bits, weight_signed), QuantSpec(bits, False),
                      Requant(mult, shift, 0, 0, (1 << bits) - 1, True))
    else:
        layer = Dense(w, b, QuantSpec(bits, weight_signed), None, None)
    return Model((k,), QuantSpec(bits, False), [layer], f"dense{k}x{n}").validate()


def cycle_rows(progress=lambda m: None) -> list[dict]:
    from .build import fold_model, layer_shapes, measure_cycles
    from .digits import digits_split, train_cnn, train_mlp
    from .posttrain import quantize_net
    from .synth import device
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
    from pathlib import Path

    from ..hw.array import MacArray
    from ..hw.config import ArrayConfig
    from ..hw.dense import DenseEngine, EngineParams
    from .bench import synth_core
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
        rows.append({**head, "fits": True, "lcs_per_mac": round(row["logic"] / (r * c), 1), **row})
    return rows


def reference_rows(repeats: int = 5) -> list[dict]:
    """Inferences per second of the integer reference on the digits test split (one batch of 540)."""
    import time

    from .digits import digits_split, train_cnn, train_mlp
    from .intref import run
    from .posttrain import quantize_net
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
