"""A PLL between the board's oscillator and the design, so a core can run faster than the crystal.

The divider settings come from the vendor-independent calculators of the open toolchains (``icepll``
for iCE40, ``ecppll`` for ECP5, both from the YoWASP packages lowbit installs); :func:`pll_plan` runs
them and reads the settings back, and :class:`PllClock` instantiates the primitive (``SB_PLL40_PAD``
on the clock pad / ``EHXPLLL``) and holds the ``sync`` domain in reset until the PLL locks.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from amaranth import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..sw.errors import LowbitError
from ..sw.flow.toolchain import run_tool

__all__ = ["PllPlan", "pll_plan", "PllClock", "PLL_RANGE_MHZ"]

#: Output frequency range of each family's PLL (the calculators' own limits).
PLL_RANGE_MHZ = {"ice40": (16.0, 275.0), "ecp5": (10.0, 400.0)}
#: How far the achieved frequency may lie from the requested one.
TOLERANCE = 0.01


@dataclass(frozen=True)
class PllPlan:
    family: str
    in_mhz: float
    out_mhz: float                     # achieved
    params: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@lru_cache(maxsize=None)
def pll_plan(family: str, in_mhz: float, out_mhz: float) -> PllPlan:
    """Divider settings for ``out_mhz`` from an ``in_mhz`` oscillator (LowbitError if not reachable
    within 1 %). Cached: a build asks once for the report and once for the board top."""
    lo, hi = PLL_RANGE_MHZ.get(family, (None, None))
    if lo is None:
        raise LowbitError(f"no PLL support for {family} devices", "leave out --clock-mhz")
    if not lo <= out_mhz <= hi:
        raise LowbitError(f"--clock-mhz {out_mhz:g} is outside the {family} PLL's {lo:g}-{hi:g} MHz range",
                          "choose a clock in that range (at most the design's Fmax)")
    with tempfile.TemporaryDirectory(prefix="lowbit-pll-") as tmp:
        if family == "ice40":
            proc = run_tool("icepll", ["-i", f"{in_mhz:g}", "-o", f"{out_mhz:g}", "-p", "-q", "-f", "pll.vh"],
                            cwd=tmp)
            text = (Path(tmp) / "pll.vh").read_text()
            achieved = float(re.search(r"Achieved output frequency:\s*([\d.]+)", text).group(1))
            params = {"FEEDBACK_PATH": "SIMPLE"}
            for name in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE"):
                params[name] = int(re.search(rf"\.{name}\(\d+'b([01]+)\)", text).group(1), 2)
            attrs = {}
        else:
            proc = run_tool("ecppll", ["-i", f"{in_mhz:g}", "-o", f"{out_mhz:g}", "-f", "pll.v"], cwd=tmp)
            text = (Path(tmp) / "pll.v").read_text()
            achieved = float(re.search(r"clkout0 frequency:\s*([\d.]+)", proc.stdout + proc.stderr).group(1))
            block = text[text.index("EHXPLLL #("):text.index(") pll_i")]
            params = {k: (int(v) if v.isdigit() else v.strip('"'))
                      for k, v in re.findall(r"\.(\w+)\(([^)]*)\)", block)}
            attrs = {k: v for k, v in re.findall(r'\(\*\s*(\w+)="([^"]*)"\s*\*\)', text)
                     if not k.startswith("FREQUENCY_PIN")}
            attrs.update({"FREQUENCY_PIN_CLKI": f"{in_mhz:g}", "FREQUENCY_PIN_CLKOP": f"{achieved:g}"})
    if abs(achieved - out_mhz) > TOLERANCE * out_mhz:
        raise LowbitError(f"the PLL cannot make {out_mhz:g} MHz from {in_mhz:g} MHz (nearest {achieved:g} MHz)",
                          f"use --clock-mhz {achieved:g}")
    return PllPlan(family, in_mhz, achieved, params, attrs)


class PllClock(Elaboratable):
    """Creates the ``sync`` domain at ``plan.out_mhz`` from the platform's default clock pin; ``sync``
    stays in reset until the PLL reports lock."""

    def __init__(self, plan: PllPlan):
        self.plan = plan

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        m.domains.sync = cd_sync = ClockDomain("sync")
        pin = platform.request(platform.default_clk, dir="-")
        clk, lock = Signal(), Signal()
        if plan.family == "ice40":
            # SB_PLL40_PAD takes the package pin itself (the board's oscillator is on a PLL pad).
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", **{f"p_{k}": v for k, v in plan.params.items()},
                io_PACKAGEPIN=pin.io, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            m.submodules.clk_buf = buf = io.Buffer("i", pin)
            m.submodules.pll = Instance(
                "EHXPLLL", **{f"p_{k}": v for k, v in plan.params.items()},
                **{f"a_{k}": v for k, v in plan.attrs.items()},
                i_CLKI=buf.i, o_CLKOP=clk, i_CLKFB=clk, o_LOCK=lock, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0)
        m.d.comb += cd_sync.clk.eq(clk)
        m.submodules.reset = ResetSynchronizer(~lock, domain="sync")
        return m
