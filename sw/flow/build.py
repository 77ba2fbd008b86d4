"""``lowbit build``: a quantized model -> a bitstream for a board, with ROM images and a report.

Steps: fold the network onto the device (:mod:`lowbit.sw.flow.fold`, refusing before synthesis if it cannot
fit), measure cycles per inference by simulating the network (Amaranth's simulator, a few inputs),
build the board top (:mod:`lowbit.boards.targets`) through Yosys and nextpnr, and write everything
into the output folder atomically (a failed build leaves no folder a later command could trust):

``model.lbm``, ``build.json`` (board, arrays, clock, baud: what ``run`` and ``reweight`` need),
``core.v`` (Verilog of the accelerator core), ``top.il``/``top.pcf|lpf``/``top.json`` and the bitstream
``top.bin`` (iCE40) or ``top.bit`` (ECP5), ``roms/`` (one ``.hex`` file per memory, one word per line,
most significant digit first; layouts in :mod:`lowbit.sw.flow.rom`), ``report.json`` and ``summary.txt``.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from ..errors import LowbitError
from .fold import COST_MODELS, LayerShape, fold
from .synth import DSP_MIN_PRODUCT_BITS, timing_error
from ..ir.model import Conv2d, Dense, MaxPool2d, Model
from ..outputs import atomic_dir
from .overlay import overlay_report, products_leave_dsps
from .record import (ARCHITECTURES, DEFAULT_BAUD, FLASH_BLOB, FLASH_IMAGE, FLASH_OFFSET, TIMEOUT_BYTES, core_verilog,
                     make_core, overlay_fields)
from .rom import check_reweightable, hex_text, random_contents, rom_block_for, rom_images, rom_init

__all__ = ["layer_shapes", "dataflow_cycles", "fold_model", "measure_cycles", "build", "plan_build",
           "choose_architecture", "architecture_reason", "DATAFLOW_FMAX_HZ", "requant_dsp_tiles",
           "default_requant_dsp", "link_rate", "summary_text"]

def layer_shapes(model: Model) -> list[LayerShape]:
    shapes, shape = [], tuple(model.input_shape)
    in_q = model.input_q
    for i, layer in enumerate(model.layers):
        out = layer.out_shape(shape)
        if isinstance(layer, (Dense, Conv2d)):
            positions = out[0] * out[1] if isinstance(layer, Conv2d) else 1
            shapes.append(LayerShape(f"layer{i}", layer.k, layer.n, positions, 1 if in_q.binary else in_q.bits,
                                     1 if layer.weight_q.binary else layer.weight_q.bits, in_q.binary,
                                     weight_binary=layer.weight_q.binary and not in_q.binary))
            in_q = layer.out_q or in_q
        shape = out
    return shapes


def dataflow_cycles(model: Model, arrays) -> tuple[int, bool]:
    """``(cycles, exact)``: steady-state cycles per inference of the dataflow design with these arrays,
    before any simulation. A chain of Dense engines: :func:`~lowbit.sw.flow.fold.predict_cycles`, exact
    (``tests/test_cycles.py``). With Conv2d or MaxPool2d: a lower bound, not exact — the slowest stage in
    isolation, where an im2col or pooling buffer (:class:`lowbit.hw.network.Replay`) loads its input map
    and then replays its sequence, one code a cycle each, never both at once; how the stages' stalls
    interact is left to :func:`measure_cycles`, which ``build`` runs."""
    from .fold import LayerFold, predict_cycles
    shapes = layer_shapes(model)
    if all(s.positions == 1 for s in shapes) and not any(isinstance(x, MaxPool2d) for x in model.layers):
        return predict_cycles(shapes, arrays), True
    worst = max(LayerFold(s, r, c, 0, 0).cycles for s, (r, c) in zip(shapes, arrays))
    shape = tuple(model.input_shape)
    for layer in model.layers:
        out = layer.out_shape(shape)
        if isinstance(layer, Conv2d):        # load the map, then positions x K taps
            worst = max(worst, int(np.prod(shape)) + out[0] * out[1] * layer.k)
        elif isinstance(layer, MaxPool2d):   # load the map, then every window's codes
            worst = max(worst, int(np.prod(shape)) + int(np.prod(out)) * layer.kernel[0] * layer.kernel[1])
        shape = out
    return worst, False


def fold_model(model: Model, dev, mult: str = "lut"):
    """Array sizes for ``model`` on ``dev`` (a :class:`lowbit.sw.flow.synth.Device`); LowbitError if it cannot fit.
    With ``mult="dsp"`` every product wide enough for Yosys to map (:data:`DSP_MIN_PRODUCT_BITS`) takes a
    DSP block, so the arrays' products are capped at the DSPs left after the requantizers'
    (:func:`requant_dsp_tiles`)."""
    cost = COST_MODELS[dev.family]
    logic = dev.capacity.get(cost.logic_resource, 10 ** 9)
    brams = dev.capacity.get(dev.bram_resource, 10 ** 6)
    max_macs = None
    if mult == "dsp" and any(_product_maps_to_dsp(s, dev) for s in layer_shapes(model)):
        dsps = dev.capacity.get(dev.dsp_resource, 0)
        reserved = requant_dsp_tiles(model, [(1, 1)] * len(model.compute_layers()))
        max_macs = dsps - reserved
        if max_macs < len(model.compute_layers()):
            raise LowbitError(f"--mult dsp needs at least {len(model.compute_layers()) + reserved} DSP blocks for "
                              f"this model (one product per layer and {reserved} for the requantizers); "
                              f"{dev.name} has {dsps}", "build with --mult lut")
    return fold(layer_shapes(model), cost, logic, brams, device_name=dev.name, max_macs=max_macs)


def _product_maps_to_dsp(shape: LayerShape, dev) -> bool:
    # ±1 weights are a conditional negate in every mode (hw/array.product): nothing for a DSP.
    return not shape.binary and not shape.weight_binary and shape.act_bits + shape.weight_bits >= DSP_MIN_PRODUCT_BITS.get(dev.family, 4)


def requant_dsp_tiles(model: Model, arrays, reweightable: bool = False) -> int:
    """DSP blocks the requantizers' multipliers take if mapped to DSPs: one per 16 bits of multiplier
    (the 4-bit digits MLP's two requantizers, 16-bit multipliers, took 2 SB_MAC16 in
    ``lowbit build --board icebreaker``; Yosys keeps the rest of a wide product in logic)."""
    from ...hw.dense import engine_layout
    from ...hw.network import plan_network
    tiles = 0
    for plan in plan_network(model, arrays):
        if plan.kind == "engine" and plan.params.mode == "requant":
            tiles += math.ceil(engine_layout(plan.config, plan.params, reweightable=reweightable).mult_bits / 16)
    return tiles


def array_products_multiply(model: Model, arrays, mult: str) -> bool:
    """Whether any array product is written as a ``*`` (which a DSP-mapping synthesis would put into a DSP
    block): always with ``mult="dsp"``; with ``"lut"`` only for operands too wide for shift-and-add."""
    from ...hw.array import SHIFT_ADD_MAX_BITS
    from ...hw.network import plan_network
    if mult == "dsp":
        return True
    for plan in plan_network(model, arrays):
        cfg = plan.config
        if plan.kind == "engine" and not cfg.weights_binary and cfg.weight_bits > 2 \
                and min(cfg.act_bits, cfg.weight_bits) > SHIFT_ADD_MAX_BITS:
            return True
    return False


def default_requant_dsp(model: Model, arrays, dev, mult: str, reweightable: bool) -> bool:
    """Whether the requantizers' multipliers go to DSP blocks by default: on iCE40, when the arrays'
    products need none (else ``synth_ice40 -dsp`` would map them too) and the estimated tiles fit.
    Measured on the 4-bit digits MLP for iCEBreaker (``lowbit build --mult lut`` before and after):
    4455 -> 3459 LCs and Fmax 19.6 -> 22.9 MHz with 2 of 8 SB_MAC16. ECP5 keeps them in LUTs
    (not yet measured there)."""
    if mult == "dsp":
        return True
    if dev.family != "ice40" or array_products_multiply(model, arrays, mult):
        return False
    return requant_dsp_tiles(model, arrays, reweightable) <= dev.capacity.get(dev.dsp_resource, 0)


def link_rate(identity, baud: float, batch: int) -> dict:
    """Inferences per second the serial link carries with INFER frames of ``batch`` inputs: the request
    (frame overhead + one byte per input code) and the response (overhead + values and argmax of each
    input) at 10 bit times per byte, one after the other as the driver waits for each answer."""
    from ..link import frames
    request = frames.OVERHEAD_BYTES + batch * identity.input_count
    response = frames.OVERHEAD_BYTES + batch * identity.infer_record_bytes
    seconds = (request + response) * 10 / baud
    return {"batch": batch, "request_bytes": request, "response_bytes": response,
            "inferences_per_s": round(batch / seconds, 1)}


def measure_cycles(model: Model, arrays, samples: int = 8, systolic: bool = False,
                   systolic_2d: bool = False) -> dict:
    """Steady-state cycles per inference of the network alone, measured in Amaranth's simulator with
    ``samples`` back-to-back random inputs: (cycle of the last output - cycle of the first output) /
    (samples - 1), plus the latency of the first."""
    from ...hw.network import Network
    from ...sim.streams import run_sim, stream_put
    dut = Network(model, arrays, systolic=systolic, systolic_2d=systolic_2d)
    rng = np.random.default_rng(0)
    lo, hi = model.input_q.range
    n_in = int(np.prod(model.input_shape))
    n_out = int(np.prod(model.output_shape))
    inputs = rng.integers(0, 2, (samples, n_in)) if model.input_q.binary else rng.integers(lo, hi + 1, (samples, n_in))
    marks = {}

    async def source(ctx):
        await stream_put(ctx, dut.i, [int(v) for v in inputs.ravel()])

    async def sink(ctx):
        cycle = 0
        got = 0
        ctx.set(dut.o.ready, 1)
        while got < samples * n_out:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            cycle += 1
            if valid:
                got += 1
                if got == n_out:
                    marks["first"] = cycle
                if got == samples * n_out:
                    marks["last"] = cycle
                    marks["mac"] = ctx.get(dut.mac_cycles)

    run_sim(dut, source, sink)
    per = (marks["last"] - marks["first"]) / (samples - 1)
    return {"cycles_per_inference": round(per, 1), "latency_cycles": marks["first"],
            "mac_cycles_per_inference": marks["mac"] / samples}


def build(model: Model, board: str, outdir, *, baud: int = DEFAULT_BAUD, max_batch: int = 8,
          progress=lambda msg: None, seed: int = 1, reweightable: bool = False, rom_seed: int = 1,
          clock_mhz: float | None = None, mult: str = "lut", arch: str = "auto", also=(),
          loadable: bool = False, array=None) -> dict:
    """Build ``model`` for ``board`` into ``outdir``; returns the report (also in ``report.json``).

    ``arch`` is ``"dataflow"`` (one layer engine per layer, :mod:`lowbit.hw.network`), ``"overlay"`` (one
    array for every layer, :mod:`lowbit.hw.overlay`) or ``"auto"``: whichever fits the device by the
    estimate and takes fewer cycles per inference (see :func:`choose_architecture`).

    ``clock_mhz`` runs the design from a PLL at that frequency instead of the board's oscillator;
    ``mult="dsp"`` lets synthesis map the products to the device's DSP blocks (refused before placement
    if there are more products than DSPs).

    ``reweightable`` builds keep their ROMs patchable by ``lowbit reweight`` (see :mod:`lowbit.sw.flow.reweight`).

    ``loadable`` builds an overlay that takes other models at run time (``lowbit load``; on an iCE40
    UltraPlus its weights then live in SPRAM, loaded after power-up); ``also`` (models) sizes it to load
    each of them: their formats, weights, parameters, layer count and inputs fit its memories. Both
    imply ``arch="overlay"``. ``array = (rows, cols)`` builds an overlay of that array instead of the
    one the planner picks (the logic estimate is then not a refusal; synthesis counts the real logic).
    """
    from ...boards.targets import board_clock, board_device, build_board, platform_class
    t_start = time.monotonic()
    platform = platform_class(board)()
    dev = board_device(platform)
    clk_hz, pll = board_clock(board, clock_mhz)
    from ...hw.config import MULT_IMPLS
    if mult not in MULT_IMPLS:
        raise LowbitError(f"--mult {mult!r} is not one of {', '.join(MULT_IMPLS)}")
    rom_block = None
    if reweightable:
        rom_block = rom_block_for(dev.family)
    progress(f"planning the network on {dev.name}")
    loadable = loadable or bool(also)
    if loadable and arch == "dataflow":
        raise LowbitError("--loadable and --also build an overlay; a dataflow build runs only its own model",
                          "build with --arch overlay (or auto)")
    requested = "loadable" if loadable else "array" if array is not None else arch
    arch, folding, plan = choose_architecture(model, dev, "overlay" if loadable else arch, mult=mult,
                                              reweightable=reweightable, max_batch=max_batch, also=also,
                                              loadable=loadable, array=array, clock_hz=clk_hz)
    reason = architecture_reason(arch, requested, clk_hz, dev.family, folding is not None and plan is not None,
                                 reweightable or mult != "lut")
    progress(f"architecture: {arch} ({reason})")
    if arch == "overlay":
        arrays = plan.program.arrays
        cfg = plan.config
        # The array's products stay in logic; the requantizer's multiplier goes to a DSP block on iCE40.
        requant_dsp = products_leave_dsps(cfg, dev.family)
    else:
        arrays = [(f.rows, f.cols) for f in folding.layers]
        requant_dsp = default_requant_dsp(model, arrays, dev, mult, reweightable)
    record = {"board": board, "family": dev.family, "arch": arch,
              "overlay": overlay_fields(plan.config) if arch == "overlay" else None,
              "arrays": [list(a) for a in arrays], "clock_hz": clk_hz,
              "baud": baud, "max_batch": max_batch, "timeout_bytes": TIMEOUT_BYTES, "reweightable": reweightable,
              "seed": seed, "rom_seed": rom_seed, "rom_block": rom_block, "mult": mult, "requant_dsp": requant_dsp,
              "pll": pll is not None, "input_buffer": plan.input_buffer if arch == "overlay" else None,
              "flash_boot": None}
    if arch == "overlay" and cfg.weight_store == "spram" and _has_flash(platform):
        # SPRAM starts empty: the board boots its model from the configuration flash, after the bitstream.
        record["flash_boot"] = FLASH_OFFSET
    from ...hw.accel import identity_for
    from ...hw.serial import divisor_for
    try:
        record["divisor"] = divisor_for(clk_hz, baud)       # the baud rate checked before any work
    except ValueError as exc:
        raise LowbitError(f"{board}: {exc}", "choose another --baud") from None
    identity = identity_for(model, arrays, max_batch)
    if arch == "overlay":
        # The analytic model: tests/test_overlay.py holds it equal to simulation, cycle for cycle.
        first = ", layer 0 as patch words" if cfg.patch else ""
        first += " requantized a slot a cycle" if cfg.wide else ""
        progress(f"overlay {cfg.rows}x{cfg.cols} ({cfg.macs} PEs, {cfg.port_bits}-bit weight port{first}); "
                 f"{plan.cycles} cycles per inference (cycle model)")
        cycles = {"cycles_per_inference": plan.cycles, "latency_cycles": plan.cycles}
    else:
        progress(f"arrays {arrays}; measuring cycles per inference in simulation")
        cycles = measure_cycles(model, arrays)
    placeholder_init = None
    if reweightable:
        check_reweightable(model, arrays)
        placeholder = random_contents(model, arrays, rom_seed, rom_block)
        real = rom_images(model, arrays, reweightable=True, rom_block=rom_block)
        placeholder_init = rom_init(placeholder)

    def core_factory(hz):
        if hz != clk_hz:
            raise AssertionError(f"the board was prepared for {hz} Hz, the record says {clk_hz} Hz")
        return make_core(model, record, placeholder_init)

    with atomic_dir(outdir) as tmp:
        model.save(tmp / "model.lbm")
        if record["flash_boot"] is not None:
            from .record import image_for_build
            image = image_for_build(record, model)
            from ...hw.accel import overlay_capacity
            blob = image.flash_blob(overlay_capacity(cfg, record["input_buffer"])["chunk_bytes"])
            (tmp / FLASH_BLOB).write_bytes(blob)
        (tmp / "core.v").write_text(core_verilog(make_core(model, record, placeholder_init)))
        (tmp / "roms").mkdir()
        if arch == "overlay":
            images = {"overlay_weights": (cfg.port_bits, plan.program.weights),
                      "overlay_params": (cfg.param_bits, plan.program.params)}
        else:
            images = real if reweightable else rom_images(model, arrays)
        for name, (width, words) in images.items():
            (tmp / "roms" / f"{name}.hex").write_text(hex_text(width, words))
        try:
            result = build_board(board, core_factory, tmp, progress=progress, seed=seed, pack=not reweightable,
                                 clock_mhz=clock_mhz, mult="dsp" if requant_dsp else "lut")
        except LowbitError as exc:
            if mult == "dsp" and exc.message.startswith("yosys failed") and not exc.hint:
                # Seen: the WebAssembly Yosys stops without a message in synth_ecp5's ABC9 step on the 4-bit
                # digits MLP with DSPs (the CNN and single engines map fine).
                raise LowbitError(exc.message, "synthesis with --mult dsp failed; build with --mult lut") from None
            raise
        if reweightable:
            from .reweight import PATCH_TOOL, patch_and_pack
            from .synth import PLACED_SUFFIX
            progress(f"patching the real weights into the placed design ({PATCH_TOOL[dev.family]})")
            suffix = PLACED_SUFFIX[dev.family]
            (tmp / f"top.random.{suffix}").write_bytes((tmp / f"top.{suffix}").read_bytes())
            result.bitstream = tmp / patch_and_pack(dev.family, tmp, f"top.random.{suffix}", placeholder, real,
                                                    fast=False)
        if not result.timing_met:
            raise timing_error(result.fmax_mhz, clk_hz / 1e6, "; nothing was written")
        per = cycles["cycles_per_inference"]
        util = result.utilization
        macs = sum(s.macs for s in layer_shapes(model))
        report = {
            "board": board, "device": dev.name, "fmax_mhz": round(result.fmax_mhz, 2),
            "clock_mhz": clk_hz / 1e6, "oscillator_mhz": platform.default_clk_frequency / 1e6, "mult": mult,
            "requant_dsp": requant_dsp,
            "pll": pll is not None, "timing_met": result.timing_met, "baud": baud, "max_batch": max_batch,
            "arrays": arrays, "cycles_per_inference": per, "latency_cycles": cycles["latency_cycles"],
            "compute_inferences_per_s": round(clk_hz / per, 1),
            "link": link_rate(identity, baud, max_batch),
            "utilization_pe": round(macs / (sum(r * c for r, c in arrays) * per), 4),
            "utilization": util,
            "estimate": plan.estimate if arch == "overlay" else folding.as_dict()["estimate"],
            "actual": {dev.logic_resource: util.get(dev.logic_resource, {}).get("used"),
                       "brams": util.get(dev.bram_resource, {}).get("used")},
            "bitstream": result.bitstream.name, "seconds": round(time.monotonic() - t_start, 1),
        }
        report.update(overlay_report(plan, clk_hz) if arch == "overlay" else
                      dataflow_report(model, arrays, clk_hz), architecture_reason=reason)
        # What a host sees is the slower of the two: the array's rate or what the UART carries.
        link_ips = report["link"]["inferences_per_s"]
        report["inferences_per_s"] = min(report["compute_inferences_per_s"], link_ips)
        report["bound"] = "link" if link_ips < report["compute_inferences_per_s"] else "compute"
        if record["flash_boot"] is not None:
            # What iceprog writes whole: the bitstream, erased bytes up to the offset, the model blob.
            bitstream = result.bitstream.read_bytes()
            (tmp / FLASH_IMAGE).write_bytes(bitstream + b"\xff" * (FLASH_OFFSET - len(bitstream)) + blob)
            report["flash"] = {"image": FLASH_IMAGE, "blob": FLASH_BLOB, "offset": FLASH_OFFSET, "blob_bytes": len(blob)}
        (tmp / "build.json").write_text(json.dumps(record, indent=1))
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        (tmp / "summary.txt").write_text(summary_text(report))
    return report


def _has_flash(platform) -> bool:
    from amaranth.build import ResourceError
    try:
        platform.lookup("spi_flash_1x", 0)
    except ResourceError:
        return False
    return True


def choose_architecture(model: Model, dev, arch: str = "auto", *, mult: str = "lut", reweightable: bool = False, also=(),
                        max_batch: int = 8, loadable: bool = False, array=None, clock_hz: float | None = None):
    """``(arch, folding, overlay_plan)`` for ``model`` on ``dev``: the dataflow folding
    (:func:`fold_model`) and the overlay plan (:func:`lowbit.sw.flow.overlay.plan_overlay`) that fit by the
    estimate, and with ``arch="auto"`` the one with fewer predicted cycles per inference (the dataflow
    pipeline's slowest layer, or the overlay's whole program). LowbitError before any synthesis if
    neither fits, with both reasons. ``array = (rows, cols)``: an overlay of that array (its logic
    estimate is not a refusal; synthesis checks the real count before placement). ``clock_hz``: the design
    clock, which decides whether the overlay's array is pipelined further (``array_regs_for``)."""
    from .overlay import plan_overlay
    if arch not in ("auto",) + ARCHITECTURES:
        raise LowbitError(f"--arch {arch!r} is not one of auto, {', '.join(ARCHITECTURES)}")
    if arch == "overlay" and (reweightable or mult != "lut"):
        raise LowbitError("an overlay build is neither --reweightable nor --mult dsp (so far)",
                          "drop those options, or build with --arch dataflow")
    if array is not None:
        if arch == "dataflow":
            raise LowbitError("--array sizes an overlay; a dataflow build folds each layer itself",
                              "build with --arch overlay (or drop --array)")
        arch = "overlay"
    folding = plan = None
    errors = []
    if arch in ("auto", "dataflow"):
        try:
            folding = fold_model(model, dev, mult)
        except LowbitError as exc:
            if arch == "dataflow":
                raise
            errors.append(f"dataflow: {exc.message}")
    if arch == "overlay" or (arch == "auto" and not reweightable and mult == "lut"):
        try:
            plan = plan_overlay(model, dev, max_batch=max_batch, also=also, loadable=loadable, arrays=array,
                                logic_check=array is None, clock_hz=clock_hz)
        except LowbitError as exc:
            if arch == "overlay" or folding is None:
                if folding is None and errors:
                    raise LowbitError(f"{errors[0]}; overlay: {exc.message}", exc.hint) from None
                raise
    if plan is None:
        return "dataflow", folding, None
    if folding is None:
        return "overlay", None, plan
    if clock_hz is not None and clock_hz > DATAFLOW_FMAX_HZ.get(dev.family, math.inf):
        return "overlay", folding, plan
    # With Conv2d or MaxPool2d the dataflow figure is a lower bound: the overlay, whose cycle model is
    # exact, is chosen only when it is faster than that bound.
    cycles, _ = dataflow_cycles(model, [(f.rows, f.cols) for f in folding.layers])
    return ("overlay", folding, plan) if plan.cycles < cycles else ("dataflow", folding, plan)


