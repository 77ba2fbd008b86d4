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
  past K padded (``lowbit.sw.rom.pack_chunks``). The input buffer is double-buffered: the next vector
  loads while the current one computes.
* ``o``: one beat = one output code, channels ``0 .. N-1`` in order. Binary (±1) outputs are bits
  (``1 = +1``); integer-logit outputs are ``signed(32)``.

Arithmetic (``docs/arithmetic.md``): accumulators are ``ArrayConfig.acc_bits`` wide; the requantizer adds
the folded bias (``arith.fold_zero_point``; binary layers add ``bias - K`` to ``2 * popcount``), then
either multiplies by ``mult`` (as wide as the layer's largest, at most 24 bits), rounds half up by ``shift`` and clamps around the zero point,
or counts thresholds reached, or passes ``acc + bias`` through. Per-channel parameters come from a ROM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth import Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import arith
from ..sw.errors import LowbitError
from ..sw.rom import pack_fields, pack_weights
from .array import MacArray, code_shape, delay_line, operand_shapes, tree_sum
from .config import ArrayConfig

__all__ = ["LOGIT_BITS", "DenseEngine", "EngineParams", "Requantizer", "engine_out_shape"]

#: Width of integer-logit outputs (``acc + bias`` of a final layer without requantization).
LOGIT_BITS = 32
#: Width of a per-channel shift in the parameter ROM: holds any shift of the contract (``arith.MAX_SHIFT``).
SHIFT_BITS = arith.MAX_SHIFT.bit_length()


def engine_out_shape(params) -> Shape:
    """Shape of one output beat: a bit for binary outputs, ``signed(32)`` for logits, else the code."""
    if params.out_binary:
        return unsigned(1)
    if params.mode == "logits":
        return signed(LOGIT_BITS)
    return code_shape(params.out_bits, params.out_signed)


def _common_shift(mult, shift):
    """Per-channel ``(mult, shift)`` rewritten to one shift where the multipliers stay within
    ``arith.MULT_BITS``: ``round_shift(v * m * 2**d, s + d) == round_shift(v * m, s)`` exactly, so the
    results are identical and the hardware needs no variable (barrel) shifter on its critical path."""
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    top = int(shift.max())
    wide = mult << (top - shift)
    if int(wide.max()) < (1 << arith.MULT_BITS):
        return wide, np.full_like(shift, top)
    return mult.copy(), shift.copy()


@dataclass(frozen=True)
class EngineParams:
    """Everything a :class:`DenseEngine` computes with, all integers (built by :meth:`from_layer`).

    ``mode`` is ``"requant"`` (``mult``, ``shift``, ``zero_point``, ``lo``, ``hi``), ``"thresholds"``
    (``thresholds`` (N, S), ``out_lo``, ``out_step``) or ``"logits"``. ``bias`` is already folded.
    """

    k: int
    n: int
    weight: np.ndarray
    bias: np.ndarray
    mode: str
    out_bits: int
    out_signed: bool
    out_binary: bool = False
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None
    zero_point: int = 0
    lo: int = 0
    hi: int = 0
    thresholds: np.ndarray | None = None
    out_lo: int = 0
    out_step: int = 1

    @classmethod
    def from_layer(cls, layer, in_q) -> EngineParams:
        """Parameters of an IR ``Dense``/``Conv2d`` layer whose input codes are described by ``in_q``."""
        from ..sw.model import Requant, Thresholds
        w = layer.matrix()
        k, n = w.shape
        if in_q.binary:
            bias = np.asarray(layer.bias, dtype=np.int64) - k      # acc = 2 * popcount - K
        else:
            bias = arith.fold_zero_point(layer.bias, w, in_q.zero_point)
        rq = layer.requant
        if isinstance(rq, Requant):
            mult, shift = _common_shift(np.broadcast_to(rq.mult, (n,)), np.broadcast_to(rq.shift, (n,)))
            return cls(k, n, w, bias, "requant", layer.out_q.bits, layer.out_q.signed, mult=mult, shift=shift,
                       zero_point=rq.zero_point, lo=max(rq.lo, rq.zero_point) if rq.relu else rq.lo, hi=rq.hi)
        if isinstance(rq, Thresholds):
            t = np.broadcast_to(rq.thresholds, (n, rq.thresholds.shape[1])).copy()
            binary = layer.out_q is not None and layer.out_q.binary
            bits = 1 if binary else layer.out_q.bits
            return cls(k, n, w, bias, "thresholds", bits, False if binary else layer.out_q.signed,
                       out_binary=binary, thresholds=t, out_lo=rq.out_lo, out_step=rq.out_step)
        return cls(k, n, w, bias, "logits", LOGIT_BITS, True)


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
        if params.k > config.max_k:
            raise LowbitError(f"layer has K={params.k} but the array was configured for max_k={config.max_k}")
        self.config = config
        self.params = params
        # Reweightable: the netlist must not depend on weight values (icebram/ecpbram patch the ROMs
        # later), so parameter widths are the widest the contract allows, the shift lives in the ROM,
        # ROMs are block RAM padded to whole `rom_block`-word blocks (the slice length the patch tool
        # matches: 256 for icebram, 512 for ecpbram), and `rom_init` ({"weights", "params"}) replaces
        # their contents (random placeholders at build time).
        if rom_block not in (256, 512):
            raise ValueError(f"rom_block must be 256 (iCE40) or 512 (ECP5), not {rom_block!r}")
        self.reweightable, self.rom_block = reweightable, rom_block
        self.rom_init = rom_init or {}
        R, C = config.rows, config.cols
        self.kc = math.ceil(params.k / R)
        self.groups = math.ceil(params.n / C)
        self.code_bits = 1 if config.binary else config.act_bits
        code, _ = operand_shapes(config)
        out_shape = engine_out_shape(params)
        self._derive_widths()
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(code, R))),
            "o": Out(stream.Signature(out_shape)),
            "mac_cycles": Out(32),
        })

    # -- widths that follow from the configuration and the (known) parameters ----------------------

    def _derive_widths(self):
        cfg, p = self.config, self.params
        if cfg.binary:
            value_lo, value_hi = 0, 2 * p.k                     # 2 * popcount
            self.acc_bits = arith.signed_bits_for(0, p.k) + 1
        else:
            plo, phi = cfg.product_range
            value_lo, value_hi = min(0, p.k * plo), max(0, p.k * phi)
            self.acc_bits = cfg.replace(max_k=max(p.k, 1)).acc_bits
        blo, bhi = int(p.bias.min()), int(p.bias.max())
        if self.reweightable:
            blo, bhi = -(1 << (arith.BIAS_BITS - 1)), (1 << (arith.BIAS_BITS - 1)) - 1
        self.bias_bits = arith.signed_bits_for(min(blo, 0), max(bhi, 0))
        self.total_lo, self.total_hi = value_lo + blo, value_hi + bhi
        self.total_bits = arith.signed_bits_for(self.total_lo, self.total_hi)
        if p.mode == "logits" and self.total_bits > LOGIT_BITS and not self.reweightable:
            raise LowbitError(f"layer logits need {self.total_bits} bits, more than {LOGIT_BITS}",
                              "reduce the bias range or requantize the last layer")
        self.const_shift = None
        self.mult_bits = max(1, int(np.max(p.mult)).bit_length()) if p.mode == "requant" else 0
        if self.reweightable and p.mode == "requant":
            self.mult_bits = arith.MULT_BITS
        if p.mode == "requant" and not self.reweightable:
            if np.all(p.shift == p.shift[0]):
                self.const_shift = int(p.shift[0])   # one shift for all channels: no barrel shifter
        if p.mode == "thresholds":
            t = p.thresholds
            self.thr_bits = arith.signed_bits_for(min(int(t.min()), 0), max(int(t.max()), 0)) if t.size else 1
            if self.reweightable:
                self.thr_bits = arith.BIAS_BITS + 2

    def param_fields(self):
        """Fields of one parameter-ROM word, from bit 0 up (see :func:`lowbit.sw.rom.pack_fields`)."""
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
        return pack_weights(self.params.weight, cfg.rows, cfg.cols, 1 if cfg.binary else cfg.weight_bits,
                            cfg.binary)

    # -- gateware ---------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, KC, G = cfg.rows, cfg.cols, self.kc, self.groups
        abits = self.code_bits
        wbits = 1 if cfg.binary else cfg.weight_bits

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

    def rom_geometry(self) -> dict:
        """``{name: (width, depth)}`` of the weight and parameter ROMs as built."""
        fields = self.param_fields()
        geo = {"weights": (self.config.rows * self.config.cols * (1 if self.config.binary else self.config.weight_bits),
                           self.groups * self.kc),
               "params": (sum(b for _, b in fields), self.params.n)}
        if self.reweightable:
            b = self.rom_block
            geo = {k: (-(-w // 4) * 4, -(-d // b) * b) for k, (w, d) in geo.items()}
        return geo

    def _rom(self, name, width, words):
        if self.reweightable:
            width, depth = self.rom_geometry()[name]
            words = list(self.rom_init.get(name, words)) + [0] * (depth - len(self.rom_init.get(name, words)))
            return Memory(shape=unsigned(width), depth=depth, init=words,
                          attrs={"ram_style": "block", "rom_style": "block"})
        return Memory(shape=unsigned(width), depth=len(words), init=words)


class Requantizer(wiring.Component):
    """The requantization unit of one :class:`DenseEngine`: takes the ``C`` column results of a group
    (``i``: ``sums`` and the group index ``g``), reads each channel's parameters from the parameter ROM
    and emits one output code per channel (``o``), in a 4-stage pipeline. Per mode: bias add, then
    ``mult`` times the total, rounded half up by ``shift``, plus the zero point, clamped to
    ``[lo, hi]`` (ReLU is ``lo = zero point``); or the number of thresholds reached, scaled and offset
    (multi-threshold); or ``acc + bias`` (logits). ``docs/arithmetic.md`` is the contract.

    Widths, parameter fields and the ROM come from ``engine`` (they follow from its layer).
    """

    def __init__(self, engine: DenseEngine):
        self.engine = engine
        cfg = engine.config
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "sums": data.ArrayLayout(signed(engine.acc_bits), cfg.cols),
                "g": range(max(engine.groups, 2))}))),
            "o": Out(stream.Signature(engine_out_shape(engine.params))),
        })

    def elaborate(self, platform):
        m = Module()
        e = self.engine
        cfg, p = e.config, e.params
        C, G = cfg.cols, e.groups
        fields = e.param_fields()
        width = sum(b for _, b in fields)
        m.submodules.pmem = pmem = e._rom("params", width, e.param_words())
        pr = pmem.read_port()
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)

        j = Signal(range(max(C, 2)))
        last_cols = p.n - (G - 1) * C
        last_j = Mux(self.i.payload.g == G - 1, last_cols - 1, C - 1)
        m.d.comb += [pr.addr.eq(self.i.payload.g * C + j), pr.en.eq(adv), self.i.ready.eq(adv & (j == last_j))]
        r1_valid = Signal()
        r1_val = Signal(signed(e.acc_bits))
        with m.If(adv):
            m.d.sync += [r1_valid.eq(self.i.valid), r1_val.eq(self.i.payload.sums[j])]
            with m.If(self.i.valid):
                with m.If(j == last_j):
                    m.d.sync += j.eq(0)
                with m.Else():
                    m.d.sync += j.eq(j + 1)

        # Stage 2: unpack parameters, add the bias.
        offsets, off = {}, 0
        for name, bits in fields:
            offsets[name] = (off, bits)
            off += bits

        def field(name, is_signed=False):
            o, b = offsets[name]
            v = pr.data[o:o + b]
            return v.as_signed() if is_signed else v

        value = (r1_val << 1) if cfg.binary else r1_val
        r2_valid = Signal()
        r2_total = Signal(signed(e.total_bits))
        r3_valid = Signal()
        r3_y = Signal(self.o.payload.shape())
        if p.mode == "requant":
            r2_mult = Signal(unsigned(e.mult_bits))
            r2_shift = Signal(SHIFT_BITS)
            with m.If(adv):
                m.d.sync += [r2_valid.eq(r1_valid), r2_total.eq(value + field("bias", True)),
                             r2_mult.eq(field("mult"))]
                if e.const_shift is None:
                    m.d.sync += r2_shift.eq(field("shift"))
            prod_bits = e.total_bits + e.mult_bits + 1
            r3p_valid = Signal()
            r3_prod = Signal(signed(prod_bits))
            r3_shift = Signal(SHIFT_BITS)
            with m.If(adv):
                m.d.sync += [r3p_valid.eq(r2_valid), r3_prod.eq(r2_total * r2_mult), r3_shift.eq(r2_shift)]
            # Round half up and shift (arith.round_shift), add the zero point, clamp.
            if e.const_shift is not None:
                s = e.const_shift
                rounded = (r3_prod + (1 << (s - 1))) >> s if s > 0 else r3_prod
            else:
                half = Mux(r3_shift == 0, 0, Const(1, prod_bits + 1) << (r3_shift - 1)[:SHIFT_BITS])
                rounded = (r3_prod + half) >> r3_shift
            y = Signal(signed(prod_bits + 2))
            m.d.comb += y.eq(rounded + p.zero_point)
            clamped = Mux(y < p.lo, p.lo, Mux(y > p.hi, p.hi, y))
            with m.If(adv):
                m.d.sync += [self.o.valid.eq(r3p_valid), self.o.payload.eq(clamped)]
        else:
            with m.If(adv):
                m.d.sync += [r2_valid.eq(r1_valid), r2_total.eq(value + field("bias", True))]
            if p.mode == "thresholds":
                steps = p.thresholds.shape[1]
                # The ROM word belongs to the element in stage 1: keep its thresholds with it.
                r2_thr = [Signal(signed(e.thr_bits), name=f"r2_t{i}") for i in range(steps)]
                with m.If(adv):
                    m.d.sync += [r2_thr[i].eq(field(f"t{i}", True)) for i in range(steps)]
                count = tree_sum([(r2_total >= r2_thr[i]) for i in range(steps)]) if steps else Const(0)
                ys = Signal(signed(max(8, p.out_bits + 2)))
                m.d.comb += ys.eq(p.out_lo + p.out_step * count)
                out = (ys > 0) if p.out_binary else ys
            else:
                out = r2_total
            with m.If(adv):
                m.d.sync += [r3_valid.eq(r2_valid), r3_y.eq(out)]
                m.d.sync += [self.o.valid.eq(r3_valid), self.o.payload.eq(r3_y)]
        return m
