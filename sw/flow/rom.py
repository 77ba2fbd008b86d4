"""ROM images: every weight and parameter ROM of a build, computed in one place (:func:`rom_images`) for
the build, re-weighting and simulation; their word formats are :mod:`lowbit.hw.packing`'s."""

from __future__ import annotations

import numpy as np

from ..errors import LowbitError

__all__ = ["ROM_BLOCK", "rom_block_for", "rom_images", "random_contents", "rom_init", "hex_text", "check_reweightable"]

#: Slice length (words) the patch tool of each FPGA family matches; ROM depths are padded to it.
ROM_BLOCK = {"ice40": 256, "ecp5": 512}


def rom_block_for(family: str) -> int:
    if family not in ROM_BLOCK:
        raise LowbitError(f"re-weighting is not available for {family} devices", "use an iCE40 or ECP5 board")
    return ROM_BLOCK[family]


def random_contents(model, arrays, seed: int = 1, rom_block: int = 256) -> dict:
    """Random placeholder contents of the same geometry (distinct per ROM and seed)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (width, words) in sorted(rom_images(model, arrays, reweightable=True, rom_block=rom_block).items()):
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


def rom_images(model, arrays, *, reweightable: bool = False, rom_block: int = 256) -> dict:
    """Every weight and parameter ROM of ``model`` built with ``arrays``, by stable name:
    ``{"layer{i}_weights" | "layer{i}_params": (width, words)}``. The one place ROM contents are computed:
    the build writes them, re-weighting patches them, simulation reads them back. A ``reweightable``
    build's ROMs are padded to whole ``rom_block``-word blocks and to widths of whole hex digits."""
    from ...hw.dense import engine_layout
    from ...hw.network import plan_network
    out = {}
    for plan in plan_network(model, arrays):
        if plan.kind != "engine":
            continue
        layout = engine_layout(plan.config, plan.params, reweightable=reweightable, rom_block=rom_block)
        geometry = layout.rom_geometry()
        for kind, words in (("weights", layout.weight_words()), ("params", layout.param_words())):
            width, depth = geometry[kind]
            out[f"layer{plan.layer_index}_{kind}"] = (width, list(words) + [0] * (depth - len(words)))
    return out


def hex_text(width: int, words) -> str:
    """A ROM as a hex file: one word per line, most significant digit first, ``ceil(width / 4)`` digits.

    >>> hex_text(6, [1, 63])
    '01\\n3f\\n'
    """
    digits = max(1, -(-width // 4))
    return "".join(f"{w:0{digits}x}\n" for w in words)


def check_reweightable(model, arrays) -> None:
    """The value-dependent limits a reweightable build cannot adapt to (LowbitError otherwise)."""
    from ...hw.dense import engine_layout
    from ...hw.network import plan_network
    for plan in plan_network(model, arrays):
        if plan.kind == "engine":
            engine_layout(plan.config, plan.params)     # raises if the logits overflow