#: Whole-board Fmax of dataflow builds on iCE40 UP5K, measured on the boards the README's table lists after the
#: host link's timing work (docs/hardware.md): 26.57 MHz (the binary MLP, a 64-row popcount), 31.66 (the
#: digits MLP at a 30 MHz clock), 36.3 (the digits CNN); before it, 20.0 to 28.5. Above the lowest, ``auto``
#: picks an overlay that fits, whose array is pipelined for the clock
#: (:func:`~lowbit.sw.flow.overlay.array_regs_for`; its boards met 30 to 40.5 MHz), instead of a dataflow
#: design that might fail timing after place-and-route. Not measured on ECP5.
DATAFLOW_FMAX_HZ = {"ice40": 26e6}


def architecture_reason(arch: str, requested: str, clock_hz: float | None, family: str, fits_other: bool,
                        dataflow_only: bool = False) -> str:
    """Why :func:`choose_architecture` chose ``arch`` (report.json's ``architecture_reason``): ``requested``
    is ``auto``, an ``--arch`` value, ``array`` or ``loadable``; ``fits_other`` whether the other
    architecture fits too; ``dataflow_only`` for options only dataflow builds have (``--reweightable``,
    ``--mult dsp``)."""
    if requested != "auto":
        return {"array": "--array", "loadable": "--loadable or --also"}.get(requested, f"--arch {requested}")
    if dataflow_only:
        return "--reweightable and --mult dsp are dataflow builds"
    if not fits_other:
        return "the only architecture that fits the device by the estimate"
    if arch == "overlay" and clock_hz is not None and clock_hz > DATAFLOW_FMAX_HZ.get(family, math.inf):
        return (f"the {clock_hz / 1e6:g} MHz clock is above {DATAFLOW_FMAX_HZ[family] / 1e6:g} MHz, the lowest "
                f"Fmax measured for dataflow builds on {family}")
    return "both fit; it takes fewer cycles per inference by the estimate"


