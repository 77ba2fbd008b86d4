"""A whole quantized network in hardware: one layer engine per Dense/Conv2d layer, chained by streams.

Every stage streams one code per beat in NHWC order, which is also the order of ``Flatten``, so
flattening costs nothing. Between stages:

* :class:`ChunkPacker` groups codes into the next engine's ``R``-lane K-chunks (padding the last chunk);
* :class:`Replay` stores a whole feature map, then replays it in another order from an address ROM:
  the im2col order for a Conv2d (padded taps emit the input zero point), or max-pooling windows for a
  MaxPool2d (each window's codes are reduced by ``max`` and emitted as one code).

Layers run concurrently as a pipeline, so throughput is set by the slowest stage (see
:mod:`lowbit.sw.flow.fold`, which sizes each engine's array). The address ROMs hold one entry per replayed
code (``positions x K`` for a convolution): fine for the small maps of the target devices, and
counted by the resource estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw.ir import arith
from ..sw.errors import LowbitError
from ..sw.ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model
from .config import ArrayConfig
from .dense import DenseEngine, EngineParams, engine_out_shape

__all__ = ["ChunkPacker", "Replay", "im2col_sequence", "maxpool_sequence", "StagePlan", "plan_network", "Network"]


class ChunkPacker(wiring.Component):
    """Codes (one per beat) -> chunks of ``rows`` lanes; every ``k`` codes form ``ceil(k/rows)`` chunks,
    lanes past ``k`` hold ``pad`` (see :func:`lowbit.hw.packing.pack_chunks`)."""

    def __init__(self, code_shape, rows: int, k: int, pad: int = 0):
        self.code_shape, self.rows, self.k, self.pad = code_shape, rows, k, pad
        super().__init__({"i": In(stream.Signature(code_shape)),
                          "o": Out(stream.Signature(data.ArrayLayout(code_shape, rows)))})

    def elaborate(self, platform):
        m = Module()
        R, K = self.rows, self.k
        lane = Signal(range(max(R, 2)))
        k = Signal(range(max(K, 2)))
        asm = Signal(data.ArrayLayout(self.code_shape, R))
        closing = (lane == R - 1) | (k == K - 1)
        m.d.comb += self.i.ready.eq(~(closing & self.o.valid & ~self.o.ready))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(closing):
                # Emit the chunk: lanes before `lane` from asm, this code, pads after.
                for r in range(R):
                    value = Mux(lane == r, self.i.payload, Mux(r < lane, asm[r], self.pad))
                    m.d.sync += self.o.payload[r].eq(value)
                m.d.sync += [self.o.valid.eq(1), lane.eq(0), k.eq(Mux(k == K - 1, 0, k + 1))]
            with m.Else():
                m.d.sync += [asm[lane].eq(self.i.payload), lane.eq(lane + 1), k.eq(k + 1)]
        return m


def im2col_sequence(h, w, cin, kernel, stride, padding) -> list:
    """Addresses (into an NHWC map) in im2col order, ``None`` for padded taps."""
    kh, kw = kernel
    oh, ow = arith.conv2d_out_shape(h, w, kernel, stride, padding)
    seq = []
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * stride[0] - padding[0] + ky, ox * stride[1] - padding[1] + kx
                    for ci in range(cin):
                        seq.append((iy * w + ix) * cin + ci if 0 <= iy < h and 0 <= ix < w else None)
    return seq


def maxpool_sequence(h, w, c, kernel, stride) -> list:
    """Addresses of each pooling window's codes, window after window, in NHWC output order."""
    kh, kw = kernel
    sh, sw = stride or kernel
    oh, ow = arith.conv2d_out_shape(h, w, kernel, (sh, sw), (0, 0))
    return [((oy * sh + ky) * w + ox * sw + kx) * c + ch
            for oy in range(oh) for ox in range(ow) for ch in range(c) for ky in range(kh) for kx in range(kw)]


