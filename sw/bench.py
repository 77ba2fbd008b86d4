"""Benchmarks anyone can rerun: synthesis figures of a core out of context, and throughput tables.

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
from .synth import device as get_device
from .synth import implement

__all__ = ["synth_core"]


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
