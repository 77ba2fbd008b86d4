"""Re-weighting a built bitstream without synthesis or place-and-route (icebram).

A ``--reweightable`` build makes the netlist independent of the weights: every weight and parameter ROM
is block RAM, padded to whole 256-word blocks, with fixed-width fields (32-bit bias, 24-bit multiplier,
shift in the ROM), and is synthesised with seeded *random* contents, which icebram can find again bit
slice by bit slice. The placed design with random contents is kept (``top.random.asc``); the real
weights are patched in (random -> real) to make ``top.bin``. ``lowbit reweight`` patches the same
``top.random.asc`` with another model's weights in seconds — and because the netlist never saw the
weights, a fresh reweightable build of that model yields the same ``top.random.asc`` and therefore
the same bitstream, byte for byte (that is how the tests prove it).

Only iCE40 boards are supported for now; ECP5 (ecpbram) is not implemented.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from .errors import LowbitError
from .outputs import atomic_file
from .toolchain import run_tool, tool

__all__ = ["rom_contents", "random_contents", "patch_asc", "patch_asc_fast", "reweight"]


def _engines(model, arrays, **kw):
    from ..hw.dense import DenseEngine
    from ..hw.network import plan_network
    for plan in plan_network(model, arrays):
        if plan.kind == "engine":
            engine = DenseEngine(plan.config, plan.params, reweightable=True, **kw)
            engine._MustUse__silence = True
            yield f"layer{plan.layer_index}", engine


def rom_contents(model, arrays) -> dict:
    """``{"layer{i}_weights" | "layer{i}_params": (width, [words padded to the ROM depth])}``."""
    out = {}
    for name, engine in _engines(model, arrays):
        geo = engine.rom_geometry()
        for kind, words in (("weights", engine.weight_words()), ("params", engine.param_words())):
            width, depth = geo[kind]
            out[f"{name}_{kind}"] = (width, list(words) + [0] * (depth - len(words)))
    return out


def random_contents(model, arrays, seed: int = 1) -> dict:
    """Random placeholder contents of the same geometry (distinct per ROM and seed)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (width, words) in sorted(rom_contents(model, arrays).items()):
        out[name] = (width, [int.from_bytes(rng.bytes((width + 7) // 8), "little") & ((1 << width) - 1)
                             for _ in words])
    return out


def rom_init(contents: dict) -> dict:
    """Contents as :class:`lowbit.hw.network.Network`'s ``rom_init``."""
    init = {}
    for name, (_, words) in contents.items():
        layer, kind = name.rsplit("_", 1)
        init.setdefault(layer, {})[kind] = words
    return init


def _hex(width, words) -> str:
    digits = width // 4
    return "".join(f"{w:0{digits}x}\n" for w in words)


def patch_asc(folder: Path, asc_in: str, asc_out: str, old: dict, new: dict) -> None:
    """Replace every ROM's ``old`` contents by ``new`` in an iCE40 ``.asc`` (icebram, one ROM a run)."""
    folder = Path(folder)
    current = asc_in
    for i, name in enumerate(sorted(old)):
        width = old[name][0]
        (folder / f"{name}.from.hex").write_text(_hex(width, old[name][1]))
        (folder / f"{name}.to.hex").write_text(_hex(width, new[name][1]))
        target = asc_out if i == len(old) - 1 else f"patch{i}.asc"
        with open(folder / current, "rb") as fin, open(folder / target, "wb") as fout:
            proc = subprocess.run([tool("icebram"), f"{name}.from.hex", f"{name}.to.hex"], cwd=folder,
                                  stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=False)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise LowbitError(f"icebram could not patch ROM {name}: {msg[0]}",
                              "the ROM may not have been mapped to block RAM")
        current = target


_SUBIDX = {0: (0,), 1: (0, 1), 2: (0, 2, 1, 3), 3: (0, 4, 2, 6, 1, 5, 3, 7)}


def _slices(width, words):
    """icebram's bit slices of a hexfile: for each bit column, 256 consecutive words (as bytes keys)."""
    bits = np.array([[(w >> b) & 1 for b in range(width)] for w in words], dtype=np.uint8)
    out = []
    for i in range(width):
        for blk in range(0, len(words), 256):
            out.append(np.packbits(bits[blk:blk + 256, i]).tobytes())
    return out


def patch_asc_fast(asc_text: str, old: dict, new: dict) -> str:
    """The algorithm of icebram (slice matching in every initialised iCE40 BRAM), for all ROMs in one
    pass over the ``.asc`` text. Every slice of every ROM must be found the same number of times (at
    least once), as icebram requires; tests check the result against icebram's own output."""
    pattern, owner = {}, {}
    for name in sorted(old):
        width = old[name][0]
        for f, t in zip(_slices(width, old[name][1]), _slices(width, new[name][1])):
            if f in pattern:
                raise LowbitError(f"ROM {name} repeats a 256-word bit slice", "rebuild with another ROM seed")
            pattern[f], owner[f] = t, name
    counts = dict.fromkeys(pattern, 0)
    lines = asc_text.split("\n")
    data_line, config_line = {}, {}
    for n, line in enumerate(lines):
        if line.startswith(".ram_data"):
            x, y = map(int, line.split()[1:3])
            data_line[(x, y)] = n
        elif line.startswith(".ramt_tile"):
            x, y = map(int, line.split()[1:3])
            config_line[(x, y - 1)] = n
    for pos, dl in data_line.items():
        cl = config_line[pos]
        mode = (2 if lines[cl + 3][7] == "1" else 0) | (1 if lines[cl + 4][7] == "1" else 0)
        value = 0
        for j in range(16):
            value |= int(lines[dl + 1 + j], 16) << (256 * j)
        data = np.array([(value >> b) & 1 for b in range(4096)], dtype=np.uint8)
        sub = _SUBIDX[mode]
        P = 16 // (16 >> mode)
        changed = False
        for blk_base in range(0, 4096, 4096 // P):
            for bit_base in range(0, 16, P):
                idx = np.array([blk_base + bit_base + oaddr * 16 + sub[iaddr]
                                for oaddr in range(256 // P) for iaddr in range(P)])
                key = np.packbits(data[idx]).tobytes()
                if key in pattern:
                    data[idx] = np.unpackbits(np.frombuffer(pattern[key], dtype=np.uint8))
                    counts[key] += 1
                    changed = True
        if changed:
            value = int("".join("1" if b else "0" for b in data[::-1]), 2)
            for j in range(16):
                lines[dl + 1 + j] = f"{(value >> (256 * j)) & ((1 << 256) - 1):064x}"
    found = set(counts.values())
    if len(found) != 1 or 0 in found:
        missing = sorted({owner[k] for k, c in counts.items() if c == 0})
        raise LowbitError(f"ROM contents not found in the bitstream: {', '.join(missing) or 'some slices'}",
                          "the ROM may not be in block RAM, or this build is not the one it claims")
    return "\n".join(lines)


def reweight(build_dir, new_model, progress=lambda m: None) -> dict:
    """Patch the weights of ``new_model`` into the bitstream in ``build_dir``; returns a summary."""
    from ..hw.accel import architecture_hash
    from .build import load_build
    t0 = time.monotonic()
    build_dir = Path(build_dir)
    old_model, settings = load_build(build_dir)
    if not settings.get("reweightable"):
        raise LowbitError(f"{build_dir} was not built with --reweightable",
                          "rebuild with 'lowbit build ... --reweightable' to patch weights later")
    arrays = [tuple(a) for a in settings["arrays"]]
    if architecture_hash(new_model, arrays) != architecture_hash(old_model, arrays):
        raise LowbitError("the new model's architecture differs from the build's (layer shapes, bit-widths, "
                          "output modes or thresholds)", "re-weighting needs the same architecture: run lowbit build")
    from .build import check_reweightable
    check_reweightable(new_model, arrays)
    progress("patching the ROMs (icebram's slice matching, one pass)")
    random = random_contents(old_model, arrays, settings["rom_seed"])
    work = build_dir / "reweight"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    asc = patch_asc_fast((build_dir / "top.random.asc").read_text(), random, rom_contents(new_model, arrays))
    (work / "top.asc").write_text(asc)
    run_tool("icepack", ["top.asc", "top.bin"], cwd=work)
    with atomic_file(build_dir / "top.bin") as f:
        f.write((work / "top.bin").read_bytes())
    new_model.save(build_dir / "model.lbm")
    for name, (width, words) in rom_contents(new_model, arrays).items():
        (build_dir / "roms" / f"{name}.hex").write_text(_hex(width, words))
    shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - t0, 2)
    return {"build": str(build_dir), "seconds": seconds, "roms": len(random)}
