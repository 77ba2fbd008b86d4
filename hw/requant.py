"""The requantizer and the integers it computes with: :class:`EngineParams`, the parameters of one
layer as the hardware holds them, and :class:`Requantizer`, the unit that turns a layer engine's column
sums into output codes (``docs/arithmetic.md`` is the contract). :mod:`lowbit.hw.dense` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.ir import arith
from .array import code_shape, tree_sum

__all__ = ["LOGIT_BITS", "SHIFT_BITS", "EngineParams", "Requantizer", "engine_out_shape"]

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
        from ..sw.ir.model import Requant, Thresholds
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
