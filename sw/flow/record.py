"""The build record (``build.json``): everything that shaped a built core, checked on the way in, and the
one constructor of the core from it (:func:`make_core`), which synthesis, ``core.v`` and simulation share."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import LowbitError
from ..ir.model import Model
from .rom import ROM_BLOCK

__all__ = ["CORE_FIELDS", "ARCHITECTURES", "make_core", "core_verilog", "check_build_record", "load_build",
           "overlay_config", "image_for_build", "FLASH_OFFSET", "FLASH_BLOB", "FLASH_IMAGE",
           "overlay_fields",
           "DEFAULT_BAUD", "MAX_BAUD", "MAX_BATCH", "TIMEOUT_BYTES"]

DEFAULT_BAUD = 1_000_000
#: Fastest UART rate lowbit builds for (FTDI's high-speed bridges top out at 12 Mbaud).
MAX_BAUD = 12_000_000
#: Most inputs one INFER frame may carry (``--max-batch``): it sizes the board's input buffer and output
#: FIFO and the length check unrolled in the host link (the IDENTIFY field itself is one byte).
MAX_BATCH = 64
#: Byte times of silence after which the board drops a partial frame (recorded in build.json).
TIMEOUT_BYTES = 32
#: Where a loadable overlay's model blob sits in the board's SPI flash (after the bitstream: 1 MiB), and
#: the files a build with flash boot writes: the blob, and bitstream + blob as one flash image.
FLASH_OFFSET = 0x100000
FLASH_BLOB, FLASH_IMAGE = "model_blob.bin", "flash.bin"


#: Fields of the build record that shape the board core; :func:`make_core` builds the core from them and
#: from nothing else, so ``lowbit run --sim`` simulates what was built.
CORE_FIELDS = ("arch", "overlay", "arrays", "clock_hz", "baud", "max_batch", "timeout_bytes", "reweightable",
               "rom_block", "mult", "input_buffer", "flash_boot")
#: The architectures a build can have: a layer engine per layer, or one array for all (hw/overlay.py).
ARCHITECTURES = ("dataflow", "overlay")


def make_core(model: Model, record: dict, rom_init: dict | None = None):
    """The :class:`lowbit.hw.accel.AccelCore` a build record describes (``rom_init``: ROM contents of a
    reweightable core, e.g. the placeholders at build time or the contents read back from its bitstream)."""
    from ...hw.accel import AccelCore
    kwargs = {}
    if record["reweightable"]:
        kwargs = {"reweightable": True, "rom_init": rom_init, "rom_block": record["rom_block"]}
    if record["arch"] == "overlay":
        from .overlay import compile_program
        cfg = overlay_config(record["overlay"])
        prog = compile_program(model, cfg)
        kwargs["overlay"] = (cfg, prog.descriptors, prog.weights, prog.params)
        kwargs["input_buffer"] = record.get("input_buffer")
        kwargs["flash_boot"] = record.get("flash_boot")
    return AccelCore(model, [tuple(a) for a in record["arrays"]], record["clock_hz"], record["baud"],
                     record["max_batch"], record["timeout_bytes"], mult=record["mult"], **kwargs)


def core_verilog(core) -> str:
    """The Verilog of a board core as a build writes it into ``core.v`` (module ``lowbit_core``); the RTL
    simulation of a build folder compares the core it makes with that file."""
    from amaranth.back import verilog
    return verilog.convert(core, name="lowbit_core")


_DAMAGED = "the build folder is damaged; build it again with 'lowbit build'"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v, lo, hi) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def overlay_config(fields: dict):
    """The :class:`~lowbit.hw.overlay.OverlayConfig` a build record's ``overlay`` field holds."""
    from ...hw.overlay import OverlayConfig
    fields = dict(fields)
    for name in ("act_formats", "weight_formats"):
        fields[name] = tuple(tuple(f) for f in fields[name])
    if "patch" in fields:
        fields["patch"] = tuple(fields["patch"])
    return OverlayConfig(**fields)


def overlay_fields(cfg) -> dict:
    """An OverlayConfig as the JSON object build.json stores."""
    import dataclasses
    return {k: [list(f) for f in v] if k.endswith("_formats") else v for k, v in dataclasses.asdict(cfg).items()}


def _overlay_ok(v) -> bool:
    if not isinstance(v, dict):
        return False
    try:
        overlay_config(v)
    except (TypeError, ValueError, KeyError):
        return False
    return True


