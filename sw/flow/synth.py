"""Synthesis and place-and-route through the pip-installed Yosys and nextpnr, with parsed reports.

:func:`implement` takes Verilog (usually from ``amaranth.back.verilog``), runs Yosys, checks the cell
counts against the device *before* place-and-route (so a design that cannot fit fails in seconds, not
after minutes of nextpnr), runs nextpnr with a JSON report, packs the bitstream, and returns utilisation
and Fmax as nextpnr names them.

Yosys script, and why: ``proc; booth`` before ``synth_ice40`` turns LUT multipliers into Booth-encoded
ones (26-36 % fewer LUTs measured; without ``proc`` first ``booth`` silently does nothing). With
``mult="dsp"`` the booth pass is skipped so multipliers reach the DSP mapper (``synth_ice40 -dsp``);
``synth_ecp5`` maps every multiplier of 2x2 bits or more to MULT18X18D unless ``-nodsp``, so
``mult="lut"`` passes ``-nodsp`` there.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LowbitError
from .toolchain import run_tool

__all__ = ["Family", "FAMILIES", "ICE40", "ECP5", "family_of_utilization", "Device", "DEVICES", "device", "ImplementResult", "implement", "yosys_script", "parse_nextpnr_report",
           "failed_fmax", "pack_bitstream", "PLACED_SUFFIX", "BITSTREAM_SUFFIX"]


@dataclass(frozen=True)
class Family:
    """An FPGA family as Yosys and nextpnr see it: nextpnr's names for its resources, and which resource
    each Yosys cell type occupies (for the check before place-and-route). Everything in lowbit that
    names a resource (reports, the summary, the folding budget) reads it from here.

    Attributes
    ----------
    logic_resource, ff_resource, bram_resource, dsp_resource, io_resource : str
        nextpnr's utilisation names (an iCE40 logic cell holds a LUT and a flip-flop, so its
        ``ff_resource`` is its ``logic_resource``).
    cells : dict
        Yosys cell type after synthesis -> what it occupies: ``"logic"``, ``"bram"``, ``"dsp"`` (the
        resources above) or another resource by name; :attr:`cell_resource` resolves it.
    """

    name: str
    logic_resource: str
    ff_resource: str
    bram_resource: str
    dsp_resource: str
    io_resource: str
    cells: dict

    @property
    def cell_resource(self) -> dict:
        """Yosys cell type -> nextpnr resource (for the check before place-and-route)."""
        role = {"logic": self.logic_resource, "bram": self.bram_resource, "dsp": self.dsp_resource}
        return {cell: role.get(r, r) for cell, r in self.cells.items()}


_ICE40_SPRAM = "ICESTORM_SPRAM"
ICE40 = Family("ice40", "ICESTORM_LC", "ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "SB_IO",
               {"SB_LUT4": "logic", "SB_RAM40_4K": "bram", "SB_MAC16": "dsp", "SB_SPRAM256KA": _ICE40_SPRAM})
ECP5 = Family("ecp5", "TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_IO",
              {"LUT4": "logic", "DP16KD": "bram", "MULT18X18D": "dsp"})
FAMILIES: dict[str, Family] = {f.name: f for f in (ICE40, ECP5)}

#: Narrowest product Yosys maps to a DSP block, per family: synth_ice40 leaves products of fewer than 11
#: bits in logic (a 4 x 4-bit product stays in LUTs even with -dsp: docs/hardware.md), synth_ecp5 maps
#: every multiplier of 2 x 2 bits or more.
DSP_MIN_PRODUCT_BITS = {"ice40": 11, "ecp5": 4}


def family_of_utilization(utilization: dict) -> Family:
    """The :class:`Family` whose resource names a utilisation report (``{resource: ...}``) uses."""
    for fam in FAMILIES.values():
        if fam.logic_resource in utilization:
            return fam
    raise LowbitError(f"no known FPGA family uses the resources {sorted(utilization)}",
                      f"lowbit knows {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class Device:
    """An FPGA part: family, nextpnr arguments, and the capacity of each resource (by nextpnr's names,
    which the :class:`Family` gives: ``logic_resource``, ``bram_resource``, ``dsp_resource``).

    ``lut_resource`` is the family's ``logic_resource``; it may be passed (boards do) but must agree.
    """

    name: str
    family: str
    nextpnr_args: tuple
    capacity: dict
    lut_resource: str | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"device {self.name!r} has family {self.family!r}, not one of {', '.join(FAMILIES)}")
        logic = FAMILIES[self.family].logic_resource
        if self.lut_resource not in (None, logic):
            raise ValueError(f"device {self.name!r}: the logic resource of {self.family} is {logic}, "
                             f"not {self.lut_resource!r}")
        object.__setattr__(self, "lut_resource", logic)

    @property
    def resources(self) -> Family:
        return FAMILIES[self.family]

    @property
    def logic_resource(self) -> str:
        return self.resources.logic_resource

    @property
    def bram_resource(self) -> str:
        return self.resources.bram_resource

    @property
    def dsp_resource(self) -> str:
        return self.resources.dsp_resource

    @property
    def logic_capacity(self) -> int:
        return self.capacity[self.logic_resource]


DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("ice40-up5k", "ice40", ("--up5k", "--package", "sg48"),
           {ICE40.logic_resource: 5280, ICE40.bram_resource: 30, ICE40.dsp_resource: 8, _ICE40_SPRAM: 4,
            ICE40.io_resource: 39}),
    Device("ecp5-85f", "ecp5", ("--85k", "--package", "CABGA381"),
           {ECP5.logic_resource: 83640, ECP5.ff_resource: 83640, ECP5.bram_resource: 208, ECP5.dsp_resource: 156,
            ECP5.io_resource: 365}),
    Device("ecp5-25f", "ecp5", ("--25k", "--package", "CABGA256"),
           {ECP5.logic_resource: 24288, ECP5.ff_resource: 24288, ECP5.bram_resource: 56, ECP5.dsp_resource: 28,
            ECP5.io_resource: 197}),
)}


def device(name) -> Device:
    """The :class:`Device` called ``name`` (or ``name`` itself if it is one); LowbitError listing the
    known ones otherwise."""
    if isinstance(name, Device):
        return name
    try:
        return DEVICES[name]
    except KeyError:
        raise LowbitError(f"unknown device {name!r}", f"choose one of {', '.join(DEVICES)}") from None


@dataclass
class ImplementResult:
    """What :func:`implement` measured. ``utilization`` maps nextpnr resource names to
    ``{"used": n, "available": m}``; ``fmax_mhz`` is the worst achieved clock frequency."""

    device: str
    top: str
    utilization: dict
    fmax_mhz: float | None
    clock_mhz: float
    timing_met: bool
    yosys_cells: dict
    bitstream: Path | None
    outdir: Path
    seconds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "device": self.device, "top": self.top, "utilization": self.utilization,
            "fmax_mhz": self.fmax_mhz, "clock_mhz": self.clock_mhz, "timing_met": self.timing_met,
            "yosys_cells": self.yosys_cells, "bitstream": str(self.bitstream) if self.bitstream else None,
            "seconds": self.seconds,
        }


#: File suffixes of a placed design (nextpnr's ``--asc`` / ``--textcfg``) and of its packed bitstream.
PLACED_SUFFIX = {"ice40": "asc", "ecp5": "config"}
BITSTREAM_SUFFIX = {"ice40": "bin", "ecp5": "bit"}


def pack_bitstream(family: str, placed: str, bitstream: str, cwd, log=None) -> None:
    """Pack the placed design ``placed`` into ``bitstream`` (file names in ``cwd``): icepack or ecppack."""
    if family == "ice40":
        run_tool("icepack", [placed, bitstream], cwd=cwd, log=log)
    else:
        run_tool("ecppack", ["--input", placed, "--bit", bitstream], cwd=cwd, log=log)


def _progress_to_stderr(message: str) -> None:
    sys.stderr.write(f"[lowbit] {message}\n")
    sys.stderr.flush()


def yosys_script(verilog_files, top: str, dev: Device, json_out: Path, mult: str = "lut",
                 extra: tuple = ()) -> str:
    """The Yosys script :func:`implement` runs (returned so reports can show it)."""
    # Amaranth platform builds hand over RTLIL (.il); everything else is read as (System)Verilog.
    lines = [f"read_rtlil {Path(v).as_posix()}" if Path(v).suffix == ".il" else f"read_verilog -sv {Path(v).as_posix()}"
             for v in verilog_files]
    lines += [f"hierarchy -top {top}", "proc"]
    if mult == "lut":
        lines.append("booth")
    lines += list(extra)
    if dev.family == "ice40":
        lines.append(f"synth_ice40 -top {top}" + (" -dsp" if mult == "dsp" else "") + f" -json {json_out.as_posix()}")
    else:
        lines.append(f"synth_ecp5 -top {top}" + (" -nodsp" if mult == "lut" else "") + f" -json {json_out.as_posix()}")
    # The same netlist as Verilog, for the gate-level check (lowbit run --sim --netlist).
    lines.append(f"write_verilog -noattr {top}_netlist.v")
    lines.append("tee -q -o cells.json stat -json")
    return "\n".join(lines) + "\n"


def _yosys_cells(stat_path: Path, top: str) -> dict:
    stat = json.loads(stat_path.read_text())
    modules = stat.get("modules", {})
    design = stat.get("design") or modules.get(f"\\{top}") or modules.get(top) or {}
    cells = design.get("num_cells_by_type", {})
    return {k: int(v) for k, v in cells.items()}


def _check_fits(cells: dict, dev: Device) -> dict:
    # Keys: nextpnr resource names.
    """Estimate nextpnr resources from Yosys cells; raise before place-and-route if over capacity."""
    estimate: dict[str, int] = {}
    fam = dev.resources
    for cell, resource in fam.cell_resource.items():
        if cells.get(cell):
            estimate[resource] = estimate.get(resource, 0) + cells[cell]
    if fam.ff_resource == fam.logic_resource:
        # iCE40 LCs hold one LUT4 and one FF; carries ride along with LUTs. A FF without a LUT still takes an LC.
        ffs = sum(n for c, n in cells.items() if c.startswith("SB_DFF"))
        estimate[fam.logic_resource] = max(estimate.get(fam.logic_resource, 0), ffs)
    else:
        # An ECP5 CCU2C carry cell occupies two COMB slots; flip-flops have their own slots.
        estimate[fam.logic_resource] = estimate.get(fam.logic_resource, 0) + 2 * cells.get("CCU2C", 0)
        estimate[fam.ff_resource] = cells.get("TRELLIS_FF", 0)
    # A device whose capacity lowbit does not know (an unusual board) is left to nextpnr to judge.
    over = [(r, n, dev.capacity[r]) for r, n in estimate.items() if r in dev.capacity and n > dev.capacity[r]]
    if over:
        what = ", ".join(f"{n} {r} but {dev.name} has {cap}" for r, n, cap in over)
        raise LowbitError(f"the design does not fit: synthesis needs {what}",
                          "use fewer PEs (--rows/--cols), fewer bits, or a bigger device; nothing was placed")
    return estimate


_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+)\s+MHz")


def failed_fmax(log_text: str) -> float | None:
    """The Fmax (MHz) of a nextpnr run that missed its target: the last "FAIL" figure in its log, the
    routed design's (nextpnr reports an estimate after placement too, often several MHz lower)."""
    found = re.findall(_FMAX_RE.pattern + r" \(FAIL at", log_text)
    return float(found[-1][1]) if found else None


