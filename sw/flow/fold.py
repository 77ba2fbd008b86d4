"""Folding: choose each layer's array size so the whole network fits a device, before any synthesis.

Every compute layer gets its own ``R x C`` array (``R`` input lanes, ``C`` output channels; see
``hw/config.py``) and the layers run as a pipeline, so the network's throughput is set by the slowest
layer. :func:`fold` starts every layer at 1x1 and repeatedly widens the bottleneck layer while the
resource estimate still fits the budget (the FINN approach of balancing folding factors). If even the
smallest arrays do not fit, :func:`fold` raises a LowbitError with the estimate and what to change —
in milliseconds, instead of after minutes of place-and-route.

The cost model (:class:`CostModel`) is linear in what a layer instantiates; its coefficients are
per-device and documented where they are set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import LowbitError
from .synth import FAMILIES

__all__ = ["LayerShape", "CostModel", "COST_MODELS", "LayerFold", "Folding", "fold", "layer_cycles", "predict_cycles",
           "rom_blocks"]


@dataclass(frozen=True)
class LayerShape:
    """What folding needs to know of a compute layer (Dense, or Conv2d after im2col).

    ``positions`` is the number of output pixels (1 for Dense): the array computes ``positions``
    dot-product groups of length ``k`` for each of ``n`` output channels. ``binary`` is an XNOR-popcount
    layer (±1 inputs and weights); ``weight_binary`` has ±1 weights (``weight_bits`` 1) on ``act_bits``
    integer codes, whose products are conditional negates costed like a 1-bit weight's select.
    """

    name: str
    k: int
    n: int
    positions: int = 1
    act_bits: int = 4
    weight_bits: int = 4
    binary: bool = False
    out_bits: int = 8
    weight_binary: bool = False

    @property
    def macs(self) -> int:
        return self.k * self.n * self.positions


def layer_cycles(shape: LayerShape, rows: int, cols: int) -> int:
    """Steady-state array cycles per inference: one cycle per ``rows``-long chunk of K, per group of
    ``cols`` output channels, per output position."""
    return shape.positions * math.ceil(shape.k / rows) * math.ceil(shape.n / cols)


def rom_blocks(width_bits: int, depth: int, family: str) -> int:
    """Block RAMs a ROM of ``depth`` words of ``width_bits`` occupies.

    iCE40 SB_RAM40_4K: 256 x 16 (or 512 x 8, 1024 x 4, 2048 x 2); ECP5 DP16KD: 512 x 36, 1024 x 18,
    2048 x 9, 4096 x 4, 8192 x 2, 16384 x 1. The narrowest configuration that covers ``depth`` is
    used per slice of the word.
    """
    modes = {"ice40": [(256, 16), (512, 8), (1024, 4), (2048, 2)],
             "ecp5": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]}[family]
    best = None
    for mode_depth, mode_width in modes:
        blocks = math.ceil(width_bits / mode_width) * math.ceil(depth / mode_depth)
        best = blocks if best is None else min(best, blocks)
    return best


@dataclass(frozen=True)
class CostModel:
    """Linear resource model of one layer engine on one FPGA family.

    ``lc_per_mac[(a, w)]`` is the logic cost of one processing element for ``a``-bit activations and
    ``w``-bit weights (product, adder, pipeline register), ``lc_per_column`` the accumulator and
    output path of one column, ``lc_per_layer`` the sequencing, requantization and buffering of one
    engine. Missing widths are interpolated by ``a * w`` (the size of an array multiplier).
    """

    family: str
    logic_resource: str
    lc_per_mac: dict
    lc_per_column: int
    lc_per_layer: int
    lc_system: int = 0           # once per design: UART, frame handler, buffers
    logic_budget: float = 0.85   # fraction of the device's logic a fold may use (routing needs slack)

    def pe_cost(self, a: int, w: int, binary: bool) -> float:
        if binary:
            return self.lc_per_mac[(1, 1)]
        if (a, w) in self.lc_per_mac:
            return self.lc_per_mac[(a, w)]
        # Nearest measured point scaled by operand area.
        (a0, w0), cost = min(self.lc_per_mac.items(), key=lambda kv: abs(kv[0][0] * kv[0][1] - a * w))
        return cost * (a * w) / (a0 * w0)

    def layer_logic(self, shape: LayerShape, rows: int, cols: int) -> int:
        return math.ceil(rows * cols * self.pe_cost(shape.act_bits, shape.weight_bits, shape.binary)
                         + cols * self.lc_per_column + self.lc_per_layer)

    def layer_brams(self, shape: LayerShape, rows: int, cols: int) -> int:
        depth = math.ceil(shape.k / rows) * math.ceil(shape.n / cols)
        weights = rom_blocks(rows * cols * (1 if shape.binary else shape.weight_bits), depth, self.family)
        return weights


# Coefficients measured with `lowbit.sw.bench.synth_core` on a UP5K (Yosys 0.70 with booth, nextpnr
# 0.11), engine alone, 64x32 layer, LUT multipliers: 1x1 array 914 LCs (the per-engine cost: sequencer,
# buffers, requantizer with its 16-bit multiplier); 4x4 4-bit 1909; 16x1 4-bit 1966; 8x8 2-bit 2617
# -> about 62 LCs per 4-bit PE and 27 per 2-bit PE. 1- and 8-bit PEs are scaled from these. The UART,
# frame handler and output FIFO of a board core add about 1400 LCs once (`lc_system`). ECP5 LUT4 counts
# are taken as equal (not yet measured separately).
COST_MODELS = {
    family: CostModel(family, resource,
                      {(1, 1): 6, (2, 2): 27, (4, 2): 40, (4, 4): 62, (8, 4): 110, (8, 8): 200},
                      lc_per_column=30, lc_per_layer=900, lc_system=1400)
    for family, resource in ((f.name, f.logic_resource) for f in FAMILIES.values())
}


@dataclass(frozen=True)
class LayerFold:
    shape: LayerShape
    rows: int
    cols: int
    logic: int
    brams: int

    @property
    def cycles(self) -> int:
        # The array's chunks, but never fewer than the cycles to receive the K inputs and emit the N
        # outputs of each position one code per cycle (widening past that only costs area).
        s = self.shape
        return max(layer_cycles(s, self.rows, self.cols), s.k * s.positions, s.n * s.positions)

    @property
    def utilization(self) -> float:
        return self.shape.macs / (self.rows * self.cols * self.cycles)


@dataclass
class Folding:
    layers: list
    logic_capacity: int
    bram_capacity: int
    logic_resource: str
    notes: list = field(default_factory=list)

    system_logic: int = 0

    @property
    def logic(self) -> int:
        return sum(f.logic for f in self.layers) + self.system_logic

    @property
    def brams(self) -> int:
        return sum(f.brams for f in self.layers)

    @property
    def bottleneck_cycles(self) -> int:
        return max(f.cycles for f in self.layers)

    def as_dict(self) -> dict:
        return {
            "layers": [{"name": f.shape.name, "rows": f.rows, "cols": f.cols, "cycles": f.cycles,
                        "utilization": round(f.utilization, 4), "logic": f.logic, "brams": f.brams}
                       for f in self.layers],
            "estimate": {self.logic_resource: self.logic, "brams": self.brams},
            "capacity": {self.logic_resource: self.logic_capacity, "brams": self.bram_capacity},
            "bottleneck_cycles": self.bottleneck_cycles,
        }


def _options(extent: int, limit: int, exact: bool = True) -> list[int]:
    # Array sizes worth trying for a dimension. ``exact``: for every count of chunks m, the smallest size
    # that covers the extent in m chunks (ceil(extent / m)); any size in between only adds idle lanes.
    # Besides powers of two this offers sizes like 3 for K = 32 (11 chunks), which balance a pipeline
    # whose stages would otherwise differ by 2x. Otherwise powers of two and the extent: convolutions
    # are fed by an im2col stage the cycle model does not describe, and measured no better with the
    # finer sizes (digits CNN: 863 against 646 cycles).
    if exact:
        return sorted({min(-(-extent // m), limit) for m in range(1, extent + 1)})
    opts = {1, min(extent, limit)}
    p = 2
    while p < extent and p <= limit:
        opts.add(p)
        p *= 2
    return sorted(opts)


def fold(shapes, model: CostModel, logic_capacity: int, bram_capacity: int, *, max_rows: int = 64,
         max_cols: int = 64, device_name: str = "the device", max_macs: int | None = None) -> Folding:
    """Choose ``(rows, cols)`` per layer: widen the bottleneck layer while the estimate fits (and, with
    ``max_macs``, while all arrays together have at most that many products, e.g. one DSP block each).

    Raises
    ------
    LowbitError
        if the network does not fit even with 1x1 arrays, naming the estimate and what to change.
    """
    shapes = list(shapes)
    if not shapes:
        raise LowbitError("the model has no Dense or Conv2d layer to put on the array",
                          "lowbit accelerates networks with at least one Dense or Conv2d layer")
    budget = int(logic_capacity * model.logic_budget) - model.lc_system

    def make(shape, r, c):
        return LayerFold(shape, r, c, model.layer_logic(shape, r, c), model.layer_brams(shape, r, c))

    folds = [make(s, 1, 1) for s in shapes]
    total_logic = sum(f.logic for f in folds)
    total_brams = sum(f.brams for f in folds)
    if total_logic > budget or total_brams > bram_capacity:
        raise LowbitError(
            f"the model does not fit {device_name} even fully folded (1x1 arrays): estimate "
            f"{total_logic + model.lc_system} {model.logic_resource} of {budget + model.lc_system} usable "
            f"({logic_capacity} total) and "
            f"{total_brams} block RAMs of {bram_capacity}",
            "use fewer or smaller layers, fewer weight bits, or a bigger device (e.g. ulx3s-85f)")
    while True:
        i = max(range(len(folds)), key=lambda j: folds[j].cycles)
        f = folds[i]
        best = None
        # Next step up in either dimension; prefer the one that cuts cycles most per added logic.
        exact = f.shape.positions == 1 and all(x.shape.positions == 1 for x in folds)
        for r in _options(f.shape.k, max_rows, exact):
            for c in _options(f.shape.n, max_cols, exact):
                if (r, c) == (f.rows, f.cols) or r < f.rows or c < f.cols:
                    continue
                cand = make(f.shape, r, c)
                if cand.cycles >= f.cycles:
                    continue
                logic = sum(x.logic for x in folds) - f.logic + cand.logic
                brams = sum(x.brams for x in folds) - f.brams + cand.brams
                if logic > budget or brams > bram_capacity:
                    continue
                if max_macs is not None and sum(x.rows * x.cols for x in folds) - f.rows * f.cols + r * c > max_macs:
                    continue
                gain = (f.cycles - cand.cycles) / max(1, cand.logic - f.logic)
                if best is None or gain > best[0]:
                    best = (gain, cand)
        if best is None:
            break  # the bottleneck cannot grow within budget: the network's rate is set
        folds[i] = best[1]
    return Folding(folds, logic_capacity, bram_capacity, model.logic_resource, system_logic=model.lc_system)


def predict_cycles(shapes, arrays) -> int:
    """Steady-state cycles per inference of a chain of Dense engines (one code per beat between them).

    Each engine needs ``max(ceil(K/R) * ceil(N/C), K, N)`` cycles per vector: the array's chunks, the K
    input codes arriving one per cycle, and the N results leaving the requantizer one per cycle; the
    pipeline runs at its slowest engine. Conv2d/MaxPool stages (their Replay buffers do not overlap
    loading and replaying) are not modelled.
    """
    worst = 0
    for shape, (r, c) in zip(shapes, arrays):
        if shape.positions != 1:
            raise ValueError("predict_cycles models Dense layers only")
        worst = max(worst, LayerFold(shape, r, c, 0, 0).cycles)
    return worst