def check_build_record(record, where="build.json") -> dict:
    """The build record :func:`build` writes into ``build.json`` (board, arrays, clock_hz, baud, max_batch,
    reweightable, rom_seed, family, rom_block, and what shaped the core: timeout_bytes, mult, requant_dsp,
    pll, the UART divisor), checked field by field; LowbitError names the first
    field that is missing or out of range. ``run`` and ``reweight`` read nothing else from it."""
    if not isinstance(record, dict):
        kind = "a list" if isinstance(record, list) else "null" if record is None else type(record).__name__
        raise LowbitError(f"{where} holds {kind}, not a build record", _DAMAGED)
    fields = (
        ("board", lambda v: isinstance(v, str) and v != "", "a board name"),
        ("arch", lambda v: v in ARCHITECTURES, " or ".join(ARCHITECTURES)),
        ("overlay", lambda v: v is None or _overlay_ok(v), "null or the overlay's configuration"),
        ("arrays", lambda v: isinstance(v, list) and 0 < len(v) <= 256 and
         all(isinstance(a, list) and len(a) == 2 and all(_integer(x, 1, 64) for x in a) for a in v),
         "a list of [rows, cols] pairs from 1 to 64"),
        ("clock_hz", lambda v: _number(v) and math.isfinite(v) and 1e5 <= v <= 1e9, "a clock from 100 kHz to 1 GHz"),
        ("baud", lambda v: _integer(v, 1, MAX_BAUD), f"an integer rate from 1 to {MAX_BAUD}"),
        ("max_batch", lambda v: _integer(v, 1, MAX_BATCH), f"an integer from 1 to {MAX_BATCH}"),
        ("reweightable", lambda v: isinstance(v, bool), "true or false"),
        ("rom_seed", lambda v: _integer(v, 0, (1 << 63) - 1), "a non-negative integer"),
        ("family", lambda v: isinstance(v, str) and v != "", "an FPGA family name"),
        ("rom_block", lambda v: v is None or v in ROM_BLOCK.values(), f"null or one of {sorted(ROM_BLOCK.values())}"),
        # What else shaped the core and the netlist (older build folders lack them: build again).
        ("timeout_bytes", lambda v: _integer(v, 1, 1 << 16), "an integer from 1 to 65536"),
        ("mult", lambda v: v in ("lut", "dsp"), "lut or dsp"),
        ("requant_dsp", lambda v: isinstance(v, bool), "true or false"),
        ("pll", lambda v: isinstance(v, bool), "true or false"),
        ("divisor", lambda v: _integer(v, 4, 1 << 24), "an integer from 4 up"),
    )
    for name, ok, expected in fields:
        if name not in record:
            raise LowbitError(f"{where} has no field '{name}'", _DAMAGED)
        if not ok(record[name]):
            value = json.dumps(record[name], default=str)
            raise LowbitError(f"{where}: field '{name}' must be {expected}, not "
                              f"{value if len(value) <= 40 else value[:37] + '...'}", _DAMAGED)
    from ...hw.serial import divisor_for
    try:
        divisor = divisor_for(record["clock_hz"], record["baud"])
    except ValueError:
        divisor = None
    if divisor != record["divisor"]:
        raise LowbitError(f"{where}: field 'divisor' is {record['divisor']}, but clock_hz and baud give {divisor}",
                          _DAMAGED)
    # An overlay's input buffer (older and dataflow records: none, the model's inputs x max_batch).
    buffer = record.get("input_buffer")
    if buffer is not None and not _integer(buffer, 1, 1 << 16):
        raise LowbitError(f"{where}: field 'input_buffer' must be null or an integer from 1 to 65536", _DAMAGED)
    flash = record.get("flash_boot")
    if flash is not None and not (_integer(flash, 0, (1 << 24) - 1) and record["arch"] == "overlay"):
        raise LowbitError(f"{where}: field 'flash_boot' must be null or a flash offset of an overlay build", _DAMAGED)
    if (record["arch"] == "overlay") != (record["overlay"] is not None):
        raise LowbitError(f"{where}: an overlay build needs its 'overlay' configuration, a dataflow build none",
                          _DAMAGED)
    family, block = record["family"], record["rom_block"]
    if record["reweightable"] and (family not in ROM_BLOCK or block != ROM_BLOCK[family]):
        raise LowbitError(f"{where}: a reweightable build needs family ice40 or ecp5 with rom_block 256 or 512, "
                          f"not {family[:20]!r} with {block!r}", _DAMAGED)
    return record


def load_build(folder) -> tuple[Model, dict]:
    """The model and build record of a build folder; LowbitError if it is not a complete, undamaged build."""
    folder = Path(folder)
    if not (folder / "build.json").is_file() or not (folder / "model.lbm").is_file():
        raise LowbitError(f"{folder} is not a lowbit build folder", "run 'lowbit build MODEL --board B -o DIR' first")
    where = folder / "build.json"
    with open(where, "rb") as f:
        text = f.read(1 << 20)
    if not text.strip():
        raise LowbitError(f"{where} is empty", _DAMAGED)
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LowbitError(f"{where} is not JSON ({type(exc).__name__})", _DAMAGED) from None
    record = check_build_record(record, where)
    model = Model.load(folder / "model.lbm")
    layers = len(model.compute_layers())
    if len(record["arrays"]) != layers:
        raise LowbitError(f"{where}: field 'arrays' has {len(record['arrays'])} entries, the model has {layers} "
                          "compute layers", _DAMAGED)
    return model, record


def image_for_build(record: dict, model):
    """``model`` as the load image of the overlay ``record`` (a build record) describes; LowbitError
    naming what does not fit (weights, parameters, activations, formats, layers, inputs)."""
    if record["arch"] != "overlay":
        raise LowbitError("this is a dataflow build: its netlist runs only the model it was built for",
                          "build an overlay (lowbit build --arch overlay --also MODEL) to load other models, "
                          "or use lowbit reweight for new weights of the same model")
    if record.get("input_buffer") is None:
        raise LowbitError("build.json of this overlay has no 'input_buffer' (an older build)",
                          "build it again with this lowbit")
    from .overlay import load_image
    return load_image(model, overlay_config(record["overlay"]), record["max_batch"], record["input_buffer"])
