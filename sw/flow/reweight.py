"""Re-weighting a built bitstream without synthesis or place-and-route (icebram / ecpbram).

A ``--reweightable`` build makes the netlist independent of the weights: every weight and parameter ROM
is block RAM, padded to whole blocks of the patch tool's slice length (256 words for iCE40's icebram,
512 for ECP5's ecpbram), with fixed-width fields (32-bit bias, 24-bit multiplier, shift in the ROM), and
is synthesised with seeded *random* contents, which the patch tool can find again bit slice by bit
slice. The placed design with random contents is kept (``top.random.asc`` or ``top.random.config``);
the real weights are patched in (random -> real) and packed to make ``top.bin`` / ``top.bit``.
``lowbit reweight`` patches the same placed design with another model's weights in seconds — and
because the netlist never saw the weights, a fresh reweightable build of that model yields the same
placed design and therefore the same bitstream, byte for byte (that is how the tests prove it).

The build itself runs the real tools (icebram, ecpbram); ``reweight`` uses one-pass Python
re-implementations of their slice matching (:func:`patch_asc_fast`, :func:`patch_config_fast`, each
tested equal to its tool), because the WebAssembly tools take seconds per ROM.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import LowbitError
from .rom import hex_text, random_contents, rom_images
from ..outputs import atomic_file
from .synth import BITSTREAM_SUFFIX, PLACED_SUFFIX, pack_bitstream
from .toolchain import run_tool, tool

__all__ = ["patch_asc", "patch_asc_fast", "patch_config", "patch_config_fast", "patch_and_pack",
           "reweight"]

#: The patch tool of each family (its name for messages).
PATCH_TOOL = {"ice40": "icebram", "ecp5": "ecpbram"}


def _patch_each_rom(folder: Path, src: str, dst: str, old: dict, new: dict, suffix: str, patch_one) -> None:
    """Run a patch tool once per ROM, chaining ``src`` -> intermediate files -> ``dst`` in ``folder``:
    ``patch_one(name, current, target)`` patches ROM ``name`` (its ``.from.hex``/``.to.hex`` written)."""
    folder = Path(folder)
    current = src
    for i, name in enumerate(sorted(old)):
        width = old[name][0]
        (folder / f"{name}.from.hex").write_text(hex_text(width, old[name][1]))
        (folder / f"{name}.to.hex").write_text(hex_text(width, new[name][1]))
        target = dst if i == len(old) - 1 else f"patch{i}.{suffix}"
        patch_one(name, current, target)
        current = target


def patch_asc(folder: Path, asc_in: str, asc_out: str, old: dict, new: dict) -> None:
    """Replace every ROM's ``old`` contents by ``new`` in an iCE40 ``.asc`` (icebram, one ROM a run)."""
    folder = Path(folder)

    def icebram(name, current, target):
        with open(folder / current, "rb") as fin, open(folder / target, "wb") as fout:
            proc = subprocess.run([tool("icebram"), f"{name}.from.hex", f"{name}.to.hex"], cwd=folder,
                                  stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=False)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise LowbitError(f"icebram could not patch ROM {name}: {msg[0]}",
                              "the ROM may not have been mapped to block RAM")

    _patch_each_rom(folder, asc_in, asc_out, old, new, "asc", icebram)


_SUBIDX = {0: (0,), 1: (0, 1), 2: (0, 2, 1, 3), 3: (0, 4, 2, 6, 1, 5, 3, 7)}


def _slices(width, words, block: int = 256):
    """The patch tools' bit slices of a hexfile: for each bit column, ``block`` consecutive words (as
    bytes keys; 256 for icebram, 512 for ecpbram)."""
    bits = np.array([[(w >> b) & 1 for b in range(width)] for w in words], dtype=np.uint8)
    out = []
    for i in range(width):
        for blk in range(0, len(words), block):
            out.append(np.packbits(bits[blk:blk + block, i]).tobytes())
    return out


