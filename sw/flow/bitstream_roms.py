"""Read ROM contents back out of a built bitstream, so a simulation checks what will be flashed.

A reweightable build is placed with seeded random ROM contents (``top.random.asc`` / ``.config``) and
the real contents are patched in afterwards (:mod:`lowbit.sw.flow.reweight`). To simulate the patched
design, not a re-creation of it, :func:`read_roms` finds each placeholder bit slice in the placed
design — the same slice matching icebram and ecpbram use — and reads the same bits of the *final*
bitstream (``top.bin`` unpacked by iceunpack, ``top.bit`` by ecpunpack). A patching bug, a bitstream
from another build, or a flipped bit then shows up as ROM contents the reference does not expect.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import LowbitError
from .reweight import _bram_blocks, _ecp5_index, _slices, asc_brams
from .synth import BITSTREAM_SUFFIX, PLACED_SUFFIX
from .toolchain import run_tool

__all__ = ["read_roms", "unpack_bitstream", "asc_slots", "config_slots"]


def asc_slots(asc_text: str):
    """Every 256-word bit slice an iCE40 ``.asc`` holds in its initialised BRAMs: yields
    ``((x, y), index array, slice bits)`` in icebram's order (index into the BRAM's 4096 bits)."""
    for pos, _, bits, slices in asc_brams(asc_text.split("\n")):
        for idx in slices:
            yield pos, idx, bits[idx]


def config_slots(cfg_text: str):
    """Every 512-word bit slice of the initialised DP16KDs of an ECP5 textual config, in ecpbram's
    order: yields ``(bram number, index array, slice bits)`` (index into the block's 2048 x 9 bits)."""
    lines = cfg_text.split("\n")
    index = _ecp5_index()
    for n, end, bram in _bram_blocks(lines):
        words = np.array([int(v, 16) for l in lines[n + 1:end] for v in l.split()], dtype=np.int64)
        if len(words) != 2048:
            raise LowbitError(f"{lines[n].strip()}: {len(words)} words, expected 2048", "the .config file is damaged")
        bits = ((words[:, None] >> np.arange(9)) & 1).astype(np.uint8).reshape(-1)
        for idx in index:
            for row in idx:
                yield bram, row, bits[row]


def _slot_bits(slots) -> dict:
    return {(pos, idx.tobytes()): bits for pos, idx, bits in slots}


def read_roms(placed_text: str, final_text: str, placeholder: dict, family: str) -> dict:
    """The ROM contents of ``final_text`` at the places ``placeholder`` (``{name: (width, words)}``, the
    contents the design was placed with) occupies in ``placed_text``; returns ``{name: (width, words)}``.

    Raises LowbitError if a placeholder slice is missing from the placed design, or if copies of one
    slice disagree in the final bitstream.
    """
    block = 256 if family == "ice40" else 512
    slots = asc_slots if family == "ice40" else config_slots
    wanted = {}
    for name in sorted(placeholder):
        width, words = placeholder[name]
        for s, key in enumerate(_slices(width, words, block)):
            wanted[key] = (name, s)
    where: dict = {}
    for pos, idx, bits in slots(placed_text):
        key = np.packbits(bits).tobytes()
        if key in wanted:
            where.setdefault(wanted[key], []).append((pos, idx))
    final = _slot_bits(slots(final_text))
    out = {}
    for name in sorted(placeholder):
        width, words = placeholder[name]
        depth = len(words)
        blocks = -(-depth // block)
        values = np.zeros(depth, dtype=object)
        for s in range(width * blocks):
            places = where.get((name, s))
            if not places:
                raise LowbitError(f"ROM {name} is not in the placed design (bit slice {s} not found)",
                                  "this build folder's placed design does not hold its ROM placeholders")
            copies = [final.get((pos, idx.tobytes())) for pos, idx in places]
            if any(c is None for c in copies) or any(not np.array_equal(c, copies[0]) for c in copies):
                raise LowbitError(f"ROM {name}: the bitstream's copies of bit slice {s} disagree or are missing",
                                  "the bitstream is damaged or not from this build")
            bit, blk = divmod(s, blocks)
            chunk = copies[0][:max(0, min(block, depth - blk * block))]
            for k, b in enumerate(chunk):
                if b:
                    values[blk * block + k] |= 1 << bit
        out[name] = (width, [int(v) for v in values])
    return out


def unpack_bitstream(build_dir, family: str) -> str:
    """The textual form (``.asc`` / ``.config``) of the build's final bitstream, unpacked by the tool."""
    build_dir = Path(build_dir)
    bitstream = build_dir / f"top.{BITSTREAM_SUFFIX[family]}"
    if not bitstream.is_file():
        raise LowbitError(f"{build_dir} has no {bitstream.name}", "build it again with 'lowbit build'")
    with tempfile.TemporaryDirectory(prefix=".unpack.", dir=build_dir) as work:
        work = Path(work)
        (work / bitstream.name).write_bytes(bitstream.read_bytes())
        out = f"unpacked.{PLACED_SUFFIX[family]}"
        if family == "ice40":
            run_tool("iceunpack", [bitstream.name, out], cwd=work)
        else:
            run_tool("ecpunpack", [bitstream.name, out], cwd=work)
        return (work / out).read_text()
