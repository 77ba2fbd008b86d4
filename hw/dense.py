"""The layer engine: one Dense layer (or a Conv2d layer fed im2col rows) on an ``R x C`` MAC array.

Dataflow: **output-stationary, weight-streaming.** Each cycle the array takes one K-chunk of ``R``
activation codes and one ``R x C`` weight word from ROM; column ``j`` adds ``sum_r x[r] * w[r][j]`` to
its accumulator, which stays in place for ``KC = ceil(K / R)`` cycles and is then handed to the
requantizer. Batch-1 inference is a matrix-vector product with no weight reuse, so a weight-stationary
array would spend as long loading weights as computing; streaming one word per cycle keeps every MAC
busy. The products and their column sums are a :class:`lowbit.hw.array.MacArray`: an adder tree after
an (optional) product register (``ArrayConfig.product_reg``), or with ``ArrayConfig.systolic`` a grid
of :class:`~lowbit.hw.array.SystolicPE` passing partial sums down the rows, with the input skewed by one
cycle per row. Activations are broadcast along each row, or with ``ArrayConfig.systolic_2d`` passed
column to column, in which case the column sums are de-skewed.

Stream interfaces (``amaranth.lib.stream``; ``valid`` never depends on ``ready``):

* ``i``: one beat = one K-chunk, ``ArrayLayout(code, R)``; ``KC`` beats make one input vector, lanes
  past K padded (``lowbit.hw.packing.pack_chunks``). The input buffer is double-buffered: the next vector
  loads while the current one computes.
* ``o``: one beat = one output code, channels ``0 .. N-1`` in order. Binary (±1) outputs are bits
  (``1 = +1``); integer-logit outputs are ``signed(32)``.

Arithmetic (``docs/arithmetic.md``): accumulators are ``ArrayConfig.acc_bits`` wide; the requantizer adds
the folded bias (``arith.fold_zero_point``, also for ±1 weights on integer codes,
``ArrayConfig.weight_binary``; binary layers add ``bias - K`` to ``2 * popcount``), then
either multiplies by ``mult`` (as wide as the layer's largest, at most 24 bits), rounds half up by ``shift`` and clamps around the zero point,
or counts thresholds reached, or passes ``acc + bias`` through. Per-channel parameters come from a ROM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw.ir import arith
from ..sw.errors import LowbitError
from .array import MacArray, delay_line, operand_shapes
from .config import ArrayConfig
from .packing import pack_fields, pack_weights
# The requantizer and its parameters live beside the engine; re-exported here, where they used to be.
from .requant import LOGIT_BITS, SHIFT_BITS, EngineParams, Requantizer, engine_out_shape

__all__ = ["LOGIT_BITS", "EngineLayout", "engine_layout", "DenseEngine", "EngineParams", "Requantizer", "engine_out_shape"]

@dataclass(frozen=True, eq=False)
class EngineLayout:
    """The integers of one layer engine that follow from its array and its layer: chunk and group counts,
    register widths, the parameter-ROM word fields and the ROM geometry. A plain computation, shared by the
    gateware (:class:`DenseEngine`), the ROM images (:func:`lowbit.sw.flow.rom.rom_images`) and the build's
    checks, so that none of them instantiates gateware to do arithmetic."""

    config: ArrayConfig
    params: EngineParams
    reweightable: bool = False
    rom_block: int = 256
    kc: int = field(init=False)
    groups: int = field(init=False)
    code_bits: int = field(init=False)
    acc_bits: int = field(init=False)
    bias_bits: int = field(init=False)
    total_lo: int = field(init=False)
    total_hi: int = field(init=False)
    total_bits: int = field(init=False)
    const_shift: int | None = field(init=False)
    mult_bits: int = field(init=False)
    thr_bits: int = field(init=False)

    def __post_init__(self):
        config, params = self.config, self.params
        if params.k > config.max_k:
            raise LowbitError(f"layer has K={params.k} but the array was configured for max_k={config.max_k}")
        # Reweightable: the netlist must not depend on weight values (icebram/ecpbram patch the ROMs
        # later), so parameter widths are the widest the contract allows, the shift lives in the ROM,
        # ROMs are block RAM padded to whole `rom_block`-word blocks (the slice length the patch tool
        # matches: 256 for icebram, 512 for ecpbram).
        if self.rom_block not in (256, 512):
            raise ValueError(f"rom_block must be 256 (iCE40) or 512 (ECP5), not {self.rom_block!r}")
        for name, value in self._derive().items():
            object.__setattr__(self, name, value)

    def _derive(self) -> dict:
        cfg, p = self.config, self.params
        out = {"kc": math.ceil(p.k / cfg.rows), "groups": math.ceil(p.n / cfg.cols),
               "code_bits": 1 if cfg.binary else cfg.act_bits, "thr_bits": 0}
        if cfg.binary:
            value_lo, value_hi = 0, 2 * p.k                     # 2 * popcount
            out["acc_bits"] = arith.signed_bits_for(0, p.k) + 1
        else:
            plo, phi = cfg.product_range
            value_lo, value_hi = min(0, p.k * plo), max(0, p.k * phi)
            out["acc_bits"] = cfg.replace(max_k=max(p.k, 1)).acc_bits
        blo, bhi = int(p.bias.min()), int(p.bias.max())
        if self.reweightable:
            blo, bhi = -(1 << (arith.BIAS_BITS - 1)), (1 << (arith.BIAS_BITS - 1)) - 1
        out["bias_bits"] = arith.signed_bits_for(min(blo, 0), max(bhi, 0))
        out["total_lo"], out["total_hi"] = value_lo + blo, value_hi + bhi
        out["total_bits"] = arith.signed_bits_for(out["total_lo"], out["total_hi"])
        if p.mode == "logits" and out["total_bits"] > LOGIT_BITS and not self.reweightable:
            raise LowbitError(f"layer logits need {out['total_bits']} bits, more than {LOGIT_BITS}",
                              "reduce the bias range or requantize the last layer")
        out["const_shift"] = None
        out["mult_bits"] = max(1, int(np.max(p.mult)).bit_length()) if p.mode == "requant" else 0
        if self.reweightable and p.mode == "requant":
            out["mult_bits"] = arith.MULT_BITS
        if p.mode == "requant" and not self.reweightable:
            if np.all(p.shift == p.shift[0]):
                out["const_shift"] = int(p.shift[0])   # one shift for all channels: no barrel shifter
        if p.mode == "thresholds":
            t = p.thresholds
            out["thr_bits"] = arith.signed_bits_for(min(int(t.min()), 0), max(int(t.max()), 0)) if t.size else 1
            if self.reweightable:
                out["thr_bits"] = arith.BIAS_BITS + 2
        return out

    def param_fields(self):
        """Fields of one parameter-ROM word, from bit 0 up (see :func:`lowbit.hw.packing.pack_fields`)."""
        fields = [("bias", self.bias_bits)]
        if self.params.mode == "requant":
            fields.append(("mult", self.mult_bits))
            if self.const_shift is None:
                fields.append(("shift", SHIFT_BITS))
        elif self.params.mode == "thresholds":
            fields += [(f"t{i}", self.thr_bits) for i in range(self.params.thresholds.shape[1])]
        return fields

    def param_words(self) -> list[int]:
        p = self.params
        recs = []
        for n in range(p.n):
            rec = {"bias": int(p.bias[n])}
            if p.mode == "requant":
                rec["mult"] = int(p.mult[n])
                rec["shift"] = int(p.shift[n])
            elif p.mode == "thresholds":
                rec.update({f"t{i}": int(v) for i, v in enumerate(p.thresholds[n])})
            recs.append(rec)
        fields = self.param_fields()
        try:
            return pack_fields(recs, fields, signed_fields=[n for n, _ in fields if n not in ("mult", "shift")])
        except ValueError as exc:
            # Only a reweightable engine's fixed-width fields can be too narrow for a new model's values.
            raise LowbitError(f"a parameter does not fit the engine's ROM: {exc}",
                              "this model's biases or thresholds exceed what the build can hold") from None

    def weight_words(self) -> list[int]:
        cfg = self.config
        return pack_weights(self.params.weight, cfg.rows, cfg.cols, cfg.weight_bits, cfg.weights_binary)

    def rom_geometry(self) -> dict:
        """``{name: (width, depth)}`` of the weight and parameter ROMs as built."""
        fields = self.param_fields()
        geo = {"weights": (self.config.weight_word_bits, self.groups * self.kc),
               "params": (sum(b for _, b in fields), self.params.n)}
        if self.reweightable:
            b = self.rom_block
            geo = {k: (-(-w // 4) * 4, -(-d // b) * b) for k, (w, d) in geo.items()}
        return geo



def engine_layout(config: ArrayConfig, params: EngineParams, *, reweightable: bool = False,
                  rom_block: int = 256) -> EngineLayout:
    """The :class:`EngineLayout` of ``params`` on ``config`` (LowbitError if the layer cannot be built)."""
    return EngineLayout(config, params, reweightable, rom_block)


class DenseEngine(wiring.Component):
    """One layer on an ``R x C`` array (see the module docstring).

    Parameters
    ----------
    config : ArrayConfig
        Array size, operand widths and signedness; ``config.max_k`` must be at least ``params.k``.
    params : EngineParams
        The layer's integers.

    Attributes
    ----------
    i, o : stream interfaces
    mac_cycles : Signal(32), out
        Cycles in which the array accumulated a chunk (for utilisation).
    """

    def __init__(self, config: ArrayConfig, params: EngineParams, *, reweightable: bool = False,
                 rom_init: dict | None = None, rom_block: int = 256):
        self.layout = layout = engine_layout(config, params, reweightable=reweightable, rom_block=rom_block)
        self.config, self.params = config, params
        self.reweightable, self.rom_block = reweightable, rom_block
        # `rom_init` ({"weights", "params"}) replaces the ROM contents (random placeholders at build time).
        self.rom_init = rom_init or {}
        self.kc, self.groups, self.code_bits = layout.kc, layout.groups, layout.code_bits
        self.acc_bits, self.bias_bits, self.total_bits = layout.acc_bits, layout.bias_bits, layout.total_bits
        self.total_lo, self.total_hi = layout.total_lo, layout.total_hi
        self.const_shift, self.mult_bits, self.thr_bits = layout.const_shift, layout.mult_bits, layout.thr_bits
        code, _ = operand_shapes(config)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(code, config.rows))),
            "o": Out(stream.Signature(engine_out_shape(params))),
            "mac_cycles": Out(32),
        })

    def param_fields(self):
        return self.layout.param_fields()

    def param_words(self) -> list[int]:
        return self.layout.param_words()

    def weight_words(self) -> list[int]:
        return self.layout.weight_words()

    def rom_geometry(self) -> dict:
        return self.layout.rom_geometry()

    # -- gateware ---------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, KC, G = cfg.rows, cfg.cols, self.kc, self.groups
        abits = self.code_bits
        wbits = cfg.weight_bits

        # Input buffer: two banks of KC chunks.
        m.submodules.xmem = xmem = Memory(shape=unsigned(R * abits), depth=2 * KC, init=[])
        xw = xmem.write_port()
        xr = xmem.read_port()
        full = Signal(2)
        full_set = Signal(2)
        full_clr = Signal(2)
        m.d.sync += full.eq((full | full_set) & ~full_clr)
        wbank = Signal()
        wptr = Signal(range(max(KC, 2)))
        m.d.comb += [self.i.ready.eq(~full.bit_select(wbank, 1)),
                     xw.addr.eq(Mux(wbank, KC, 0) + wptr),
                     xw.data.eq(self.i.payload.as_value()),
                     xw.en.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.valid & self.i.ready):
            with m.If(wptr == KC - 1):
                m.d.sync += [wptr.eq(0), wbank.eq(~wbank)]
                m.d.comb += full_set.bit_select(wbank, 1).eq(1)
            with m.Else():
                m.d.sync += wptr.eq(wptr + 1)

        # Weight ROM: G * KC words of R x C weights.
        m.submodules.wmem = wmem = self._rom("weights", R * C * wbits, self.weight_words())
        wr = wmem.read_port()

        # Sequencer: (group g, chunk c) over the full bank.
        rbank = Signal()
        g = Signal(range(max(G, 2)))
        c = Signal(range(max(KC, 2)))
        running = full.bit_select(rbank, 1)
        advance = Signal()
        m.d.comb += [xr.addr.eq(Mux(rbank, KC, 0) + c), xr.en.eq(advance),
                     wr.addr.eq(g * KC + c), wr.en.eq(advance)]
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "g": range(max(G, 2))}))
        with m.If(advance):
            m.d.sync += [s1.valid.eq(running), s1.first.eq(c == 0), s1.last.eq(c == KC - 1), s1.g.eq(g)]
            with m.If(running):
                with m.If(c == KC - 1):
                    m.d.sync += c.eq(0)
                    with m.If(g == G - 1):
                        m.d.sync += [g.eq(0), rbank.eq(~rbank)]
                        m.d.comb += full_clr.bit_select(rbank, 1).eq(1)
                    with m.Else():
                        m.d.sync += g.eq(g + 1)
                with m.Else():
                    m.d.sync += c.eq(c + 1)

        # The MAC array (hw/array.py): `s2` carries the flags of the chunk whose column sums are in
        # `totals`; the array and the flag delay line advance together on `advance` (so stalls keep
        # the skew).
        m.submodules.array = array = MacArray(cfg)
        m.d.comb += [array.en.eq(advance), array.x.as_value().eq(xr.data), array.w.as_value().eq(wr.data)]
        totals = [array.sums[j] for j in range(C)]
        s2 = delay_line(m, s1, array.latency, advance, "flags", s1.shape())

        # Output-stationary accumulators.
        acc = [Signal(signed(self.acc_bits), name=f"acc{j}") for j in range(C)]
        # Finished column sums wait in a two-slot buffer for the requantizer, so a new result can land
        # while the previous one is still being read out (one chunk per vector makes a result every
        # cycle), and the array's stall depends on registers only (it fans out to every PE).
        slots = [[Signal(signed(self.acc_bits), name=f"res{k}_{j}") for j in range(C)] for k in range(2)]
        slot_g = [Signal(range(max(G, 2)), name=f"res{k}_g") for k in range(2)]
        full = Signal(2)
        wsel, rsel = Signal(), Signal()
        res_set, res_clr = Signal(), Signal()
        m.d.sync += full.eq((full & ~(res_clr << rsel)) | (res_set << wsel))
        with m.If(res_clr):
            m.d.sync += rsel.eq(~rsel)
        m.d.comb += advance.eq(~(s2.valid & s2.last & full.bit_select(wsel, 1)))
        with m.If(advance & s2.valid):
            m.d.sync += self.mac_cycles.eq(self.mac_cycles + 1)
            sums = [Mux(s2.first, 0, acc[j]) + totals[j] for j in range(C)]
            with m.If(s2.last):
                for k in range(2):
                    with m.If(wsel == k):
                        m.d.sync += [slot.eq(v) for slot, v in zip(slots[k], sums)]
                        m.d.sync += slot_g[k].eq(s2.g)
                m.d.sync += wsel.eq(~wsel)
                m.d.comb += res_set.eq(1)
            with m.Else():
                m.d.sync += [a.eq(v) for a, v in zip(acc, sums)]
        res = [Signal(signed(self.acc_bits), name=f"res{j}") for j in range(C)]
        res_g = Signal(range(max(G, 2)))
        m.d.comb += [res[j].eq(Mux(rsel, slots[1][j], slots[0][j])) for j in range(C)]
        m.d.comb += res_g.eq(Mux(rsel, slot_g[1], slot_g[0]))
        res_full = full.bit_select(rsel, 1)

        # Requantizer: serialises the C column results, one per cycle, through a 4-stage pipeline.
        m.submodules.requant = rq = Requantizer(self)
        m.d.comb += [rq.i.valid.eq(res_full), rq.i.payload.g.eq(res_g), res_clr.eq(rq.i.valid & rq.i.ready)]
        m.d.comb += [rq.i.payload.sums[j].eq(res[j]) for j in range(C)]
        wiring.connect(m, wiring.flipped(self.o), rq.o)
        return m

    def _rom(self, name, width, words):
        if self.reweightable:
            width, depth = self.rom_geometry()[name]
            words = list(self.rom_init.get(name, words)) + [0] * (depth - len(self.rom_init.get(name, words)))
            return Memory(shape=unsigned(width), depth=depth, init=words,
                          attrs={"ram_style": "block", "rom_style": "block"})
        return Memory(shape=unsigned(width), depth=len(words), init=words)