def _patterns(old: dict, new: dict, block: int):
    pattern, owner = {}, {}
    for name in sorted(old):
        width = old[name][0]
        for f, t in zip(_slices(width, old[name][1], block), _slices(width, new[name][1], block)):
            if f in pattern:
                raise LowbitError(f"ROM {name} repeats a {block}-word bit slice", "rebuild with another ROM seed")
            pattern[f], owner[f] = t, name
    return pattern, owner


def _check_counts(counts: dict, owner: dict) -> None:
    found = set(counts.values())
    if len(found) != 1 or 0 in found:
        missing = sorted({owner[k] for k, c in counts.items() if c == 0})
        raise LowbitError(f"ROM contents not found in the bitstream: {', '.join(missing) or 'some slices'}",
                          "the ROM may not be in block RAM, or this build is not the one it claims")


def asc_brams(lines):
    """The initialised BRAMs of an iCE40 ``.asc`` (split into ``lines``), in icebram's slice order: yields
    ``((x, y), first data line, bits, slices)`` with ``bits`` the BRAM's 4096 bits (a NumPy array a caller
    may change, then write back with :func:`write_asc_bram`) and ``slices`` the index arrays of its
    256-word bit slices for the BRAM's port width."""
    data_line, config_line = {}, {}
    for n, line in enumerate(lines):
        if line.startswith(".ram_data"):
            x, y = map(int, line.split()[1:3])
            data_line[(x, y)] = n
        elif line.startswith(".ramt_tile"):
            x, y = map(int, line.split()[1:3])
            config_line[(x, y - 1)] = n
    for pos, dl in sorted(data_line.items()):
        cl = config_line[pos]
        mode = (2 if lines[cl + 3][7] == "1" else 0) | (1 if lines[cl + 4][7] == "1" else 0)
        value = 0
        for j in range(16):
            value |= int(lines[dl + 1 + j], 16) << (256 * j)
        bits = np.array([(value >> b) & 1 for b in range(4096)], dtype=np.uint8)
        sub = _SUBIDX[mode]
        P = 16 // (16 >> mode)
        slices = [np.array([blk_base + bit_base + oaddr * 16 + sub[iaddr]
                            for oaddr in range(256 // P) for iaddr in range(P)])
                  for blk_base in range(0, 4096, 4096 // P) for bit_base in range(0, 16, P)]
        yield pos, dl, bits, slices


def write_asc_bram(lines, dl: int, bits) -> None:
    """Write a BRAM's 4096 ``bits`` back into ``lines`` at its first data line ``dl``."""
    value = int("".join("1" if b else "0" for b in bits[::-1]), 2)
    for j in range(16):
        lines[dl + 1 + j] = f"{(value >> (256 * j)) & ((1 << 256) - 1):064x}"


def patch_asc_fast(asc_text: str, old: dict, new: dict) -> str:
    """The algorithm of icebram (slice matching in every initialised iCE40 BRAM), for all ROMs in one
    pass over the ``.asc`` text. Every slice of every ROM must be found the same number of times (at
    least once), as icebram requires; tests check the result against icebram's own output."""
    pattern, owner = _patterns(old, new, 256)
    counts = dict.fromkeys(pattern, 0)
    lines = asc_text.split("\n")
    for _, dl, bits, slices in list(asc_brams(lines)):
        changed = False
        for idx in slices:
            key = np.packbits(bits[idx]).tobytes()
            if key in pattern:
                bits[idx] = np.unpackbits(np.frombuffer(pattern[key], dtype=np.uint8))
                counts[key] += 1
                changed = True
        if changed:
            write_asc_bram(lines, dl, bits)
    _check_counts(counts, owner)
    return "\n".join(lines)


def patch_config(folder: Path, cfg_in: str, cfg_out: str, old: dict, new: dict) -> None:
    """Replace every ROM's ``old`` contents by ``new`` in an ECP5 textual ``.config`` (ecpbram, one ROM a
    run). ecpbram does not say whether it found anything, so its block RAM contents are checked against
    :func:`patch_config_fast` (which does count)."""
    folder = Path(folder)

    def ecpbram(name, current, target):
        try:
            run_tool("ecpbram", ["-i", current, "-o", target, "-f", f"{name}.from.hex", "-t", f"{name}.to.hex"],
                     cwd=folder)
        except LowbitError as exc:
            raise LowbitError(f"ecpbram could not patch ROM {name}: {exc.args[0]}",
                              "the ROM may not have been mapped to block RAM") from None

    _patch_each_rom(folder, cfg_in, cfg_out, old, new, "config", ecpbram)
    expected = read_config_brams(patch_config_fast((folder / cfg_in).read_text(), old, new))
    if read_config_brams((folder / cfg_out).read_text()) != expected:
        raise LowbitError("ecpbram's patched block RAMs differ from the expected contents",
                          "report this: the build's ROM placeholders may have been altered")


# ECP5 DP16KD data as ecpbram sees it: 2048 words of 9 bits; for each port width W (1, 2, 4, 9, 18,
# 36) the block holds B 512-bit slices, slice j's bit k at bit number k*W + j%W + (j//W)*512*W, which
# is word bn // NW, bit bn % NW (NW = 8 for the narrow widths, 9 for the others).
_ECP5_MODES = ((1, 8, 32), (2, 8, 32), (4, 8, 32), (9, 9, 36), (18, 9, 36), (36, 9, 36))


def _ecp5_index():
    out = []
    k = np.arange(512)
    for W, NW, B in _ECP5_MODES:
        rows = []
        for j in range(B):
            bn = k * W + j % W + (j // W) * 512 * W
            rows.append((bn // NW) * 9 + bn % NW)      # index into the block's 2048 x 9 bits
        out.append(np.array(rows))
    return out


def _bram_blocks(lines):
    """``(line index of a .bram_init header, index after its last data line, bram number)`` for every
    block RAM section of a textual config."""
    for n, line in enumerate(lines):
        if line.startswith(".bram_init"):
            end = n + 1
            while end < len(lines) and lines[end] and not lines[end].startswith("."):
                end += 1
            yield n, end, int(line.split()[1])


def read_config_brams(text: str) -> dict:
    """``{bram number: [2048 nine-bit words]}`` from the ``.bram_init`` sections of a textual config."""
    lines = text.split("\n")
    return {bram: [int(v, 16) for l in lines[n + 1:end] for v in l.split()]
            for n, end, bram in _bram_blocks(lines)}


def patch_config_fast(cfg_text: str, old: dict, new: dict) -> str:
    """The algorithm of ecpbram (slice matching in every initialised DP16KD, in its order of port widths),
    for all ROMs in one pass over the ``.config`` text; tests check it against ecpbram's own output.
    Every slice must be found the same number of times (at least once)."""
    pattern, owner = _patterns(old, new, 512)
    counts = dict.fromkeys(pattern, 0)
    index = _ecp5_index()
    lines = cfg_text.split("\n")
    for n, end, _ in list(_bram_blocks(lines)):
        words = np.array([int(v, 16) for l in lines[n + 1:end] for v in l.split()], dtype=np.int64)
        if len(words) != 2048:
            raise LowbitError(f"{lines[n].strip()}: {len(words)} words, expected 2048", "the .config file is damaged")
        bits = ((words[:, None] >> np.arange(9)) & 1).astype(np.uint8).reshape(-1)
        changed = False
        for idx in index:
            keys = np.packbits(bits[idx], axis=1)
            for j, key in enumerate(map(bytes, keys)):
                to = pattern.get(key)
                if to is not None:
                    bits[idx[j]] = np.unpackbits(np.frombuffer(to, dtype=np.uint8))
                    counts[key] += 1
                    changed = True
        if changed:
            words = (bits.reshape(2048, 9).astype(np.int64) << np.arange(9)).sum(axis=1)
            lines[n + 1:end] = [" ".join(f"{w:03x}" for w in words[i:i + 8]) for i in range(0, 2048, 8)]
    _check_counts(counts, owner)
    return "\n".join(lines)


def patch_and_pack(family: str, folder, placed: str, old: dict, new: dict, *, fast: bool) -> str:
    """Patch ROM contents ``old`` -> ``new`` into the placed design ``placed`` in ``folder`` and pack it
    into ``top.bin`` / ``top.bit``; returns the bitstream's file name. ``fast``: the one-pass Python
    patcher (as ``lowbit reweight`` uses), else the family's own tool (as the build does)."""
    folder = Path(folder)
    suffix = PLACED_SUFFIX[family]
    patched = f"top.patched.{suffix}"
    if fast:
        patch_fast = patch_asc_fast if family == "ice40" else patch_config_fast
        (folder / patched).write_text(patch_fast((folder / placed).read_text(), old, new))
    else:
        (patch_asc if family == "ice40" else patch_config)(folder, placed, patched, old, new)
    bitstream = f"top.{BITSTREAM_SUFFIX[family]}"
    pack_bitstream(family, patched, bitstream, folder)
    return bitstream


def reweight(build_dir, new_model, progress=lambda m: None) -> dict:
    """Patch the weights of ``new_model`` into the bitstream in ``build_dir``; returns a summary."""
    from ...hw.accel import architecture, architecture_difference
    from .record import load_build
    t0 = time.monotonic()
    build_dir = Path(build_dir)
    old_model, settings = load_build(build_dir)
    if not settings.get("reweightable"):
        raise LowbitError(f"{build_dir} was not built with --reweightable",
                          "rebuild with 'lowbit build ... --reweightable' to patch weights later")
    arrays = [tuple(a) for a in settings["arrays"]]
    difference = architecture_difference(architecture(old_model, arrays), architecture(new_model, arrays))
    if difference is not None:
        # Only weights, biases, multipliers, shifts and thresholds are in ROMs: anything else is netlist.
        raise LowbitError(f"the new model needs a different netlist: {difference}",
                          "re-weighting only changes ROM contents; build the new model with 'lowbit build'")
    from .rom import check_reweightable
    check_reweightable(new_model, arrays)
    family = settings["family"]
    block = settings["rom_block"]
    placed = f"top.random.{PLACED_SUFFIX[family]}"
    if not (build_dir / placed).is_file() or not (build_dir / "roms").is_dir():
        raise LowbitError(f"{build_dir} has no {placed if not (build_dir / placed).is_file() else 'roms/'}, which a "
                          "reweightable build keeps", "build it again with 'lowbit build ... --reweightable'")
    progress(f"patching the ROMs ({PATCH_TOOL[family]}'s slice matching, one pass) and packing")
    random = random_contents(old_model, arrays, settings["rom_seed"], block)
    new_roms = rom_images(new_model, arrays, reweightable=True, rom_block=block)
    # Work in a temporary folder that goes whatever happens; the build's files are replaced atomically,
    # the bitstream first (a failure before it leaves the build as it was).
    shutil.rmtree(build_dir / "reweight", ignore_errors=True)       # left by lowbit before this fix
    with tempfile.TemporaryDirectory(prefix=".reweight.", dir=build_dir) as work:
        work = Path(work)
        (work / placed).write_bytes((build_dir / placed).read_bytes())
        bitstream = patch_and_pack(family, work, placed, random, new_roms, fast=True)
        with atomic_file(build_dir / bitstream) as f:
            f.write((work / bitstream).read_bytes())
    new_model.save(build_dir / "model.lbm")
    for name, (width, words) in new_roms.items():
        with atomic_file(build_dir / "roms" / f"{name}.hex", "w") as f:
            f.write(hex_text(width, words))
    seconds = round(time.monotonic() - t0, 2)
    return {"build": str(build_dir), "seconds": seconds, "roms": len(random)}
