"""A model as a program for the overlay engine (:mod:`lowbit.hw.overlay`): descriptors, the weight and
parameter memory images, the memory map, and the cycles each layer takes against its roofline.

:func:`config_for` sizes an :class:`~lowbit.hw.overlay.OverlayConfig` for a model (the formats its layers
use, widths its integers need); :func:`compile_program` lays the model out in that overlay's memories and
refuses, with the numbers, what does not fit. :func:`layer_cycles` is the analytic cycle model; the
tests hold it equal to simulation.

Memory images (the gateware reads them as documented in :mod:`lowbit.hw.overlay`):

* weights: for each compute layer, for each group ``g`` of ``C`` output channels and each step ``c`` (a
  K-chunk; for a window, a word of a tap's pixel: kernel row, kernel column, word, each tap's channels
  padded to whole words), one array word: weight ``w[c*R + r, g*C + j]`` of that padded K at bit
  ``(r*C + j) * b`` (``b`` the layer's weight bits; a ±1 weight is one bit, ``1 = +1``), positions past K
  or N zero, split into ``ratio`` port words, low bits first;
* parameters: one record per output channel, :func:`lowbit.hw.overlay.param_layout` (folded bias, then
  the multiplier and the shift, or the thresholds), encoded with that very layout's ``const``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from ...hw.overlay import MODES, OverlayConfig, descriptor_layout, kept_fields, param_layout
from ...hw.spram import SPRAM_BITS, SPRAM_WORDS
from ..errors import LowbitError
from ..ir import arith
from ..ir.model import Conv2d, Dense, Flatten, MaxPool2d, Model, Requant, Thresholds

__all__ = ["parse_array", "LayerPlan", "OverlayProgram", "OverlayPlan", "config_for", "compile_program", "layer_cycles",
           "layer_schedule",
           "inference_cycles", "array_latency", "plan_overlay", "overlay_estimate", "overlay_report", "LoadImage",
           "load_image", "input_buffer_for"]



@dataclass(frozen=True)
class LayerPlan:
    """One layer on the overlay (a Dense or Conv2d layer, or a MaxPool pass): its geometry, memory
    placement and the cycle figures."""

    index: int           # position in model.layers
    k: int
    n: int
    kc: int              # steps per group (K-chunks; taps x words a pixel for Conv2d)
    groups: int
    ratio: int
    weight_bits: int
    w_base: int
    w_words: int
    p_base: int
    macs: int            # multiply-accumulates of the layer (K * N per output position)
    cycles: int          # predicted by layer_cycles
    roof_cycles: float   # max(compute roof, weight-bandwidth roof)
    kind: str = "dense"
    positions: int = 1   # output positions (Conv2d, MaxPool)
    in_words: int = 0    # activation words of its input and its output
    out_words: int = 0
    compute_roof: float = 0.0    # MACs over PEs
    weight_roof: float = 0.0     # weight bits over the weight port's width
    wide: bool = False           # requantized a result slot a cycle (OverlayConfig.wide)

    @property
    def roofline_fraction(self) -> float:
        return self.roof_cycles / self.cycles

    @property
    def output_roof(self) -> int:
        """Cycles of the requantizer, one output a cycle, or one position a cycle when ``wide`` (not part
        of ``roof_cycles``, which is the array's and the weight port's; a layer of few inputs on many PEs is
        bound by it)."""
        return self.positions if self.wide else self.n * self.positions

    @property
    def bound(self) -> str:
        """The largest of the layer's roofs: ``"compute"``, ``"weights"``, ``"outputs"`` (the
        requantizer), or ``"reads"`` for a MaxPool pass (one activation word a cycle)."""
        if self.kind == "maxpool2d":
            return "reads"
        roofs = {"compute": self.compute_roof, "weights": self.weight_roof, "outputs": self.output_roof}
        return max(roofs, key=roofs.get)


@dataclass(frozen=True)
class OverlayProgram:
    config: OverlayConfig
    descriptors: list
    weights: list
    params: list
    layers: list         # LayerPlan per layer of the program
    input_count: int
    output_count: int

    @property
    def arrays(self) -> list:
        """The array of each Dense and Conv2d layer (the identity's per-layer record): the one array."""
        return [(self.config.rows, self.config.cols) for p in self.layers if p.kind != "maxpool2d"]

    def memory_map(self) -> dict:
        cfg = self.config
        return {"weights": {"words": len(self.weights), "depth": cfg.weight_depth, "word_bits": cfg.port_bits},
                "params": {"records": len(self.params), "depth": cfg.param_depth, "record_bits": cfg.param_bits},
                "activations": {"words_per_bank": max(max(p.in_words, p.out_words) for p in self.layers),
                                "depth": cfg.act_depth, "word_bits": cfg.rows * cfg.act_bits, "banks": 2},
                "inputs": {"words": self.layers[0].in_words if cfg.in_depth else 0, "depth": cfg.in_depth,
                           "word_bits": cfg.rows * cfg.act_bits, "halves": 2 if cfg.in_depth else 0},
                "program": {"layers": len(self.descriptors), "depth": cfg.max_layers}}


@dataclass(frozen=True)
class _Step:
    """One layer of the program as the address generator walks it: an ``h x w`` input of ``cin``
    channels a pixel (a flat vector is ``1 x 1 x K``), a ``kh x kw`` window with stride and padding,
    an ``oh x ow`` output of ``n`` channels. A Dense layer after a Conv2d or MaxPool reads the
    pixels it flattens as one window the size of the image."""

    index: int
    layer: object
    in_q: object
    h: int
    w: int
    cin: int
    kh: int = 1
    kw: int = 1
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0
    raw: int = 0         # codes of the model's input when this layer 0 reads patches (OverlayConfig.patch)

    @property
    def pool(self) -> bool:
        return isinstance(self.layer, MaxPool2d)

    @property
    def out_hw(self) -> tuple:
        return arith.conv2d_out_shape(self.h, self.w, (self.kh, self.kw), (self.sh, self.sw), (self.ph, self.pw))

    @property
    def n(self) -> int:
        return self.cin if self.pool else self.layer.n

    @property
    def spatial(self) -> bool:
        return self.pool or (self.h, self.w, self.kh, self.kw) != (1, 1, 1, 1)

    def words(self, rows: int) -> int:
        """Activation words a pixel of the input (its channels in words of ``rows`` codes)."""
        return math.ceil(self.cin / rows)

    def steps(self, rows: int) -> int:
        """Steps a window takes: a word of each tap's pixel (a pool's groups are the pixel's words)."""
        return self.kh * self.kw * (1 if self.pool else self.words(rows))

    def act_words(self, rows: int) -> tuple:
        """Activation words of the input and of the output (a word holds one pixel's channels, or
        ``rows`` codes of a vector)."""
        oh, ow = self.out_hw
        return self.h * self.w * self.words(rows), oh * ow * math.ceil(self.n / rows)

    def padded_words(self, rows: int) -> int:
        """Activation words the padded input spans: what the window address registers must reach."""
        return (self.h + 2 * self.ph) * (self.w + 2 * self.pw) * self.words(rows)


def _steps(model: Model) -> list:
    """The program's layers (:class:`_Step`): every Dense, Conv2d and MaxPool2d layer; LowbitError for
    layers the overlay does not run."""
    out, in_q = [], model.input_q
    shape = tuple(model.input_shape)
    # The input is stored a pixel a word when a Conv2d or MaxPool reads it first, else as a vector.
    first = next((layer for layer in model.layers if not isinstance(layer, Flatten)), None)
    pixels = isinstance(first, (Conv2d, MaxPool2d)) and len(shape) == 3
    pix_shape = shape
    for i, layer in enumerate(model.layers):
        if isinstance(layer, (Conv2d, MaxPool2d)):
            h, w, cin = shape
            if isinstance(layer, Conv2d):
                (kh, kw), (sh, sw), (ph, pw) = layer.weight.shape[:2], layer.stride, layer.padding
            else:
                (kh, kw), (ph, pw) = layer.kernel, (0, 0)
                sh, sw = layer.stride or layer.kernel
            out.append(_Step(i, layer, in_q, h, w, cin, kh, kw, sh, sw, ph, pw))
            pixels = True
        elif isinstance(layer, Dense):
            if pixels:                                 # the flattened pixels: one whole-image window
                h, w, cin = pix_shape
                out.append(_Step(i, layer, in_q, h, w, cin, h, w))
            else:
                out.append(_Step(i, layer, in_q, 1, 1, layer.k))
            pixels = False
        elif not isinstance(layer, Flatten):
            raise LowbitError(f"layer {i} ({type(layer).__name__}) has no overlay implementation",
                              "supported: Dense, Conv2d, MaxPool2d, Flatten")
        shape = layer.out_shape(shape)
        if not isinstance(layer, Flatten):
            pix_shape = shape
        if isinstance(layer, (Dense, Conv2d)):
            in_q = layer.out_q or in_q
    if out and out[-1].pool:
        raise LowbitError(f"layer {out[-1].index} (maxpool2d) is the model's last: the overlay sends the "
                          "outputs of a Dense or Conv2d layer", "end the model with a Dense or Conv2d layer")
    return out


def patch_geometry(model: Model, rows: int) -> tuple:
    """``(in_w, cin, kh, kw)`` of the model's first layer when the overlay's loader can store its input as
    one patch word per output position (:attr:`OverlayConfig.patch`: a Conv2d reading the input first, stride
    1, no padding, a window of more than one tap whose ``kh * kw * cin`` codes fit ``rows`` lanes), else ()."""
    steps = _steps(model)
    return _patch_of(steps[0], rows) if steps else ()


def _patch_of(st: _Step, rows: int) -> tuple:
    """:func:`patch_geometry` of the program's first layer ``st``."""
    if st.pool or not isinstance(st.layer, Conv2d) or (st.sh, st.sw, st.ph, st.pw) != (1, 1, 0, 0):
        return ()
    if st.kh * st.kw == 1 or st.kh * st.kw * st.cin > rows or st.out_hw == (1, 1):
        return ()
    return (st.w, st.cin, st.kh, st.kw)


def _patched(st: _Step) -> _Step:
    """Layer 0 reading patch words: a ``1 x 1`` convolution over its ``oh x ow`` output positions of
    ``kh * kw * cin`` channels, in the weights' K order (kernel row, column, channel)."""
    oh, ow = st.out_hw
    return dataclasses.replace(st, h=oh, w=ow, cin=st.kh * st.kw * st.cin, kh=1, kw=1, raw=st.h * st.w * st.cin)


def wide_eligible(st: _Step, rows: int, cols: int, last: bool) -> bool:
    """Whether layer 0 ``st`` can use the wide back end (:attr:`OverlayConfig.wide`): a multi-threshold
    Conv2d, not the last layer, whose channels fit one result slot and one activation word, and which the
    requantizer would bind (fewer steps a position than channels)."""
    return (st.spatial and not st.pool and isinstance(st.layer, Conv2d) and isinstance(st.layer.requant, Thresholds)
            and not last and st.n <= min(rows, cols) and st.steps(rows) < st.n)


def _act_format(q):
    return (1, True, True) if q.binary else (q.bits, bool(q.signed), False)


def _weight_format(q):
    return (1, True) if q.binary else (q.bits, False)


def _weight_values(layer) -> np.ndarray:
    return np.asarray(layer.matrix(), dtype=np.int64)


def _offset(in_q) -> int:
    """What the overlay subtracts from an input code when it decodes it: ``2**(b-1)`` for unsigned
    ``b``-bit codes (so the array multiplies signed ``b``-bit values), else 0."""
    return 0 if in_q.binary or in_q.signed else 1 << (in_q.bits - 1)


def _dead(layer) -> np.ndarray:
    """Channels of a requantized layer whose weights are all zero: their output is one constant (PTQ
    gives them a bias of up to 2**31, which no accumulator of the overlay holds)."""
    if not isinstance(layer.requant, Requant):
        return np.zeros(layer.n, dtype=bool)
    return ~np.any(_weight_values(layer) != 0, axis=0)


def _folded_bias(layer, in_q) -> np.ndarray:
    """The bias the overlay adds: the input zero point folded in, and the decode offset put back:
    ``sum_k (x - zp) w + b = sum_k (x - off) w + b + (off - zp) sum_k w``. A dead channel
    (:func:`_dead`) gets ``y - zero_point`` for its constant output ``y`` instead, with multiplier 1 and
    shift 0 (:func:`_param_records`), which gives the same ``y``."""
    w = _weight_values(layer)
    bias = np.asarray(layer.bias, dtype=np.int64)
    if not in_q.binary:
        bias = bias + (_offset(in_q) - int(in_q.zero_point)) * w.sum(axis=0)
    dead = _dead(layer)
    if dead.any():
        rq = layer.requant
        constant = rq.apply(np.zeros((1, layer.n), dtype=np.int64), np.asarray(layer.bias, dtype=np.int64))[0]
        bias = np.where(dead, constant - int(rq.zero_point), bias)
    return bias


def config_for(model: Model, rows: int, cols: int, also=(), **fields) -> OverlayConfig:
    """An overlay of ``rows x cols`` that runs ``model``: its activation and weight formats, widths and
    memory sizes just large enough, with an input memory (``in_depth``: the next input loads while the
    layers run; ``fields`` override any :class:`OverlayConfig` field, ``in_depth=0`` turns it off). With ``also``
    (more models), large enough for each of them too, so they can be loaded into the built overlay."""
    if also:
        configs = [config_for(m, rows, cols, **fields) for m in (model, *also)]
        merged = {}
        for name in ("act_formats", "weight_formats"):
            merged[name] = tuple(sorted({f for c in configs for f in getattr(c, name)}))
        merged["act_bits"] = max(b for b, _, _ in merged["act_formats"])
        merged["weight_bits"] = max(b for b, _ in merged["weight_formats"])
        for name in ("acc_bits", "mult_bits", "max_thresholds", "act_depth", "max_layers", "weight_depth",
                     "param_depth", "conv", "in_depth"):
            merged[name] = max(getattr(c, name) for c in configs)
        return OverlayConfig(**{**configs[0].__dict__, **merged, **fields})
    steps = _steps(model)
    extra = {}
    if not fields.get("loadable", False):
        # a fixed overlay's layer 0: patch words (one step a position), a result slot a cycle in the back end
        patch = fields.get("patch", _patch_of(steps[0], rows) if steps else ())
        if patch:
            steps[0] = _patched(steps[0])
        extra = {"patch": patch, "wide": bool(steps) and wide_eligible(steps[0], rows, cols, len(steps) == 1)}
    layers = [(st.index, st.layer, st.in_q) for st in steps if not st.pool]
    act_formats = sorted({_act_format(st.in_q) for st in steps})
    weight_formats = sorted({_weight_format(layer.weight_q) for _, layer, _ in layers})
    for _, layer, _ in layers:
        if not layer.weight_q.binary and not layer.weight_q.signed:
            raise LowbitError("the overlay needs signed (or ±1) weights", "quantize weights symmetrically")
    acc_bits = max(_total_bits(layer, q) for _, layer, q in layers)
    mults = [int(np.max(layer.requant.mult)) for _, layer, _ in layers if isinstance(layer.requant, Requant)]
    thresholds = [layer.requant.thresholds.shape[1] for _, layer, _ in layers
                  if isinstance(layer.requant, Thresholds)]
    words = [n for st in steps for n in st.act_words(rows)]
    # the window registers span two banks, the geometry fields (and a window's steps) a bank: a heavily
    # padded small image
    words += [-(-st.padded_words(rows) // 2) for st in steps]
    words += [max(st.kh, st.kw, st.sh, st.sw, st.steps(rows)) for st in steps if st.spatial]
    base = dict(rows=rows, cols=cols, act_bits=max(b for b, _, _ in act_formats),
                weight_bits=max(b for b, _ in weight_formats), act_formats=tuple(act_formats),
                weight_formats=tuple(weight_formats), acc_bits=max(8, acc_bits),
                mult_bits=max([16] + [m.bit_length() for m in mults]),
                max_thresholds=max([0] + thresholds), act_depth=max(words),
                max_layers=max(1, len(steps)), conv=any(st.spatial for st in steps),
                in_depth=steps[0].act_words(rows)[0], **extra)
    probe = OverlayConfig(**{**base, **fields})
    if probe.loadable:          # any input a bank holds: models loaded later may have larger inputs
        base["in_depth"] = probe.act_depth
    words = sum(_layer_words(probe, st) for st in steps if not st.pool)
    base.update(weight_depth=max(1, words), param_depth=max(1, sum(layer.n for _, layer, _ in layers)))
    return OverlayConfig(**{**base, **fields})


def _total_bits(layer, in_q) -> int:
    """Signed width of the accumulators and of ``acc + bias`` for ``layer``, over every input."""
    w = _weight_values(layer)
    xlo, xhi = (-1, 1) if in_q.binary else arith.int_range(in_q.bits, in_q.signed)
    xlo, xhi = xlo - _offset(in_q), xhi - _offset(in_q)        # the decoded values the array multiplies
    pos, neg = np.clip(w, 0, None).sum(axis=0), np.clip(w, None, 0).sum(axis=0)
    lo = xlo * pos + xhi * neg
    hi = xhi * pos + xlo * neg
    bias = _folded_bias(layer, in_q)
    lo_t, hi_t = int(np.min(lo + bias)), int(np.max(hi + bias))
    return arith.signed_bits_for(min(lo_t, int(lo.min()), int(bias.min()), 0),
                                 max(hi_t, int(hi.max()), int(bias.max()), 0))


def _layer_words(cfg: OverlayConfig, st: _Step) -> int:
    """Weight port words of a Dense or Conv2d layer: each window tap's channels in whole chunks."""
    bits = 1 if st.layer.weight_q.binary else st.layer.weight_q.bits
    return math.ceil(st.n / cfg.cols) * st.steps(cfg.rows) * cfg.ratio(bits)


def array_latency(cfg: OverlayConfig) -> int:
    """Enabled cycles from an operand pair entering the array to its column sums (:class:`MacArray`)."""
    return cfg.array_config.latency


def layer_cycles(cfg: OverlayConfig, kc: int, groups: int, ratio: int, n_last: int, positions: int = 1,
                 pool: bool = False, lead: int = 0, wide: bool = False) -> int:
    """Cycles one layer occupies the overlay (output never stalled): from its first step to its last
    output, plus :data:`LAYER_OVERHEAD` (noticing the layer is done and latching the next descriptor).
    The next descriptor is read while the layer runs (:func:`fetch_cycles` from the cycle after this one
    was latched; ``lead`` cycles of input load came before the first step), so only a layer shorter than
    that waits for it. The schedule, cycle by cycle, of :class:`~lowbit.hw.overlay.OverlayEngine`
    (:func:`layer_schedule`):

    * steps issue one per cycle, ``kc * ratio`` per group; a group's last step reaches the
      accumulators ``1 + array latency`` cycles after it issues and fills result slot ``g % 2``,
      stalling the array until that slot is free;
    * the requantizer takes a full slot the cycle after it fills, one channel per cycle, after the
      previous group's channels; a channel's output leaves ``REQUANT_STAGES`` cycles after it is taken;
      the wide back end (``wide``) takes the whole slot in a cycle and writes its word ``WIDE_STAGES`` later;
    * a Conv2d layer runs the ``groups`` of every output position in turn, as one layer of
      ``positions * groups`` groups;
    * a MaxPool pass reads one word a cycle and writes each window's maximum the cycle after its last
      word arrives.
    """
    return layer_schedule(cfg, kc, groups, ratio, n_last, positions, pool, lead, wide=wide)["cycles"]


def layer_schedule(cfg: OverlayConfig, kc: int, groups: int, ratio: int, n_last: int, positions: int = 1,
                   pool: bool = False, lead: int = 0, entry: dict | None = None, wide: bool = False) -> dict:
    """:func:`layer_cycles` in detail, cycles counted from the layer's first step: ``cycles`` (the next
    layer's first step once this one's outputs are out), ``early`` (the next inference's layer 0 may
    start before that, as soon as this last layer's steps are issued: it reads the input memory, and
    the requantizer finishes this layer first), ``final`` (the cycle of the last step), ``last_output``,
    and ``exit``: what a layer starting at ``early`` finds (``entry`` of it). ``entry``, when this layer
    starts while the one before drains: ``back_free`` (the first cycle the requantizer may take a slot),
    ``slots`` (the cycles the slots its groups 0 and 1 fill become free) and ``freezes`` (``(cycle,
    length)``: the array stopped for the previous layer's last groups, waiting for a slot)."""
    entry = entry or {"back_free": 0, "slots": (0, 0), "freezes": ()}
    ready = fetch_cycles(cfg) - lead        # the next descriptor read, counted from the first step
    if pool:
        reads = positions * groups * kc     # the last window's maximum is written the cycle after its last read
        cycles = max(reads + 1, ready) + LAYER_OVERHEAD
        return {"cycles": cycles, "early": cycles, "final": reads - 1, "last_output": reads, "exit": None}
    step_cycles = kc * ratio
    to_acc = 1 + array_latency(cfg)
    slot_free = list(entry["slots"])
    take_free = entry["back_free"]
    freezes = list(entry["freezes"])        # (real cycle, length): the array stopped
    t = sum(n for _, n in freezes)          # they come before this layer's first group arrives
    start = ncols = 0
    count = groups * positions
    for g in range(count):
        last_step = t + step_cycles - 1
        arrive = last_step + to_acc         # real cycles: every earlier stop is in `t`
        filled = max(arrive, slot_free[g % 2])
        stall = filled - arrive
        if stall:
            freezes.append((arrive, stall))
        start = max(filled + 1, take_free)
        ncols = 1 if wide else n_last if g % groups == groups - 1 else cfg.cols
        take_free = slot_free[g % 2] = start + ncols
        t = last_step + 1 + stall
    last_output = start + ncols - 1 + (WIDE_STAGES if wide else REQUANT_STAGES)
    final = count * step_cycles - 1         # the last issue: every step, and the stops before it
    for at, n in freezes:
        if at <= final:
            final += n
    early = max(final + 1, ready) + LAYER_OVERHEAD
    # into a layer starting at `early`: the requantizer free the cycle after it sees the last output,
    # the slots in the order that layer's groups use them, the stops still running
    carried = tuple((max(at, early) - early, at + n - max(at, early)) for at, n in freezes if at + n > early)
    exit_ = {"back_free": last_output + 2 - early, "freezes": carried,
             "slots": (slot_free[count % 2] - early, slot_free[(count + 1) % 2] - early)}
    return {"cycles": max(last_output + 1, ready) + LAYER_OVERHEAD, "early": early, "final": final,
            "last_output": last_output, "exit": exit_}


def fetch_cycles(cfg: OverlayConfig) -> int:
    """Cycles from a layer being latched to its successor's descriptor being ready: one read a program
    word (one whole-descriptor word, or ``program_word_count`` 32-bit words in a loadable overlay), each
    arriving the cycle after its read."""
    return cfg.program_word_count


#: Cycles from a channel leaving its result slot to its output (parameter read, bias, product, round,
#: saturate, zero point and clamp).
REQUANT_STAGES = 6
#: Cycles from a wide layer's slot being taken to its word being written (the codes' register).
WIDE_STAGES = 1
#: Per layer: the cycle that sees its last output and the one that latches the next descriptor (read
#: while the layer ran, :func:`fetch_cycles`).
LAYER_OVERHEAD = 2


def inference_cycles(program: OverlayProgram) -> int:
    """Cycles per inference, back to back, inputs one code per cycle: each layer (:func:`layer_cycles`)
    after loading the input (which starts while the last layer drains: :func:`_load_while_draining`), or
    with an input memory (``in_depth``), while the next input loads: the layers, or the input's codes if
    there are more of those."""
    layers = sum(p.cycles for p in program.layers)
    return max(layers, program.input_count) if program.config.in_depth else program.input_count + layers


def compile_program(model: Model, cfg: OverlayConfig) -> OverlayProgram:
    """``model`` laid out in ``cfg``'s memories; LowbitError naming what does not fit, with the numbers."""
    model.validate()
    steps = _steps(model)
    R, C, P = cfg.rows, cfg.cols, cfg.port_bits
    if len(steps) > cfg.max_layers:
        raise LowbitError(f"the model has {len(steps)} layers for the overlay, its program holds {cfg.max_layers}",
                          "build an overlay with more layers")
    spatial = [st for st in steps if st.spatial]
    if spatial and not cfg.conv:
        st = spatial[0]
        raise LowbitError(f"layer {st.index} ({st.layer.kind}): this overlay was built for Dense layers on "
                          "vectors only (no address generator for windows)", "build the overlay for this model")
    if cfg.patch:
        if _patch_of(steps[0], R) != cfg.patch:
            raise LowbitError(f"this overlay's loader stores patches of a first Conv2d of (width, channels, kernel) "
                              f"{cfg.patch}; the model's first layer is not one", "build the overlay for this model")
        steps[0] = _patched(steps[0])
    if cfg.wide and not wide_eligible(steps[0], R, C, len(steps) == 1):
        raise LowbitError("this overlay's back end requantizes a first multi-threshold Conv2d of at most "
                          f"{min(R, C)} channels a slot a cycle; the model's first layer is not one",
                          "build the overlay for this model")
    layout = descriptor_layout(cfg)
    descriptors, weights, params, plans, wheres = [], [], [], [], []
    for li, st in enumerate(steps):
        layer, in_q = st.layer, st.in_q
        where = f"layer {st.index} ({layer.kind}" + ("" if st.pool else f" {layer.k}x{layer.n}") + ")"
        afmt = _act_format(in_q)
        if afmt not in cfg.act_formats:
            raise LowbitError(f"{where}: input format {afmt} (bits, signed, binary) is not one the overlay was "
                              f"built for: {list(cfg.act_formats)}", "build the overlay for this model")
        cw, kc = st.words(R), st.steps(R)
        oh, ow = st.out_hw
        for what, need in zip(("input", "output"), st.act_words(R)):
            if need > cfg.act_depth:
                raise LowbitError(f"{where}: its {what} needs {need} activation words of {R} codes, a bank holds "
                                  f"{cfg.act_depth}", "build the overlay with a deeper activation memory")
        if li == 0 and cfg.in_depth and st.act_words(R)[0] > cfg.in_depth:
            raise LowbitError(f"{where}: its input needs {st.act_words(R)[0]} words of {R} codes, the overlay's input "
                              f"memory holds {cfg.in_depth}", "build the overlay for this model")
        padded = st.padded_words(R)
        if padded > 2 * cfg.act_depth:          # what the address registers span (hw/overlay.py _addr_bits)
            raise LowbitError(f"{where}: its padded input spans {padded} activation words, the overlay's window "
                              f"addresses {2 * cfg.act_depth}", "use less padding, or a deeper activation memory")
        codes_in = st.raw or st.h * st.w * st.cin
        lead = codes_in if li == 0 and not cfg.in_depth else 0
        wide = cfg.wide and li == 0
        desc = {"k": codes_in, "k_last": st.cin - (cw - 1) * R, "act_fmt": cfg.act_formats.index(afmt),
                "w_fmt": 0, "ratio": 1, "w_base": 0, "p_base": 0, "mode": 0, "zero_point": 0, "lo": 0, "hi": 0,
                "n_thr": 0, "out_lo": 0, "out_step": 1, "out_binary": 0, "last": int(li == len(steps) - 1),
                "n": st.n, "n_last": st.n - (math.ceil(st.n / C) - 1) * C}
        if cfg.wide:
            desc["wide"] = int(wide)
        if cfg.conv:
            desc.update(pool=int(st.pool), cin=st.cin, in_h=st.h, in_w=st.w, kh=st.kh, kw=st.kw, oh=oh, ow=ow,
                        sh=st.sh, sw=st.sw, ph=st.ph, pw=st.pw, col_adv=st.sw * cw, row_adv=st.sh * st.w * cw,
                        origin=-(st.ph * st.w + st.pw) * cw, wb_n=st.n, pad=0)
        if st.pool:
            # groups are a pixel's words, steps the window's taps, each a word apart (cc_n = 1)
            desc.update(kc=kc, groups=cw, cc_n=1, step_kx=cw, step_ky=(st.w - st.kw + 1) * cw,
                        grp_step=1, outs=oh * ow * cw, k_last=R)
            cyc = layer_cycles(cfg, kc, cw, 1, 0, oh * ow, pool=True, lead=lead)
            plans.append(LayerPlan(st.index, kc * st.cin, st.cin, kc, cw, 1, 0, 0, 0, 0, 0, cyc, oh * ow * cw * kc,
                                   "maxpool2d", oh * ow, *st.act_words(R)))
            descriptors.append(desc)
            wheres.append(where)
            continue
        wfmt = _weight_format(layer.weight_q)
        if wfmt not in cfg.weight_formats:
            raise LowbitError(f"{where}: weight format {wfmt} (bits, binary) is not one the overlay was built "
                              f"for: {list(cfg.weight_formats)}", "build the overlay for this model")
        if not layer.weight_q.binary and not layer.weight_q.signed:
            raise LowbitError(f"{where}: the overlay needs signed (or ±1) weights", "quantize weights symmetrically")
        k, n = layer.k, layer.n
        taps = st.kh * st.kw
        groups = math.ceil(n / C)
        total_bits = _total_bits(layer, in_q)
        if total_bits > cfg.acc_bits:
            raise LowbitError(f"{where}: acc + bias needs {total_bits} bits, the overlay's accumulators have "
                              f"{cfg.acc_bits}", "build the overlay with wider accumulators")
        bits = wfmt[0]
        ratio = cfg.ratio(bits)
        w = _weight_values(layer)
        codes = (w > 0).astype(np.int64) if layer.weight_q.binary else (w & ((1 << bits) - 1))
        # each tap's channels padded to whole words: row (tap, word, lane) of the array's K
        lanes = np.zeros((taps, cw * R, n), dtype=np.int64)
        lanes[:, :st.cin] = codes.reshape(taps, st.cin, n)
        w_base = len(weights)
        weights += _array_words(lanes.reshape(taps * cw * R, n), R, C, bits, kc, groups, ratio, P)
        p_base = len(params)
        params += _param_records(cfg, layer, in_q, where)
        rq = layer.requant
        mode = "requant" if isinstance(rq, Requant) else "thresholds" if isinstance(rq, Thresholds) else "logits"
        desc.update(kc=kc, groups=groups, w_fmt=cfg.weight_formats.index(wfmt), ratio=ratio, w_base=w_base,
                    p_base=p_base, mode=MODES[mode], out_binary=int(layer.out_q is not None and layer.out_q.binary))
        if cfg.conv:
            # a wide layer's outputs are counted in words, one a position
            desc.update(cc_n=cw, step_kx=1, step_ky=(st.w - st.kw) * cw + 1, grp_step=0,
                        outs=oh * ow * (1 if wide else n),
                        pad=0 if in_q.binary else int(in_q.zero_point) - _offset(in_q))
        if mode == "requant":
            desc.update(zero_point=int(rq.zero_point), lo=int(max(rq.lo, rq.zero_point) if rq.relu else rq.lo),
                        hi=int(rq.hi))
        elif mode == "thresholds":
            desc.update(n_thr=int(rq.thresholds.shape[1]), out_lo=int(rq.out_lo), out_step=int(rq.out_step))
        descriptors.append(desc)
        wheres.append(where)
        positions = oh * ow
        compute_roof, weight_roof = positions * k * n / (R * C), k * n * bits / P
        cyc = layer_cycles(cfg, kc, groups, ratio, n - (groups - 1) * C, positions, lead=lead, wide=wide)
        plans.append(LayerPlan(st.index, k, n, kc, groups, ratio, bits, w_base, len(weights) - w_base, p_base,
                               positions * k * n, cyc, max(compute_roof, weight_roof), layer.kind, positions,
                               *st.act_words(R), compute_roof, weight_roof, wide))
    if len(weights) > cfg.weight_depth:
        raise LowbitError(f"the weights need {len(weights)} words of {P} bits ({len(weights) * P // 8} bytes), the "
                          f"overlay's weight memory holds {cfg.weight_depth} ({cfg.weight_depth * P // 8} bytes)",
                          "use fewer or narrower weights, or a device with more memory")
    if len(params) > cfg.param_depth:
        raise LowbitError(f"the parameters need {len(params)} channel records, the overlay holds {cfg.param_depth}",
                          "use fewer output channels, or build the overlay with a deeper parameter memory")
    for desc, where in zip(descriptors, wheres):
        _checked(layout, desc, where)
    if cfg.in_depth and not steps[0].pool:
        plans = _across_inferences(cfg, plans)
    elif not cfg.in_depth:
        plans = _load_while_draining(cfg, plans, int(np.prod(model.input_shape)))
    return OverlayProgram(cfg, descriptors, weights, params, plans, int(np.prod(model.input_shape)),
                          int(np.prod(model.output_shape)))


def _plan_schedule(cfg: OverlayConfig, p: LayerPlan, lead: int = 0, entry: dict | None = None) -> dict:
    """:func:`layer_schedule` of a compiled layer ``p`` (a Dense or Conv2d layer, or a MaxPool pass)."""
    pool = p.kind == "maxpool2d"
    return layer_schedule(cfg, p.kc, p.groups, p.ratio, 0 if pool else p.n - (p.groups - 1) * cfg.cols,
                          p.positions, pool=pool, lead=lead, entry=entry, wide=p.wide)


def _across_inferences(cfg: OverlayConfig, plans: list) -> list:
    """With an input memory the next inference's layer 0 (not a pool) starts as soon as the last layer's
    steps are issued (:func:`layer_schedule` ``early``), while its outputs drain: the last layer's cycles
    end there, and layer 0's count what the drain leaves it (back to back: the last layer's exit is layer
    0's entry; a one-layer model is its own predecessor, iterated to its steady state)."""
    first, last = plans[0], plans[-1]
    if len(plans) == 1:
        entry = None
        for _ in range(16):
            entry, previous = _plan_schedule(cfg, first, entry=entry)["exit"], entry
            if entry == previous:
                break
        return [dataclasses.replace(first, cycles=_plan_schedule(cfg, first, entry=entry)["early"])]
    tail = _plan_schedule(cfg, last)
    layer0 = _plan_schedule(cfg, first, entry=tail["exit"])
    return [dataclasses.replace(first, cycles=layer0["cycles"]), *plans[1:-1],
            dataclasses.replace(last, cycles=tail["early"])]


def _load_while_draining(cfg: OverlayConfig, plans: list, codes: int) -> list:
    """Without an input memory the next inference's ``codes`` input codes load into bank 0 from the cycle
    the last layer's steps are issued and its successor's descriptor is read (:func:`layer_schedule`
    ``early``, less the two cycles of noticing and latching), while its outputs drain, until it is latched
    (``cycles``, less the same two): layer 0 then runs at once, or loads the rest first
    (hw/overlay.py ``loading_early``; not after a wide last layer, which writes back). Back to back, the
    last layer's cycles are what the load does not hide, and layer 0's ``lead`` (input load before its
    first step) is the rest of the input (a one-layer model is its own predecessor, iterated to its
    steady state); :func:`inference_cycles` still adds ``codes`` to the layers."""
    first, last = plans[0], plans[-1]
    if last.wide:
        return plans
    lead = codes
    for _ in range(16):
        tail = _plan_schedule(cfg, last, lead if len(plans) == 1 else 0)
        during = tail["cycles"] + 1 - tail["early"]         # codes taken while the last layer drains
        lead, previous = max(0, codes - during), lead
        if lead == previous:
            break
    last_cycles = max(tail["cycles"] - codes, tail["early"] - 1)
    if len(plans) == 1:
        return [dataclasses.replace(first, cycles=last_cycles)]
    return [dataclasses.replace(first, cycles=_plan_schedule(cfg, first, lead)["cycles"]), *plans[1:-1],
            dataclasses.replace(last, cycles=last_cycles)]


def _checked(layout, desc: dict, where: str) -> None:
    """LowbitError naming the first field of ``desc`` that does not fit its width in ``layout``."""
    for name, value in desc.items():
        shape = layout[name].shape
        lo, hi = arith.int_range(shape.width, shape.signed)
        if not lo <= value <= hi:
            raise LowbitError(f"{where}: its {name} ({value}) does not fit the overlay's {shape.width}-bit descriptor field",
                              "build the overlay for this model")


def _array_words(codes, R: int, C: int, bits: int, kc: int, groups: int, ratio: int, P: int) -> list[int]:
    """The weight memory words of one layer (module docstring): for each group, for each chunk, the
    ``R x C`` codes at ``bits`` each, lane ``(r, j)`` at bit ``(r*C + j) * bits``, zero past K and N, split
    into ``ratio`` words of ``P`` bits, low bits first."""
    k, n = codes.shape
    padded = np.zeros((kc * R, groups * C), dtype=np.uint8)
    padded[:k, :n] = codes
    # (group, chunk, r, j): one array word per (group, chunk), lanes in (r, j) order.
    lanes = padded.reshape(kc, R, groups, C).transpose(2, 0, 1, 3).reshape(groups * kc, R * C)
    bitplanes = (lanes[:, :, None] >> np.arange(bits, dtype=np.uint8)) & 1
    flat = bitplanes.reshape(groups * kc, R * C * bits)
    flat = np.pad(flat, ((0, 0), (0, ratio * P - flat.shape[1])))
    packed = np.packbits(flat.reshape(groups * kc * ratio, P), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _param_records(cfg: OverlayConfig, layer, in_q, where) -> list[int]:
    n = layer.n
    bias = _folded_bias(layer, in_q)
    if np.any(np.abs(bias) >= 1 << (cfg.acc_bits - 1)):
        raise LowbitError(f"{where}: a folded bias does not fit {cfg.acc_bits} bits",
                          "build the overlay with wider accumulators")
    rq = layer.requant
    layout = param_layout(cfg)
    dead = _dead(layer)
    records = []
    lo_t = -(1 << (cfg.acc_bits - 1))
    hi_t = (1 << (cfg.acc_bits - 1))
    for ch in range(n):
        if isinstance(rq, Requant):
            mult = 1 if dead[ch] else int(np.broadcast_to(rq.mult, (n,))[ch])
            shift = 0 if dead[ch] else int(np.broadcast_to(rq.shift, (n,))[ch])
            if mult >= 1 << cfg.mult_bits or mult < 0:
                raise LowbitError(f"{where}: multiplier {mult} needs more than the overlay's {cfg.mult_bits} bits",
                                  "build the overlay for this model")
            fields = {"requant": {"bias": int(bias[ch]), "mult": mult, "shift": shift}}
        elif isinstance(rq, Thresholds):
            t = np.broadcast_to(rq.thresholds, (n, rq.thresholds.shape[1]))[ch]
            if len(t) > cfg.max_thresholds:
                raise LowbitError(f"{where}: {len(t)} thresholds per channel, the overlay compares {cfg.max_thresholds}",
                                  "build the overlay for this model")
            # acc + bias lies in [lo_t, hi_t): a threshold outside is reached always or never, as its clamp.
            t = [min(max(int(v), lo_t), hi_t) for v in t]
            fields = {"thresholds": {"bias": int(bias[ch]), "t": t + [0] * (cfg.max_thresholds - len(t))}}
        else:
            fields = {"requant": {"bias": int(bias[ch])}}
        rec = layout.const(fields).as_value().value
        records.append(rec)
    return records


# -- planning: which array fits the device, and what it costs ----------------------------------------

#: Logic cells a loadable overlay adds (the link's LOAD/COMMIT handler, CRC-32 check and identity
#: memory; the load port; descriptor fields no longer folded by synthesis): measured on an 8x2 4-bit
#: overlay, Yosys `synth_ice40` per module, 4401 LUTs loadable vs 3003 not (docs/hardware.md). Refitted to
#: whole iCEBreaker boards (`lowbit build MODEL --board icebreaker --loadable --max-batch 2 [--array RxC]`,
#: MNIST TFC, weights in SPRAM, input memory): with 1950 the estimate was under every one of them by about
#: the same, W1A1 16x2 5145 LCs (estimate 4602), W2A2 8x2 5026 (4492) and 4x4 5029 (4484), W4A4 4x2 4980
#: (4462).
OVERLAY_LC_LOADABLE = 2490
#: The fraction of the logic the planner gives a loadable overlay by its estimate, per family (others: the
#: cost model's `logic_budget`, 85 %). The boards above placed, routed and met timing at 95-97 % of a UP5K
#: and the refitted estimate is within 1 % of each (within 2 % of the two the planner then chose, W2A2 16x2
#: 5223 and W4A4 8x2 5063 with the input loaded during the drain, which met timing too); a fixed overlay's
#: estimate is 4 % either side
#: (docs/hardware.md), so it keeps the 85 %.
LOADABLE_LOGIC_BUDGET = {"ice40": 0.975}
SPRAM_RESOURCE = "ICESTORM_SPRAM"
#: Logic cells of the overlay around its array (sequencer, decoders, accumulators, result slots, the
#: requantizer) and per PE by decoded operand widths (signed x_bits, w_bits). Measured with
#: `lowbit.sw.bench.synth_core` on a UP5K (OverlayEngine alone, 64-32-10 MLP, LUT products): 8x8 1-bit
#: 1566 LCs, 8x8 2-bit 2519, 4x8 4-bit 3404, 8x8 4-bit 5844 (docs/hardware.md). Other widths are scaled
#: from the nearest by operand area. The board's UART and frame handler add CostModel.lc_system.
#: 4x4 refitted once the weight and parameter memories were forced into block RAM (hw/overlay.py
#: BLOCK_RAM): whole iCEBreaker boards of the 4-bit 64-32-10 MLP, 8x4 4007 LCs and 8x8 6027 (refused at
#: placement), 63 LCs a PE (2-bit: 8x4 2484, 8x8 3153, 21 a PE, as before).
#: Refitted again for radix-4 products and carry-chain adder trees (hw/array.py radix4_product, kept):
#: the same boards at 30 MHz (tests' random_mlp((64, 32, 10), bits, seed=1)), 4-bit 8x4 3155 and 8x8
#: 4559 LCs (7 packed pairs each): 44 a PE; 2-bit 8x4 2313, 8x8 2849, 16x8 3636: 17 a PE.
#: The base then refitted to those boards (estimates 614-1090 LCs high with 1150; the trained digits MLP
#: as 8x8: 4446) and the convolution's part split off (OVERLAY_LC_CONV: random_cnn(bits=2, seed=1) as
#: an 8x8 overlay, 3923 LCs, was 285 over its estimate); OVERLAY_LC_LOADABLE rose by what the base lost,
#: so loadable estimates did not change.
OVERLAY_LC_BASE = 600
#: Logic cells an overlay built for Conv2d / MaxPool2d adds (OverlayConfig.conv: the window address
#: generator, padding, the max-pool pass), fitted with the base above.
OVERLAY_LC_CONV = 900
#: Logic cells of the input memory's loader (OverlayConfig.in_depth: its counters, halves and address),
#: besides a LUT a bit of the activation word, where layer 0's word is chosen from it.
OVERLAY_LC_INPUT_MEMORY = 45
#: Logic cells of loading the input while the last layer drains, in an overlay without the input memory
#: (hw/overlay.py `loading_early`: the input length chosen from the running or the prefetched descriptor,
#: a flag and the enable). The whole boards it was added to moved by +27 and -31 LCs (W2A2 16x2 5196 ->
#: 5223, W4A4 8x2 5094 -> 5063): placement noise is larger than this figure.
OVERLAY_LC_EARLY_LOAD = 15
#: Logic cells per bit of the wide back end's compares (OverlayConfig.wide: each column's sum with each
#: threshold, acc_bits wide), besides a cell a bit of its word of codes. Measured with `synth_core` on the
#: trained MNIST CNN (W2A2) as a 9x8 overlay, 144-bit port, no input memory (docs/hardware.md): 2997 LCs
#: with the wide back end and patches, 2697 with patches only (8 x 3 compares of 10 bits: 300), 2708 with
#: neither, so the patch loader (a 59-code shift register) is counted as free.
OVERLAY_LC_PER_WIDE_BIT = 1.2
#: Logic cells per bit of the descriptor fields the back end keeps for the last layer while the next
#: inference's layer 0 starts (hw/overlay.py `back`): a fixed program selects between constants and the
#: running descriptor, a loadable one keeps them in registers too (a flip-flop rarely packed, and the select).
OVERLAY_LC_PER_BACK_BIT = {False: 0.5, True: 1.75}
OVERLAY_LC_PER_PE = {(1, 1): 6, (2, 2): 17, (4, 4): 44, (8, 8): 250}
#: Per PE of an overlay whose every layer is ±1 x ±1 (decoded as 2-bit values, but each product is one
#: of two values and the column sums are narrow): TFC-w1a1 as 16x8 with array_regs at 30 MHz, 3796 LCs
#: on the board against 4488 estimated with the 2-bit figure (tests/test_overlay_plan.py tfc_w1a1).
OVERLAY_LC_PER_BINARY_PE = 12
#: Logic cells a pair of products saves when it is one packed multiply in an SB_MAC16
#: (OverlayConfig.dsp_pairs): the 4-bit MLP's 8x8 board above, 4751 LCs with none, 4559 with 7 pairs
#: (with shift-add products it was 50: 8x4 4007 -> 3653).
OVERLAY_LC_PER_DSP_PAIR = 27


#: Design clocks above which the planner registers the array's operands and column sums
#: (OverlayConfig.array_regs), per family. Measured on the iCEBreaker's 8x8 4-bit board (64-32-10 MLP,
#: docs/hardware.md): 30.4 MHz without, 33.5 with them (4559 -> 4883 LCs). At 30 MHz without them a 16x4
#: 4-bit board reached 29.96 MHz and TFC-w1a1 as 32x4 (±1: a 32-row adder tree) 28.6-29.8; with them
#: TFC-w1a1 as 16x8 35.0 MHz. Not yet measured on ECP5.
ARRAY_REGS_ABOVE_HZ = {"ice40": 28e6}
#: Logic cells a registered bit costs (a flip-flop that rarely packs with a LUT of its own): the 8x8 board's
#: 424 bits of operand, 3x and sum registers took 324 LCs.
OVERLAY_LC_PER_REG_BIT = 0.75


#: Design clocks above which the planner takes arrays of at most so many rows, per family: the column's
#: adder tree is one cycle from the products' registers to the sums' (array_regs), log2(rows) carry chains
#: deep. Whole iCEBreaker boards: 32 rows reached 36.84 MHz (4-bit, 32x1 at 40.5) and 37.24 (±1, 32x4 at
#: 30); 16 rows 40.71 (2-bit, 16x8) and 8 rows 41.77 (4-bit, 8x8) at 40.5 (docs/hardware.md).
MAX_ROWS_ABOVE_HZ = {"ice40": (36e6, 16)}


def max_rows_for(family: str, clock_hz: float | None) -> int | None:
    """The most rows the planner gives an overlay clocked at ``clock_hz`` (None: no limit;
    :data:`MAX_ROWS_ABOVE_HZ`)."""
    above, rows = MAX_ROWS_ABOVE_HZ.get(family, (math.inf, None))
    return rows if clock_hz is not None and clock_hz > above else None


def array_regs_for(family: str, clock_hz: float | None) -> bool:
    """Whether an overlay clocked at ``clock_hz`` gets :attr:`OverlayConfig.array_regs`
    (:data:`ARRAY_REGS_ABOVE_HZ`)."""
    return clock_hz is not None and clock_hz > ARRAY_REGS_ABOVE_HZ.get(family, float("inf"))


def array_reg_bits(cfg: OverlayConfig) -> int:
    """Flip-flops :attr:`OverlayConfig.array_regs` adds: operands, the rows' ``3x`` and the column sums."""
    if not cfg.array_regs:
        return 0
    acfg = cfg.array_config
    x3 = cfg.rows * (cfg.x_bits + 2)
    return cfg.rows * cfg.x_bits + cfg.macs * cfg.w_bits + x3 + cfg.cols * acfg.psum_bits(cfg.rows)


def products_leave_dsps(cfg: OverlayConfig, family: str) -> bool:
    """Whether synthesis leaves the overlay array's products in logic and the DSP blocks free: on iCE40
    for products under ``lowbit.sw.flow.synth.DSP_MIN_PRODUCT_BITS`` (11 bits). The build then puts the
    requantizer's multiplier in a DSP block, and :func:`dsp_pairs_for` pairs of products in the rest."""
    from .synth import DSP_MIN_PRODUCT_BITS
    return family == "ice40" and cfg.x_bits + cfg.w_bits < DSP_MIN_PRODUCT_BITS["ice40"]


def dsp_pairs_for(cfg: OverlayConfig, family: str, dsps: int) -> int:
    """Pairs of the array's products to put in the DSP blocks the requantizer leaves (see
    :func:`products_leave_dsps`): for products of at least 3 x 3 bits (narrower ones are a select in
    logic, cheaper than the split of a packed product) whose packed multiply ``x * (w_a + w_b << S)``
    fits a 16 x 16 SB_MAC16. The requantizer's multiplier takes one block per 16 bits of multiplier."""
    S = cfg.array_config.product_bits
    if not products_leave_dsps(cfg, family) or cfg.systolic or min(cfg.x_bits, cfg.w_bits) < 3 \
            or S + cfg.w_bits + 1 > 16:
        return 0
    return max(0, min(cfg.rows * (cfg.cols // 2), dsps - math.ceil(cfg.mult_bits / 16)))


#: Array shapes the planner tries (rows, cols), and weight-memory widths: 64 bits is what the UP5K's four
#: SPRAMs give; weights in block RAM can be read wider, which a batch-1 Dense layer needs to feed more PEs.
CANDIDATE_ARRAYS = [(r, c) for r in (1, 2, 4, 8, 16, 32) for c in (1, 2, 4, 8, 16) if c <= r]
CANDIDATE_PORTS = (64, 128, 256, 512)


def patch_arrays(model: Model) -> list:
    """Array shapes whose rows are the taps of a first Conv2d whose window the loader can store as one
    patch word (:func:`patch_geometry`) when that count is not a power of two (a 3x3 kernel on one
    channel: 9 rows, each position one step that fills every lane)."""
    geo = patch_geometry(model, 64)
    taps = geo[1] * geo[2] * geo[3] if geo else 0
    if not taps or taps & (taps - 1) == 0:
        return []
    return [(taps, c) for c in (1, 2, 4, 8, 16) if c <= taps]


def ports_for(shape, model: Model, ports, sprams: int) -> tuple:
    """Weight-port widths to try for an array ``shape``: ``ports``, and with weights in block RAM (no
    SPRAM) the narrowest width in 16-bit blocks that holds one array word of the model's widest weights
    (a 9x8 2-bit array's 144 bits: 9 blocks, where 256 take 16 and 128 two reads a step)."""
    if sprams:
        return tuple(ports)
    bits = max(1 if L.weight_q.binary else L.weight_q.bits for L in model.layers if hasattr(L, "weight_q"))
    exact = 16 * math.ceil(shape[0] * shape[1] * bits / 16)
    if 64 < exact < 512 and exact not in ports:
        return (*ports, exact)
    return tuple(ports)


def back_field_bits(cfg: OverlayConfig, descriptors) -> int:
    """Bits of the descriptor fields the back end keeps for the last layer
    (:func:`lowbit.hw.overlay.kept_fields`: all it reads in a loadable overlay, those that differ from
    layer 0's in a fixed program)."""
    layout = descriptor_layout(cfg)
    return sum(layout[f].shape.width for f in kept_fields(cfg, descriptors))


def pe_logic(x_bits: int, w_bits: int) -> float:
    if (x_bits, w_bits) in OVERLAY_LC_PER_PE:
        return OVERLAY_LC_PER_PE[(x_bits, w_bits)]
    (a0, w0), cost = min(OVERLAY_LC_PER_PE.items(), key=lambda kv: abs(kv[0][0] * kv[0][1] - x_bits * w_bits))
    return cost * x_bits * w_bits / (a0 * w0)


def overlay_estimate(cfg: OverlayConfig, program: OverlayProgram, family: str, lc_system: int,
                     max_batch: int = 8, input_buffer: int | None = None) -> dict:
    """Logic and block RAM of the overlay board core: ``{"logic": LCs, "brams": blocks, "blocks": {...}}``.
    All memories are block RAM for now (initialised with the model; SPRAM needs the model loaded at run
    time); the host link's input buffer holds ``input_buffer`` bytes (default ``max_batch`` inputs), its
    output FIFO ``max_batch`` outputs, its identity memory the identity and capacity records."""
    from ...hw.accel import identity_depth
    from ...hw.overlay import PROGRAM_WORD_BITS
    from ..link import frames
    from .fold import rom_blocks
    identity = identity_depth(cfg) + frames.IDENTIFY_HEAD_BYTES + 1 + frames.CAPACITY_BYTES
    spram = cfg.weight_store == "spram"
    blocks = {"weights": 0 if spram else rom_blocks(cfg.port_bits, cfg.weight_depth, family),
              "params": rom_blocks(cfg.param_bits, cfg.param_depth, family),
              # a fixed overlay's program is a ROM in logic (hw/overlay.py: ram_style "logic")
              "program": rom_blocks(PROGRAM_WORD_BITS, cfg.program_depth, family) if cfg.loadable else 0,
              "activations": rom_blocks(cfg.rows * cfg.act_bits, 2 * cfg.act_depth, family)
              + (rom_blocks(cfg.rows * cfg.act_bits, 2 * cfg.in_depth, family) if cfg.in_depth else 0),
              "link": rom_blocks(8, input_buffer or program.input_count * max_batch, family)
              + rom_blocks(cfg.out_bits, max(16, program.output_count * max_batch), family)
              + (rom_blocks(8, identity, family) if cfg.loadable else 0)}
    binary = all(f[-1] for f in cfg.act_formats) and all(f[-1] for f in cfg.weight_formats)
    logic = lc_system + OVERLAY_LC_BASE + cfg.macs * (OVERLAY_LC_PER_BINARY_PE if binary
                                                      else pe_logic(cfg.x_bits, cfg.w_bits))
    logic -= cfg.dsp_pairs * OVERLAY_LC_PER_DSP_PAIR
    logic += array_reg_bits(cfg) * OVERLAY_LC_PER_REG_BIT
    logic += OVERLAY_LC_LOADABLE if cfg.loadable else 0
    # the next descriptor's words, read while a layer runs, all but the last kept in registers (hw/overlay.py)
    logic += (cfg.program_word_count - 1) * cfg.program_word_bits * OVERLAY_LC_PER_REG_BIT
    logic += OVERLAY_LC_CONV if cfg.conv else 0
    # the input memory's loader, and layer 0's word chosen from it; the back end's fields of the last layer,
    # kept while layer 0 of the next inference starts (registers and a select in a loadable overlay, a
    # select with constants in a fixed one)
    if cfg.in_depth:
        logic += OVERLAY_LC_INPUT_MEMORY + cfg.rows * cfg.act_bits
        logic += back_field_bits(cfg, program.descriptors) * OVERLAY_LC_PER_BACK_BIT[cfg.loadable]
    else:
        logic += OVERLAY_LC_EARLY_LOAD
    # the wide back end's compares and its word of codes (layer 0); the patch loader costs about what the
    # pixel words' assembly it replaces did (OVERLAY_LC_PER_WIDE_BIT)
    if cfg.wide:
        first = program.descriptors[0]
        logic += OVERLAY_LC_PER_WIDE_BIT * first["n"] * first["n_thr"] * cfg.acc_bits + cfg.rows * cfg.act_bits
    return {"logic": math.ceil(logic), "brams": sum(blocks.values()), "blocks": blocks,
            "sprams": cfg.port_bits // SPRAM_BITS if spram else 0}


@dataclass(frozen=True)
class OverlayPlan:
    config: OverlayConfig
    program: OverlayProgram
    estimate: dict
    cycles: int
    input_buffer: int = 0      # bytes of the host link's input buffer (max_batch inputs of the widest model)


def input_buffer_for(models, max_batch: int) -> int:
    """Bytes of an overlay board's input buffer: ``max_batch`` inputs of the widest of ``models``."""
    return max(int(np.prod(m.input_shape)) for m in models) * max_batch


def parse_array(text: str) -> tuple[int, int]:
    """``"RxC"`` (``lowbit build --array``) as ``(rows, cols)``; LowbitError naming the text otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or not (1 <= int(m.group(1)) <= 64 and 1 <= int(m.group(2)) <= 64):
        raise LowbitError(f"--array {text!r} is not ROWSxCOLS with 1 to 64 of each", "e.g. --array 8x6")
    return int(m.group(1)), int(m.group(2))


#: Cycles per inference within which the planner counts two overlays as equally fast (plan_overlay).
CYCLES_TIE = 0.01


def plan_overlay(model: Model, dev, *, arrays=None, max_batch: int = 8, also=(), loadable: bool = False,
                 logic_check: bool = True, clock_hz: float | None = None) -> OverlayPlan:
    """The overlay with the fewest cycles per inference that fits ``dev`` (a
    :class:`lowbit.sw.flow.synth.Device`) by the estimate (of those within :data:`CYCLES_TIE` of the fewest,
    the one whose worst layer comes nearest its roofline, in tenths, then the smallest by the estimate), or
    with ``arrays = (rows, cols)`` that one; LowbitError before any synthesis, naming what does not fit.
    Without ``logic_check`` (an array the user chose) the logic estimate is held against the whole device,
    not the planner's budget (its margin for the estimate's error): synthesis counts the logic exactly and
    refuses before placement.
    ``also``: more models the overlay must be able to load (its formats, memories and input buffer are
    sized for each; implies ``loadable``). Above :data:`ARRAY_REGS_ABOVE_HZ` (``clock_hz``, the design
    clock) the array's operands and sums are registered (:func:`array_regs_for`); above
    :data:`MAX_ROWS_ABOVE_HZ` the planner's arrays have fewer rows (:func:`max_rows_for`).

    A loadable overlay on a device with SPRAM (iCE40 UltraPlus: four 16K x 16 blocks) keeps its weights
    there, all 16K words of a 64-bit port, so any model whose weights fit 1 Mbit can be loaded later;
    elsewhere they are block RAM sized for the models. Each overlay gets an input memory (the next input
    loads while the layers run) unless that is what does not fit."""
    loadable = loadable or bool(also)
    buffer = input_buffer_for((model, *also), max_batch)
    sprams = dev.capacity.get(SPRAM_RESOURCE, 0) if loadable else 0
    from .fold import COST_MODELS
    cost = COST_MODELS[dev.family]
    budget = LOADABLE_LOGIC_BUDGET.get(dev.family, cost.logic_budget) if loadable else cost.logic_budget
    logic_cap = int(dev.capacity.get(cost.logic_resource, 10 ** 9) * (budget if logic_check else 1))
    bram_cap = dev.capacity.get(dev.bram_resource, 10 ** 6)
    reasons, fits = [], []
    shapes = [arrays] if arrays else CANDIDATE_ARRAYS + patch_arrays(model)
    ports = (SPRAM_BITS * sprams,) if sprams else CANDIDATE_PORTS
    most_rows = None if arrays else max_rows_for(dev.family, clock_hz)
    for (rows, cols), port in ((a, p) for a in shapes for p in ports_for(a, model, ports, sprams)):
        if most_rows is not None and rows > most_rows:
            reasons.append((3, 0, rows * cols, f"{rows}x{cols}: more than {most_rows} rows do not meet timing above "
                                               f"{MAX_ROWS_ABOVE_HZ[dev.family][0] / 1e6:g} MHz"))
            continue
        try:
            store = {"weight_store": "spram", "weight_depth": SPRAM_WORDS} if sprams else {}
            cfg = config_for(model, rows, cols, also=also, port_bits=port, loadable=loadable,
                             array_regs=array_regs_for(dev.family, clock_hz), **store)
            pairs = dsp_pairs_for(cfg, dev.family, dev.capacity.get(dev.dsp_resource, 0))
            if pairs:
                cfg = dataclasses.replace(cfg, dsp_pairs=pairs)
            if port > 64 and cfg.ratio_max == 1 and cfg.ratio(cfg.weight_bits) * port // 2 >= rows * cols * cfg.weight_bits:
                continue        # a wider port than one array word: nothing to gain

            prog = compile_program(model, cfg)
            for other in also:
                compile_program(other, cfg)
        except (LowbitError, ValueError) as exc:
            reasons.append((2, 0, rows * cols, f"{rows}x{cols}: {exc}"))
            continue
        est = overlay_estimate(cfg, prog, dev.family, cost.lc_system, max_batch, buffer)
        if (est["logic"] > logic_cap or est["brams"] > bram_cap) and cfg.in_depth:
            # without the input memory: inputs load between inferences
            cfg = dataclasses.replace(cfg, in_depth=0)
            prog = compile_program(model, cfg)
            est = overlay_estimate(cfg, prog, dev.family, cost.lc_system, max_batch, buffer)
        if est["logic"] > logic_cap or est["brams"] > bram_cap:
            reasons.append((1, est["brams"], rows * cols, f"{rows}x{cols}: estimate {est['logic']} {cost.logic_resource} of {logic_cap} usable, "
                           f"{est['brams']} block RAMs of {bram_cap} (weights {est['blocks']['weights']}, "
                           f"parameters {est['blocks']['params']}, activations {est['blocks']['activations']}, "
                                          f"link buffers {est['blocks']['link']})"))
            continue
        cycles = inference_cycles(prog)
        fits.append(OverlayPlan(cfg, prog, {cost.logic_resource: est["logic"], "brams": est["brams"],
                                            "blocks": est["blocks"], "sprams": est["sprams"]}, cycles, buffer))
    if not fits:
        # The candidate needing the fewest block RAMs says best what is too big.
        reason = min(reasons)[3]
        raise LowbitError(f"the model does not fit an overlay on {dev.name}: {reason}",
                          "use fewer or narrower weights, a smaller --max-batch (link buffers), or a bigger device")
    # The fewest cycles; but of the arrays within CYCLES_TIE of those, the one whose worst layer is nearest
    # its roofline, in tenths (TFC W1A1 loadable: 16x2 puts the 10 outputs of the last layer on 2 columns,
    # 90.9 %; 8x4 on 4, 12 slots for 10, 76.9 %), then the least logic.
    fastest = min(p.cycles for p in fits)
    worst = lambda p: math.floor(10 * min(l.roofline_fraction for l in p.program.layers))
    return min((p for p in fits if p.cycles <= fastest * (1 + CYCLES_TIE)),
               key=lambda p: (-worst(p), p.estimate[cost.logic_resource], p.cycles, p.config.macs,
                              p.config.port_bits))


def overlay_report(plan: OverlayPlan, clk_hz: float) -> dict:
    """The report.json fields of an overlay build: array, PEs, MAC/s, memory map, per-layer roofline;
    whether layer 0 reads patch words (``input_patches``) and which layers the wide back end requantizes."""
    cfg, prog = plan.config, plan.program
    return {"architecture": "overlay", "pes": cfg.macs, "overlay_array": [cfg.rows, cfg.cols],
            "dsp_products": 2 * cfg.dsp_pairs, "array_regs": cfg.array_regs,
            "loadable": cfg.loadable, "weight_store": cfg.weight_store, "input_preload": cfg.in_depth > 0,
            "input_patches": bool(cfg.patch),
            "macs_per_s": round(cfg.macs * clk_hz), "memory_map": prog.memory_map(),
            "layers": [{"layer": p.index, "kind": p.kind, "positions": p.positions, "k": p.k, "n": p.n,
                        "weight_bits": p.weight_bits, "ratio": p.ratio,
                        "cycles": p.cycles, "roof_cycles": round(p.roof_cycles, 1),
                        "roofline_fraction": round(p.roofline_fraction, 4),
                        "output_roof_cycles": p.output_roof, "bound": p.bound, "wide_back_end": p.wide}
                       for p in prog.layers]}


# -- loading a model into a built overlay ------------------------------------------------------------

@dataclass(frozen=True)
class LoadImage:
    """A model as the bytes a loadable overlay takes (:data:`lowbit.sw.link.frames.SPACES` order):
    ``spaces[s]`` the bytes of space ``s`` (whole little-endian words of ``word_bytes[s]``), ``commit``
    the COMMIT fields with their checksum, ``identity`` what the board answers once it holds the model."""

    spaces: dict
    word_bytes: dict
    commit: dict
    identity: object
    program: OverlayProgram

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.spaces.values())

    def frames(self, chunk_bytes: int) -> bytes:
        """The LOAD frames (chunks of at most ``chunk_bytes``, whole words) and the COMMIT, as sent."""
        from ..link import frames
        loads = frames.load_payloads(self.spaces, self.word_bytes, chunk_bytes)
        return b"".join(frames.encode_frame(frames.LOAD, payload) for payload in loads) + \
            frames.encode_frame(frames.COMMIT, frames.pack_commit(self.commit))

    def flash_blob(self, chunk_bytes: int) -> bytes:
        """The blob a board boots from (``hw/flashboot.py``): magic, length, :meth:`frames`."""
        from ..link import frames
        return frames.flash_blob(self.frames(chunk_bytes))


def load_image(model: Model, cfg: OverlayConfig, max_batch: int, input_buffer: int) -> LoadImage:
    """``model`` laid out for an overlay built with ``cfg`` and an input buffer of ``input_buffer``
    bytes; LowbitError naming what does not fit (as :func:`compile_program`, and the input buffer)."""
    from ...hw.accel import identity_for
    from ...hw.overlay import program_words
    from ..link import frames
    if not cfg.loadable:
        raise LowbitError("this overlay was built to run its own model only (its program is logic)",
                          "build a loadable overlay: lowbit build --arch overlay --loadable (or --also MODEL)")
    prog = compile_program(model, cfg)
    if prog.input_count > input_buffer:
        raise LowbitError(f"the model has {prog.input_count} inputs, the overlay's input buffer holds {input_buffer} "
                          "bytes", "build the overlay for a model with as many inputs (lowbit build --also MODEL)")
    arrays = prog.arrays
    ident = identity_for(model, arrays, min(max_batch, input_buffer // prog.input_count))
    word_bytes = {0: 1, **{s: frames.value_bytes(cfg.word_bits(s)) for s in (1, 2, 3)}}
    words = {1: program_words(cfg, prog.descriptors), 2: prog.weights, 3: prog.params}
    spaces = {0: ident.pack_model(), **{s: b"".join(int(w).to_bytes(word_bytes[s], "little") for w in words[s])
                                        for s in (1, 2, 3)}}
    checksum = frames.crc32(b"".join(spaces[s] for s in range(4)))
    commit = {"identity_bytes": len(spaces[0]), "program_words": len(words[1]), "weight_words": len(words[2]),
              "param_words": len(words[3]), "input_count": ident.input_count, "output_count": ident.output_count,
              "output_bytes": ident.output_bytes, "checksum": checksum}
    return LoadImage(spaces, word_bytes, commit, ident, prog)