class Replay(wiring.Component):
    """Store ``depth`` codes, then emit them in the order of ``sequence`` (an address ROM).

    ``window == 1``: each entry emits one code (``None`` entries emit ``pad``). ``window > 1``: each
    ``window`` consecutive entries are reduced by ``max`` (codes compared as ``code_shape`` values).
    Loading and replaying alternate (one buffer).
    """

    def __init__(self, code_shape, depth: int, sequence, window: int = 1, pad: int = 0):
        if len(sequence) % window:
            raise ValueError("sequence length must be a multiple of window")
        self.code_shape, self.depth, self.sequence = code_shape, depth, list(sequence)
        self.window, self.pad = window, pad
        super().__init__({"i": In(stream.Signature(code_shape)), "o": Out(stream.Signature(code_shape))})

    def elaborate(self, platform):
        m = Module()
        n = len(self.sequence)
        abits = max(1, (self.depth - 1).bit_length())
        m.submodules.mem = mem = Memory(shape=self.code_shape, depth=self.depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        # Address ROM entry: address, pad flag.
        entries = [(0, 1) if a is None else (a, 0) for a in self.sequence]
        m.submodules.seq = seq = Memory(shape=unsigned(abits + 1), depth=n,
                                        init=[a | (p << abits) for a, p in entries])
        sp = seq.read_port(domain="comb")
        loading = Signal(init=1)
        wptr = Signal(range(max(self.depth, 2)))
        m.d.comb += [self.i.ready.eq(loading), wp.addr.eq(wptr), wp.data.eq(self.i.payload),
                     wp.en.eq(self.i.valid & loading)]
        with m.If(self.i.valid & loading):
            with m.If(wptr == self.depth - 1):
                m.d.sync += [wptr.eq(0), loading.eq(0)]
            with m.Else():
                m.d.sync += wptr.eq(wptr + 1)

        # Replay pipeline: issue address (cycle 0) -> data (cycle 1) -> reduce / emit.
        idx = Signal(range(max(n, 2)))
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        m.d.comb += [sp.addr.eq(idx), rp.addr.eq(sp.data[:abits]), rp.en.eq(adv)]
        d_valid, d_pad, d_first, d_last = Signal(), Signal(), Signal(), Signal()
        issue = ~loading
        with m.If(adv):
            m.d.sync += [d_valid.eq(issue), d_pad.eq(sp.data[abits]),
                         d_first.eq(idx % self.window == 0), d_last.eq(idx % self.window == self.window - 1)]
            with m.If(issue):
                with m.If(idx == n - 1):
                    m.d.sync += [idx.eq(0), loading.eq(1)]
                with m.Else():
                    m.d.sync += idx.eq(idx + 1)
        value = Mux(d_pad, self.pad, rp.data)
        if self.window == 1:
            with m.If(adv):
                m.d.sync += [self.o.valid.eq(d_valid), self.o.payload.eq(value)]
        else:
            best = Signal(self.code_shape)
            cand = Mux(d_first | (value > best), value, best)
            with m.If(adv):
                m.d.sync += self.o.valid.eq(d_valid & d_last)
                with m.If(d_valid):
                    m.d.sync += [best.eq(cand), self.o.payload.eq(cand)]
        return m


@dataclass(frozen=True)
class StagePlan:
    """One hardware stage: ``kind`` is ``engine``, ``im2col`` or ``maxpool``; ``config``/``params`` for
    engines; ``shape_in`` the NHWC (or vector) shape entering it."""

    kind: str
    layer_index: int
    shape_in: tuple
    config: ArrayConfig | None = None
    params: EngineParams | None = None


def _code_shape(q):
    if q.binary:
        return unsigned(1)
    return signed(q.bits) if q.signed else unsigned(q.bits)


def plan_network(model: Model, arrays, systolic: bool = False, systolic_2d: bool = False,
                 mult: str = "lut") -> list:
    """Stages for ``model`` with ``arrays[i] = (rows, cols)`` for the i-th compute layer (``systolic``,
    ``systolic_2d``, ``mult``: see :class:`lowbit.hw.config.ArrayConfig`; ``mult`` reaches every array).

    ``arrays`` usually comes from :func:`lowbit.sw.flow.fold.fold`. Raises LowbitError on a layer the
    hardware does not implement.
    """
    model.validate()
    plans = []
    shape = tuple(model.input_shape)
    in_q = model.input_q
    ci = 0
    for i, layer in enumerate(model.layers):
        if isinstance(layer, (Dense, Conv2d)):
            rows, cols = arrays[ci]
            ci += 1
            w_q = layer.weight_q
            mode = arith.operand_mode(in_q.binary, w_q.binary)      # validate() refused the impossible one
            cfg = ArrayConfig(rows=rows, cols=cols, act_bits=1 if in_q.binary else in_q.bits,
                              weight_bits=1 if w_q.binary else w_q.bits, act_signed=bool(in_q.signed),
                              weight_signed=bool(w_q.signed), binary=mode == "binary",
                              weight_binary=mode == "binary_weights", max_k=layer.k,
                              systolic=systolic or systolic_2d, systolic_2d=systolic_2d, mult=mult)
            if isinstance(layer, Conv2d):
                plans.append(StagePlan("im2col", i, shape))
            plans.append(StagePlan("engine", i, shape, cfg, EngineParams.from_layer(layer, in_q)))
            if layer.out_q is not None:
                in_q = layer.out_q
        elif isinstance(layer, MaxPool2d):
            plans.append(StagePlan("maxpool", i, shape))
        elif not isinstance(layer, Flatten):
            raise LowbitError(f"layer {i} ({type(layer).__name__}) has no hardware implementation",
                              "supported: Dense, Conv2d, MaxPool2d, Flatten")
        shape = layer.out_shape(shape)
    return plans


class Network(wiring.Component):
    """The chained stages of :func:`plan_network`: ``i`` takes input codes one per beat (NHWC order),
    ``o`` gives the model's outputs one per beat; ``mac_cycles`` sums the engines' counters."""

    def __init__(self, model: Model, arrays, *, reweightable: bool = False, rom_init: dict | None = None,
                 rom_block: int = 256, systolic: bool = False, systolic_2d: bool = False, mult: str = "lut"):
        self.model = model
        self.reweightable, self.rom_block = reweightable, rom_block
        self.rom_init = rom_init or {}      # {"layer{i}": {"weights": [...], "params": [...]}}
        self.plans = plan_network(model, arrays, systolic, systolic_2d, mult)
        self.in_shape = _code_shape(model.input_q)
        last = [p for p in self.plans if p.kind == "engine"][-1]
        super().__init__({"i": In(stream.Signature(self.in_shape)),
                          "o": Out(stream.Signature(engine_out_shape(last.params))),
                          "mac_cycles": Out(32)})

    def elaborate(self, platform):
        m = Module()
        model = self.model
        upstream = wiring.flipped(self.i)
        q = model.input_q
        counters = []
        for s, plan in enumerate(self.plans):
            layer = model.layers[plan.layer_index]
            code = _code_shape(q)
            if plan.kind == "im2col":
                h, w, c = plan.shape_in
                seq = im2col_sequence(h, w, c, layer.weight.shape[:2], layer.stride, layer.padding)
                stage = Replay(code, h * w * c, seq, pad=q.zero_point)
            elif plan.kind == "maxpool":
                h, w, c = plan.shape_in
                seq = maxpool_sequence(h, w, c, layer.kernel, layer.stride)
                stage = Replay(code, h * w * c, seq, window=layer.kernel[0] * layer.kernel[1])
            else:
                cfg = plan.config
                m.submodules[f"pack{s}"] = packer = ChunkPacker(code, cfg.rows, layer.k, pad=0)
                wiring.connect(m, upstream, packer.i)
                upstream = packer.o
                stage = DenseEngine(cfg, plan.params, reweightable=self.reweightable, rom_block=self.rom_block,
                                    rom_init=self.rom_init.get(f"layer{plan.layer_index}"))
                counters.append(stage.mac_cycles)
                if layer.out_q is not None:
                    q = layer.out_q
            m.submodules[f"stage{s}"] = stage
            wiring.connect(m, upstream, stage.i)
            upstream = stage.o
        wiring.connect(m, upstream, wiring.flipped(self.o))
        total = counters[0]
        for c in counters[1:]:
            total = total + c
        m.d.comb += self.mac_cycles.eq(total)
        return m
