"""A formal spec of the overlay's :class:`~lowbit.hw.overlay.Sequencer`: for every descriptor the compiler
(:func:`lowbit.sw.flow.overlay.compile_program`) can write, every address it drives stays inside the layer's
input in the activation bank and inside the layer's weights.

The descriptor is not one example: its geometry is free (``AnyConst``: image rows and columns, channels,
kernel, stride, padding, groups, weight width ratio, weight base) under the assumptions the compiler
guarantees (windows inside the padded image, the input fits a bank, the weights fit the memory), and the
derived fields (address steps, origin, step counts) are computed from it with the compiler's formulas.
After ``start`` the sequencer steps whenever the solver likes (``AnySeq``), until its final step.

The asserted invariants tie every register to the loop counters — the window origin to the output
position, the address to the origin and the kernel position, the weight pointer to the step, each
"last value" flag to its counter — so that
k-induction (``check_formal(mode="prove")``) closes: they hold for all time, not only within a bound.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Mux, Signal
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Assert, Assume

from ..hw.overlay import OverlayConfig, Sequencer

__all__ = ["SequencerBoundsSpec"]


class SequencerBoundsSpec(Elaboratable):
    """``config``: the overlay (small memories keep the solver fast); with ``config.conv`` both Conv2d/
    Dense windows and MaxPool passes are covered (``pool`` is free too)."""

    def __init__(self, config: OverlayConfig):
        self.config = config

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.seq = seq = Sequencer(cfg)
        d = seq.desc
        GB = max(1, cfg.act_depth.bit_length())

        def free(bits, name):
            sig = Signal(bits, name=name)
            m.d.comb += sig.eq(AnyConst(bits))
            return sig

        ratio = free(5, "ratio")
        groups = free(GB + 1, "groups")
        w_base = free(max(1, cfg.weight_depth.bit_length()), "w_base")
        # at most a bank of output codes (compile_program refuses more)
        m.d.comb += Assume((ratio >= 1) & (ratio <= cfg.ratio_max) & (groups >= 1)
                           & (groups <= -(-cfg.act_depth * cfg.rows // cfg.cols)))
        m.d.comb += [d.ratio.eq(ratio), d.w_base.eq(w_base)]

        if cfg.conv:
            h, w, cw, kh, kw, sh, sw, ph, pw, oh, ow = (
                free(GB, n) for n in ("h", "w", "cw", "kh", "kw", "sh", "sw", "ph", "pw", "oh", "ow"))
            pool = free(1, "pool")
            for v in (h, w, cw, kh, kw, sh, sw, oh, ow):
                m.d.comb += Assume(v >= 1)
            # what compile_program writes: windows inside the padded image (padding less than the kernel,
            # none for a pool), the input within a bank, the padded image within two (the address
            # registers' range)
            m.d.comb += Assume((ph < kh) & (pw < kw) & ((oh - 1) * sh + kh <= h + 2 * ph)
                               & ((ow - 1) * sw + kw <= w + 2 * pw) & (h * w * cw <= cfg.act_depth)
                               & ((h + 2 * ph) * (w + 2 * pw) * cw <= 2 * cfg.act_depth))
            m.d.comb += Assume(~pool | ((ph == 0) & (pw == 0) & (groups == cw) & (ratio == 1)))
            kc = Mux(pool, kh * kw, kh * kw * cw)
            m.d.comb += [d.pool.eq(pool), d.in_h.eq(h), d.in_w.eq(w), d.kh.eq(kh), d.kw.eq(kw), d.oh.eq(oh),
                         d.ow.eq(ow), d.sh.eq(sh), d.sw.eq(sw), d.ph.eq(ph), d.pw.eq(pw), d.kc.eq(kc),
                         d.groups.eq(groups), d.cc_n.eq(Mux(pool, 1, cw)), d.step_kx.eq(Mux(pool, cw, 1)),
                         d.step_ky.eq(Mux(pool, (w - kw + 1) * cw, (w - kw) * cw + 1)),
                         d.col_adv.eq(sw * cw), d.row_adv.eq(sh * w * cw), d.origin.eq(-(ph * w + pw) * cw),
                         d.grp_step.eq(pool)]
            # every field holds its value (compile_program refuses a descriptor whose values do not fit)
            m.d.comb += Assume(kc <= cfg.act_depth)
            for name, value in (("step_ky", Mux(pool, (w - kw + 1) * cw, (w - kw) * cw + 1)),
                                ("col_adv", sw * cw), ("row_adv", sh * w * cw), ("origin", -(ph * w + pw) * cw)):
                m.d.comb += Assume(d[name] == value)
        else:
            kc = free(GB, "kc")
            m.d.comb += Assume((kc >= 1) & (kc <= cfg.act_depth))
            m.d.comb += [d.kc.eq(kc), d.groups.eq(groups)]
        weights = groups * kc * ratio
        m.d.comb += Assume(w_base + weights <= cfg.weight_depth)

        # start once, then step at will until the final step
        started, done = Signal(), Signal()
        m.d.comb += [seq.start.eq(Initial()), seq.init.eq(d)]
        m.d.sync += started.eq(1)
        step = AnySeq(1)
        m.d.comb += seq.step.eq(step & started & ~done)
        with m.If(seq.step & seq.final):
            m.d.sync += done.eq(1)

        s = seq.state
        live = started & ~done
        with m.If(live):
            # the weight pointer is the step's port word
            m.d.comb += Assert(s["wptr"] == w_base + (s["g"] * kc + s["c"]) * ratio + s["sub"])
            m.d.comb += Assert((s["sub"] < ratio) & (s["c"] < kc) & (s["g"] < groups))
            # the flags say which counters are at their last value
            at = seq.flags
            m.d.comb += Assert((at["sub"] == (s["sub"] == ratio - 1)) & (at["c"] == (s["c"] == kc - 1))
                               & (at["g"] == (s["g"] == groups - 1)))
            # the bounds themselves
            m.d.comb += Assert((seq.w_addr >= w_base) & (seq.w_addr < w_base + weights))
            m.d.comb += Assert(seq.w_addr < cfg.weight_depth)
            if cfg.conv:
                cc, kx, ky, ox, oy = (s[n] for n in ("cc", "kx", "ky", "ox", "oy"))
                m.d.comb += Assert((cc < Mux(pool, 1, cw)) & (kx < kw) & (ky < kh) & (ox < ow) & (oy < oh))
                m.d.comb += Assert((at["cc"] == (cc == Mux(pool, 1, cw) - 1)) & (at["kx"] == (kx == kw - 1))
                                   & (at["ox"] == (ox == ow - 1)) & (at["oy"] == (oy == oh - 1)))
                m.d.comb += Assert(s["c"] == Mux(pool, ky * kw + kx, (ky * kw + kx) * cw + cc))
                m.d.comb += Assert((s["iy0"] == oy * sh - ph) & (s["ix0"] == ox * sw - pw)
                                   & (s["iy"] == s["iy0"] + ky) & (s["ix"] == s["ix0"] + kx))
                m.d.comb += Assert(s["row_win"] == -(ph * w + pw) * cw + oy * sh * w * cw)
                m.d.comb += Assert(s["win"] == s["row_win"] + ox * sw * cw)
                m.d.comb += Assert(s["grp"] == s["win"] + Mux(pool, s["g"], 0))
                m.d.comb += Assert(s["a_addr"] == s["grp"] + (ky * w + kx) * cw + cc)
                with m.If(~seq.pad):
                    m.d.comb += Assert(seq.act_addr < h * w * cw)
                    m.d.comb += Assert(seq.act_addr == (s["iy"] * w + s["ix"]) * cw + cc + Mux(pool, s["g"], 0))
                with m.Else():
                    m.d.comb += Assert(seq.act_addr == 0)
            else:
                m.d.comb += Assert(seq.act_addr < kc)
        return m
