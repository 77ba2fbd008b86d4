"""One layer engine of a real model under cocotb + Verilator, against the integer reference.

:func:`run_engine_bench` takes a model, its array sizes and input data, picks compute layer ``index``,
feeds that layer's reference inputs (the integer reference's intermediate codes) to the engine's
Verilog as packed chunks and compares every output beat with the reference (``sim/tb_engine.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["write_vectors", "run_engine_bench"]


def _engine_and_io(model, arrays, x_float, index):
    from ..hw.dense import DenseEngine, engine_out_shape
    from ..hw.network import plan_network
    from ..sw.ir.intref import run
    from ..sw.ir.model import Conv2d
    from ..hw.packing import pack_chunks
    plans = [p for p in plan_network(model, arrays) if p.kind == "engine"]
    plan = plans[index]
    layer = model.layers[plan.layer_index]
    if isinstance(layer, Conv2d):
        raise ValueError("the engine bench drives Dense layers (a Conv2d's engine is fed by its im2col stage)")
    trace = run(model, model.quantize_input(x_float), intermediates=True)
    x = model.quantize_input(x_float) if plan.layer_index == 0 else trace[plan.layer_index - 1][1]
    x = x.reshape(len(x), -1)
    y = trace[plan.layer_index][1].reshape(len(x), -1)
    if layer.out_q is not None and layer.out_q.binary:
        y = (y > 0).astype(np.int64)
    cfg = plan.config
    abits = 1 if cfg.binary else cfg.act_bits
    chunks = [w for row in x for w in pack_chunks(row, cfg.rows, abits, cfg.binary)]
    engine = DenseEngine(cfg, plan.params)
    shape = engine_out_shape(plan.params)
    return engine, chunks, y.ravel(), shape


def write_vectors(path, chunks, expected, shape, idle=0.2, stall=0.2) -> None:
    Path(path).write_text(json.dumps({
        "chunks": [f"{int(w):x}" for w in chunks], "expected": [int(v) for v in expected],
        "out_bits": shape.width, "out_signed": shape.signed, "idle": idle, "stall": stall}))


def run_engine_bench(model, arrays, x_float, index, build_dir, *, corrupt: bool = False) -> dict:
    """Returns ``{"tests", "failures", "outputs", "beats_in"}``. ``corrupt`` flips one expected value
    (the bench must then fail)."""
    from amaranth.back import verilog

    from .verilator import cocotb_run
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    engine, chunks, expected, shape = _engine_and_io(model, arrays, x_float, index)
    if corrupt:
        expected = expected.copy()
        expected[len(expected) // 2] ^= 1
    src = build_dir / "engine.v"
    src.write_text(verilog.convert(engine, name="engine"))
    vectors = build_dir / ("vectors_bad.json" if corrupt else "vectors.json")
    write_vectors(vectors, chunks, expected, shape)
    tests, failures = cocotb_run([src], "engine", "lowbit.sim.tb_engine", build_dir,
                                 extra_env={"LOWBIT_TB_VECTORS": str(vectors.resolve())})
    return {"tests": tests, "failures": failures, "outputs": len(expected), "beats_in": len(chunks)}
