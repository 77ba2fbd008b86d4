"""Simulate a build folder: the core its record describes, with the ROMs its bitstream holds.

``lowbit run --sim`` and ``lowbit demo`` both come here, so there is one way to check a build. The core
is made by :func:`lowbit.sw.flow.record.make_core` from ``build.json`` (arrays, clock, baud divisor, batch,
timeouts, multiplier mapping, reweightable datapath and ROM padding), never from defaults; for a
reweightable (or re-weighted) build its ROM contents are read back out of the final bitstream
(:mod:`lowbit.sw.flow.bitstream_roms`), so a patching bug shows as a mismatch. The UART runs at the built
divisor, so the simulated link carries the bytes at the rate the board's does. The core made is held
equal to the build's ``core.v`` (the Verilog written from the design that was synthesised, placeholder ROMs
of a reweightable build included) before it is simulated: a build made by other gateware (another version of
lowbit) is refused, since its RTL simulation would check a re-creation, not what was built.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .record import core_verilog, load_build, make_core
from ..errors import LowbitError

__all__ = ["build_core", "check_same_design", "simulate_build"]


#: Source-location attributes of Amaranth's Verilog: they name the files of the lowbit that wrote it (its
#: install path and line numbers), not the design.
_SRC_ATTRIBUTE = re.compile(r'\(\* src = "[^"]*" \*\)\s*')


def check_same_design(build_dir, core, netlist: bool = False) -> None:
    """LowbitError unless ``core`` is the design ``build_dir`` was built from: its Verilog equal to the
    build's ``core.v``, but for source-location attributes. ``netlist``: the build's gate-level netlist can
    be simulated instead (the hint says so)."""
    built = Path(build_dir) / "core.v"
    if not built.is_file():
        raise LowbitError(f"{build_dir} has no core.v", "build it again with this version of lowbit")
    text = core_verilog(core)
    if _SRC_ATTRIBUTE.sub("", text) != _SRC_ATTRIBUTE.sub("", built.read_text()):
        raise LowbitError(f"{build_dir} was built from other gateware than this lowbit makes (its core.v differs), "
                          "so an RTL simulation would check a re-creation, not the design that was built",
                          "rebuild it with this version" + (f", or simulate its netlist: lowbit run {build_dir} --sim "
                                                            "--netlist" if netlist else ""))


def build_core(build_dir, model=None, record=None, progress=lambda m: None):
    """The board core of ``build_dir`` as built: ``(core, rom_source)`` where ``rom_source`` says where
    the ROM contents came from (``"bitstream"`` or ``"model"``)."""
    build_dir = Path(build_dir)
    if model is None or record is None:
        model, record = load_build(build_dir)
    if not record["reweightable"]:
        # The ROMs were initialised from this model's integers when the design was synthesised.
        core = make_core(model, record)
        check_same_design(build_dir, core, netlist=record["family"] == "ice40")
        return core, "model"
    from .bitstream_roms import read_roms, unpack_bitstream
    from .rom import random_contents, rom_init
    from .synth import PLACED_SUFFIX
    family = record["family"]
    arrays = [tuple(a) for a in record["arrays"]]
    # core.v of a reweightable build holds the placeholder ROMs its netlist was synthesised with
    placeholder = random_contents(model, arrays, record["rom_seed"], record["rom_block"])
    check_same_design(build_dir, make_core(model, record, rom_init(placeholder)))
    placed = build_dir / f"top.random.{PLACED_SUFFIX[family]}"
    if not placed.is_file():
        raise LowbitError(f"{build_dir} has no {placed.name}, which a reweightable build keeps",
                          "build it again with 'lowbit build ... --reweightable'")
    progress("reading the ROM contents back out of the bitstream")
    roms = read_roms(placed.read_text(), unpack_bitstream(build_dir, family), placeholder, family)
    return make_core(model, record, rom_init(roms)), "bitstream"


def simulate_build(build_dir, codes, *, batch: int = 8, progress=lambda m: None, trace=None,
                   netlist: bool = False, model=None) -> dict:
    """Send input ``codes`` (N, input_count) through the simulated board of ``build_dir`` (Verilator +
    cocotb, the host driver on the other end of the UART pins); returns the board's ``values``,
    ``argmax``, ``identity``, ``counters``, ``sim_cycles``, ``wall_seconds`` and ``rom_source``.
    ``trace`` names a ``.vcd`` file to write the waveform of the whole run into. ``netlist`` simulates the
    gate-level netlist Yosys wrote for the bitstream instead of the RTL (iCE40 builds, ROMs as
    synthesised, so not for reweightable builds, whose netlist holds placeholder ROMs).

    ``model`` (an overlay build): another model to run; it is loaded through the simulated link first
    (LOAD and COMMIT frames, as ``lowbit load`` sends them) and the result's ``load`` says what that took."""
    from ...sim.board_sim import simulate_board
    build_dir = Path(build_dir)
    built, record = load_build(build_dir)
    image = None
    if model is not None:
        from .record import image_for_build
        image = image_for_build(record, model)      # refused here, before any simulation, if it does not fit
        if netlist:
            raise LowbitError("--netlist runs the model the bitstream was built with", "drop --model or --netlist")
    if trace is not None and Path(trace).suffix != ".vcd":
        raise LowbitError(f"--trace {trace}: the simulator writes VCD", "name the file *.vcd")
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        codes = codes.reshape(len(codes), -1)
    job = dict(batch=min(batch, record["max_batch"]), clk_mhz=record["clock_hz"] / 1e6, progress=progress,
               trace=trace)
    if netlist:
        from ...sim.netlist_sim import NetlistCore, netlist_sources
        if record["family"] != "ice40":
            raise LowbitError(f"--netlist is implemented for iCE40 builds, this one is {record['family']}",
                              "simulate the RTL with --sim alone")
        if record["reweightable"]:
            raise LowbitError("the netlist of a reweightable build holds its placeholder ROMs, not the weights",
                              "check a reweightable build with --sim (ROMs read from its bitstream)")
        progress("simulating the gate-level netlist Yosys wrote for the bitstream (cell models from Yosys)")
        sources = netlist_sources(build_dir, build_dir / "sim_netlist")
        res = simulate_board(NetlistCore(record["divisor"]), build_dir / "sim_netlist", codes,
                             extra_sources=sources, build_args=("-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-Wno-fatal"),
                             settle_cycles=2000, **job)
        res["rom_source"] = "netlist"
        return res
    core, source = build_core(build_dir, built, record, progress)
    flash = {}
    if record.get("flash_boot") is not None:
        # The board boots from the blob the build wrote for its flash (the file iceprog writes).
        from .record import FLASH_BLOB
        blob = (build_dir / FLASH_BLOB).read_bytes()
        flash = {"flash": blob, "settle_cycles": 40 * len(blob) + 20_000}
        progress(f"booting the model from the simulated SPI flash ({FLASH_BLOB}, {len(blob)} bytes)")
    elif image is None and record["arch"] == "overlay" and record["overlay"].get("weight_store") == "spram":
        # SPRAM starts empty: the board holds no model until one is loaded, as on the real board.
        from .record import image_for_build
        image = image_for_build(record, built)
    if image is not None:
        progress(f"loading the model through the simulated link ({image.total_bytes} bytes)")
    res = simulate_board(core, build_dir / "sim", codes, load=image, **job, **flash)
    res["booted_from_flash"] = bool(flash)
    res["rom_source"] = source
    return res