def plan_build(model: Model, board: str, *, arch: str = "auto", baud: int = DEFAULT_BAUD, max_batch: int = 8,
               clock_mhz: float | None = None, into=None, loadable: bool = False, also=(), array=None) -> dict:
    """What :func:`build` would do, without synthesis: the architecture, arrays, memory map, resource
    estimate against the device, predicted cycles and inferences/s (compute- and link-bound); with
    ``into`` (a build folder) also whether ``model`` fits that built overlay. ``fits`` is False, with the
    reason, where build would refuse."""
    from ...boards.targets import board_clock, board_device, platform_class
    from ...hw.accel import identity_for
    from .record import image_for_build
    from .record import load_build
    platform = platform_class(board)()
    dev = board_device(platform)
    clk_hz, pll = board_clock(board, clock_mhz)
    out = {"board": board, "device": dev.name, "clock_mhz": clk_hz / 1e6, "pll": pll is not None}
    try:
        loadable = loadable or bool(also)
        requested = "loadable" if loadable else "array" if array is not None else arch
        arch, folding, plan = choose_architecture(model, dev, "overlay" if loadable else arch, max_batch=max_batch,
                                                  also=also, loadable=loadable, array=array, clock_hz=clk_hz)
        out["architecture_reason"] = architecture_reason(arch, requested, clk_hz, dev.family,
                                                         folding is not None and plan is not None)
    except LowbitError as exc:
        out.update(fits=False, reason=exc.message, architecture=None, pes=0, estimate=None,
                   cycles_per_inference=None)
        arch = None
    if arch == "overlay":
        arrays = plan.program.arrays
        cycles = plan.cycles
        out.update(overlay_report(plan, clk_hz), estimate=plan.estimate, cycles_source="cycle model")
    elif arch == "dataflow":
        arrays = [(f.rows, f.cols) for f in folding.layers]
        cycles, exact = dataflow_cycles(model, arrays)
        out.update(dataflow_report(model, arrays, clk_hz), estimate=folding.as_dict()["estimate"],
                   cycles_source="fold.predict_cycles (Dense pipelines)" if exact else
                   "a lower bound: the slowest Conv2d/MaxPool2d/Dense stage alone (lowbit build measures it)")
    if arch is not None:
        link = link_rate(identity_for(model, arrays, max_batch), baud, max_batch)
        compute = round(clk_hz / cycles, 1)
        out.update(fits=True, arrays=arrays, cycles_per_inference=cycles, compute_inferences_per_s=compute,
                   link=link, inferences_per_s=min(compute, link["inferences_per_s"]),
                   bound="link" if link["inferences_per_s"] < compute else "compute",
                   capacity={dev.logic_resource: dev.capacity.get(dev.logic_resource),
                             "brams": dev.capacity.get(dev.bram_resource)})
    if into is not None:
        _, record = load_build(into)
        if record["arch"] != "overlay":
            out["into"] = {"fits": False, "reason": f"{into} is a dataflow build: its netlist runs only the "
                                                    "model it was built for (see lowbit reweight)"}
        else:
            try:
                image_for_build(record, model)
                out["into"] = {"fits": True, "reason": None}
            except LowbitError as exc:
                out["into"] = {"fits": False, "reason": str(exc)}
    return out