def parse_nextpnr_report(report_path: Path, log_text: str = "") -> tuple[dict, dict]:
    """Utilisation ``{resource: {"used", "available"}}`` and achieved Fmax per clock (MHz) from
    nextpnr's ``--report`` JSON (falling back to the log's "Max frequency" lines for Fmax)."""
    report = json.loads(Path(report_path).read_text())
    util = {k: {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in report.get("utilization", {}).items()}
    fmax = {clk: float(v["achieved"]) for clk, v in report.get("fmax", {}).items()}
    if not fmax:
        for clk, mhz in _FMAX_RE.findall(log_text):
            fmax[clk] = float(mhz)  # the last report in the log is the post-route one
    return util, fmax


def _local_copy(path, outdir: Path) -> str:
    path = Path(path)
    if path.resolve().parent != outdir.resolve():
        shutil.copyfile(path, outdir / path.name)
    return path.name


def timing_error(fmax_mhz: float, clock_mhz: float, also: str = "") -> LowbitError:
    """The one-line refusal of a design that misses its clock (``also`` extends the hint)."""
    return LowbitError(f"timing failed: Fmax {fmax_mhz:.2f} MHz is below the {clock_mhz:g} MHz design clock",
                       "use a lower --clock-mhz, another --seed, smaller arrays or fewer bits" + also)


def implement(verilog_files, top: str, device_name, outdir, clock_mhz: float = 12.0,
              constraints=None, mult: str = "lut", pack: bool = True, seed: int = 1,
              progress=_progress_to_stderr, yosys_extra: tuple = (),
              timing_allow_fail: bool = False) -> ImplementResult:
    """Synthesise, place, route and (optionally) pack a design.

    Parameters
    ----------
    verilog_files : list of path
        Verilog sources; ``top`` names the top module.
    device_name : str or Device
        A key of :data:`DEVICES`, or a :class:`Device` (boards derive one from their platform).
    constraints : path, optional
        A ``.pcf`` (iCE40) or ``.lpf`` (ECP5) file; without one, nextpnr places I/O freely (fine for
        measuring a core, not for a board).
    mult : str
        ``"lut"`` or ``"dsp"`` (see the module docstring).
    timing_allow_fail : bool
        Finish (and report the Fmax reached) when ``clock_mhz`` is not met, instead of nextpnr's error:
        for measuring, where the target only steers timing-driven placement.

    Raises
    ------
    LowbitError
        if a tool fails, or if synthesis shows the design cannot fit (before place-and-route).
    """
    dev = device(device_name)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    netlist = outdir / f"{top}.json"

    t0 = time.monotonic()
    progress(f"yosys: synthesising {top} for {dev.name} (mult={mult})")
    # YoWASP tools run sandboxed and see only their working directory: copy sources in, use relative paths.
    sources = []
    for v in verilog_files:
        v = Path(v)
        if v.resolve().parent != outdir.resolve():
            shutil.copyfile(v, outdir / v.name)
        sources.append(Path(v.name))
    script = outdir / f"{top}.ys"
    script.write_text(yosys_script(sources, top, dev, Path(netlist.name), mult, yosys_extra))
    # Not -q: the full log says where synthesis was if it stops without an error message.
    run_tool("yosys", ["-s", script.name], cwd=outdir, log=outdir / "yosys.log")
    seconds["yosys"] = round(time.monotonic() - t0, 2)
    cells = _yosys_cells(outdir / "cells.json", top)
    estimate = _check_fits(cells, dev)
    progress(f"yosys: done in {seconds['yosys']:.1f} s; estimate {estimate}")

    t0 = time.monotonic()
    progress(f"nextpnr-{dev.family}: placing and routing at {clock_mhz} MHz")
    report = outdir / "nextpnr-report.json"
    args = [*dev.nextpnr_args, "--json", netlist.name, "--report", report.name, "--freq", clock_mhz,
            "--seed", seed] + (["--timing-allow-fail"] if timing_allow_fail else [])
    if dev.family == "ice40":
        asc = outdir / f"{top}.asc"
        args += ["--asc", asc.name]
        args += ["--pcf", _local_copy(constraints, outdir)] if constraints else ["--pcf-allow-unconstrained"]
    else:
        cfg = outdir / f"{top}.config"
        args += ["--textcfg", cfg.name]
        if constraints:
            args += ["--lpf", _local_copy(constraints, outdir)]
        else:
            args += ["--lpf-allow-unconstrained"]
    try:
        proc = run_tool(f"nextpnr-{dev.family}", args, cwd=outdir, log=outdir / "nextpnr.log")
    except LowbitError:
        # The pre-place estimate counts LUTs and flip-flops; packing can still need more cells.
        log = (outdir / "nextpnr.log").read_text() if (outdir / "nextpnr.log").exists() else ""
        m = re.search(r"Failed to expand region .* of (\d+) (\w+?)s?$", log, re.M)
        if m:
            have = dev.capacity.get(m.group(2))
            raise LowbitError(f"the design does not fit: placement needs {m.group(1)} {m.group(2)}"
                              + (f" but {dev.name} has {have}" if have else f" on {dev.name}"),
                              "use fewer PEs (--rows/--cols), fewer bits, or a bigger device") from None
        fmax = failed_fmax(log)
        if fmax is not None:
            # The caller's output folder, which held the log, is removed: the figure is the message.
            raise timing_error(fmax, clock_mhz) from None
        raise
    seconds["nextpnr"] = round(time.monotonic() - t0, 2)
    util, fmax = parse_nextpnr_report(report, proc.stdout + proc.stderr)
    worst = min(fmax.values()) if fmax else None
    progress(f"nextpnr-{dev.family}: done in {seconds['nextpnr']:.1f} s; Fmax {worst} MHz")

    bitstream = None
    if pack:
        t0 = time.monotonic()
        bitstream = outdir / f"{top}.{BITSTREAM_SUFFIX[dev.family]}"
        pack_bitstream(dev.family, (asc if dev.family == "ice40" else cfg).name, bitstream.name, outdir,
                       log=outdir / "pack.log")
        seconds["pack"] = round(time.monotonic() - t0, 2)
    return ImplementResult(dev.name, top, util, worst, clock_mhz,
                           bool(worst is not None and worst >= clock_mhz), cells, bitstream, outdir, seconds)