def dataflow_report(model: Model, arrays, clk_hz: float) -> dict:
    """The report.json fields a dataflow build shares with an overlay build: PEs, MAC/s and, per layer, the
    array's cycles per inference against its compute roof (weights stream from ROM at the array's rate)."""
    from .fold import layer_cycles
    layers = []
    for shape, (rows, cols) in zip(layer_shapes(model), arrays):
        cycles = layer_cycles(shape, rows, cols)
        layers.append({"layer": shape.name, "k": shape.k, "n": shape.n, "array": [rows, cols], "cycles": cycles,
                       "roof_cycles": round(shape.macs / (rows * cols), 1),
                       "roofline_fraction": round(shape.macs / (rows * cols) / cycles, 4)})
    pes = sum(r * c for r, c in arrays)
    return {"architecture": "dataflow", "pes": pes, "macs_per_s": round(pes * clk_hz), "layers": layers}


def summary_text(r: dict) -> str:
    from .synth import family_of_utilization
    fam = family_of_utilization(r["utilization"])
    lut, bram, dsp = fam.logic_resource, fam.bram_resource, fam.dsp_resource
    u = r["utilization"]
    return "\n".join([
        f"board {r['board']} ({r['device']}), " + (
            f"overlay: one {r['overlay_array'][0]}x{r['overlay_array'][1]} array for every layer ({r['pes']} PEs)"
            if r.get("architecture") == "overlay" else f"dataflow: arrays {r['arrays']} ({r.get('pes')} PEs)"),
        f"{lut}: {u[lut]['used']} / {u[lut]['available']} (estimate {r['estimate'].get(lut)})",
        f"{bram}: {u[bram]['used']} / {u[bram]['available']}   {dsp}: {u.get(dsp, {}).get('used', 0)}",
        f"Fmax {r['fmax_mhz']} MHz at a {r['clock_mhz']} MHz clock: timing {'met' if r['timing_met'] else 'FAILED'}",
        f"{r['cycles_per_inference']} cycles per inference -> {r['compute_inferences_per_s']} inferences/s "
        f"computed; PE utilisation {r['utilization_pe']:.1%}",
        f"the {r['baud']} baud link carries {r['link']['inferences_per_s']} inferences/s (batches of "
        f"{r['link']['batch']}: {r['link']['request_bytes']} bytes out, {r['link']['response_bytes']} back), "
        f"so the {r['bound']} binds: {r['inferences_per_s']} inferences/s",
    ] + ([f"clock from a PLL (oscillator {r['oscillator_mhz']:g} MHz)"] if r.get("pll") else [])
      + ([f"Fmax leaves room: --clock-mhz {int(r['fmax_mhz'] * 0.9)} would raise the compute rate "
          f"{int(r['fmax_mhz'] * 0.9) / r['clock_mhz']:.1f}x (rebuild; timing is checked again)"]
         if r["fmax_mhz"] * 0.9 >= r["clock_mhz"] * 1.2 else [])) + "\n"


