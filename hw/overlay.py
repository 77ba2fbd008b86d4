"""The overlay engine: one ``R x C`` MAC array that runs a whole network, layer by layer, from a program.

The dataflow architecture (:mod:`lowbit.hw.network`) gives every layer its own engine; on a small FPGA
that fixed cost per layer leaves few PEs. The overlay has one array, one requantizer and three memories,
and a sequencer that executes a **layer program** (one descriptor per layer, :func:`descriptor_layout`):

* **activation memory**: two banks of ``act_depth`` words, each word one K-chunk of ``R`` codes at
  ``act_bits`` per lane. Layer ``l`` reads bank ``l % 2`` and writes the other (ping-pong). Layer 0
  reads the **input memory** (``in_depth`` > 0): two halves of one input each, which the input stream
  fills while the layers run (a half is free once layer 0 has read it); without it the input is loaded
  into bank 0 before layer 0 runs, from the cycle the inference before has issued its last layer's steps
  (that layer reads no activation word again, and its outputs leave through ``o``).
* **weight memory**: ``weight_depth`` words of ``port_bits`` (64: the four SPRAMs of a UP5K side by
  side). A layer's weights are a sequence of *array words*, one per (group, chunk) step, each
  ``R * C * w`` bits at the layer's own weight width ``w`` and spread over ``ratio = ceil(R*C*w / port_bits)``
  consecutive port words, so a 2-bit layer streams twice as many weights per cycle as a 4-bit one.
* **parameter memory**: one record per output channel: the folded bias, then the multiplier and shift
  (requantization) or the thresholds (multi-threshold).

Per layer the array runs output-stationary, like a :class:`~lowbit.hw.dense.DenseEngine`: for each group
``g`` of ``C`` output channels and each K-chunk ``c`` it multiplies the chunk by the array word and
accumulates; one step takes ``ratio`` cycles, the weight memory's bandwidth (the roofline of a batch-1
Dense layer). After ``KC`` steps the ``C`` sums go to the requantizer, which runs while the next group
accumulates and writes one code per cycle back into the other bank, or, for the last layer, out of ``o``.
A layer starts once the one before has written its outputs; only the next inference's layer 0, whose
input is in the input memory, starts as soon as the last layer's steps are issued, while the requantizer
(the *back end*) finishes the last layer with that layer's fields.

Operands are decoded per layer (formats chosen when the overlay is built: :class:`OverlayConfig`):
signed activation codes as they are, unsigned ``b``-bit codes ``u`` as ``u - 2**(b-1)`` (the MSB flipped,
so a ``b``-bit unsigned code needs no wider multiplier; the compiler adds ``2**(b-1) * sum_k w`` to the
bias), ±1 bits as ±1; weights are signed codes or ±1 bits.
The array multiplies signed values, so every combination — unsigned or signed inputs, ±1 weights with
multi-bit inputs, XNOR-style ±1 x ±1 — is the integer dot product ``docs/arithmetic.md`` defines. Lanes
past K in a layer's last chunk are forced to 0.

A fixed overlay may store layer 0's input as patch words (:attr:`OverlayConfig.patch`: one word an
output position holding its whole window, so a first 3x3 convolution of one channel takes one step a
position on a 9-row array) and requantize layer 0 a result slot a cycle (:attr:`OverlayConfig.wide`).

Streams: ``i`` takes the input codes one per beat (raw ``act_bits``-wide code bits, in the order of the
model's input), ``o`` gives the last layer's outputs one per beat as ``signed(out_bits)`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw.ir import arith
from .array import MacArray, delay_line, tree_sum
from .config import ArrayConfig
from .spram import SinglePortRAM

__all__ = ["OverlayConfig", "OverlayEngine", "Sequencer", "descriptor_layout", "back_fields", "kept_fields",
           "param_layout", "program_words", "MODES", "OUT_BITS", "PROGRAM_WORD_BITS", "SPACE_BITS"]

#: Requantizer modes of a descriptor.
MODES = {"requant": 0, "thresholds": 1, "logits": 2}
#: Widest value on ``o`` (a descriptor's values never exceed ``OverlayConfig.out_bits``).
OUT_BITS = 32
SHIFT_BITS = arith.MAX_SHIFT.bit_length()
#: Signed width of a descriptor's zero point and clamp bounds.
CLAMP_FIELD_BITS = 10
#: The requantizer saturates the rounded value to this signed width before adding the zero point and
#: clamping: with zero point and bounds in ``±2**(CLAMP_FIELD_BITS-1)``, any value past
#: ``±2**(SAT_BITS-1)`` clamps as the saturated one does.
SAT_BITS = CLAMP_FIELD_BITS + 2
#: The layer program is stored in words of this width (block RAM); a descriptor takes
#: :attr:`OverlayConfig.program_word_count` of them, read one per cycle while the layer before runs.
PROGRAM_WORD_BITS = 32
#: The descriptor fields the back end (requantizer, write-back) reads; ``outs`` and ``wb_n`` with conv.
BACK_FIELDS = ("p_base", "mode", "zero_point", "lo", "hi", "n_thr", "out_lo", "out_step", "out_binary", "n",
               "n_last", "groups", "outs", "wb_n")
#: Width of the memory-select field of the load port.
SPACE_BITS = 2
#: The weight, parameter and activation memories stay in block RAM even when small: on a UP5K logic is what runs
#: out (an 8x8 4-bit overlay's 40 x 256-bit weight ROM took ~700 LUTs when Yosys chose logic), and the
#: planner counts them as block RAMs.
BLOCK_RAM = {"ram_style": "block"}


@dataclass(frozen=True)
class OverlayConfig:
    """What an overlay is built with; every width follows from these fields.

    ``act_formats`` are the ``(bits, signed, binary)`` input formats a layer may have and
    ``weight_formats`` the ``(bits, binary)`` weight formats (non-binary weights are signed); a
    descriptor picks one of each by index. ``acc_bits`` is the width of the accumulators and of
    ``acc + bias``; ``mult_bits`` of the requantization multiplier. ``dsp_pairs`` pairs of the array's
    products are packed multiplies for DSP blocks (:attr:`ArrayConfig.dsp_pairs`). ``array_regs``
    registers the array's decoded operands where they enter it and its column sums where they leave the
    adder tree (:attr:`ArrayConfig.input_reg`, :attr:`ArrayConfig.sum_reg`): the memory read and decoders,
    the multiplies, the adder tree and the accumulators are then separate cycles; every layer takes two
    cycles more. ``in_depth`` > 0 gives the overlay an input memory of two halves of ``in_depth`` words
    (one input each, as layer 0 reads it): the next input is loaded while the layers run; with 0 an
    input is loaded into bank 0 between inferences.

    ``patch`` (a fixed overlay's: the program is its model's) = ``(in_w, cin, kh, kw)`` of layer 0, a Conv2d
    of stride 1 without padding whose ``kh * kw * cin`` taps fit the ``rows`` lanes: the loader keeps the
    last ``kh - 1`` image rows in a shift register and stores one word per output position, that position's
    whole window (its patch, taps in the weights' K order), so layer 0 takes one step a position where it
    took ``kh * kw`` (the compiler gives it as a ``1 x 1`` convolution of ``kh * kw * cin`` channels).
    ``wide`` (fixed too): layer 0 (a multi-threshold Conv2d of at most ``cols`` and ``rows`` channels) is
    requantized a whole result slot a cycle, its thresholds constants compared with every column's sum, and
    its codes written back as one word; the one-channel-a-cycle requantizer would bind such a layer.
    """

    rows: int = 8
    cols: int = 8
    act_bits: int = 4
    weight_bits: int = 4
    port_bits: int = 64
    act_depth: int = 128
    weight_depth: int = 4096
    param_depth: int = 512
    max_layers: int = 16
    max_thresholds: int = 3
    acc_bits: int = 24
    mult_bits: int = 16
    act_formats: tuple = ((4, False, False),)
    weight_formats: tuple = ((4, False),)
    systolic: bool = False
    mult: str = "lut"
    loadable: bool = False
    weight_store: str = "bram"
    conv: bool = False
    dsp_pairs: int = 0
    array_regs: bool = False
    in_depth: int = 0
    patch: tuple = ()
    wide: bool = False

    def __post_init__(self):
        for name, lo, hi in (("rows", 1, 64), ("cols", 1, 64), ("act_bits", 1, 8), ("weight_bits", 1, 8),
                             ("port_bits", 8, 512), ("act_depth", 1, 1 << 16), ("weight_depth", 1, 1 << 20),
                             ("param_depth", 1, 1 << 16), ("max_layers", 1, 256), ("max_thresholds", 0, 15),
                             ("in_depth", 0, 1 << 16),
                             ("acc_bits", 4, 31), ("mult_bits", 1, arith.MULT_BITS)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"OverlayConfig.{name} must be an integer from {lo} to {hi}, not {value!r}")
        if self.rows * self.cols * self.weight_bits > 31 * self.port_bits:
            raise ValueError(f"an array word of {self.rows}x{self.cols} {self.weight_bits}-bit weights needs more "
                             f"than 31 port words of {self.port_bits} bits")
        if not isinstance(self.dsp_pairs, int) or not 0 <= self.dsp_pairs <= self.rows * (self.cols // 2):
            raise ValueError(f"OverlayConfig.dsp_pairs must be an integer from 0 to {self.rows * (self.cols // 2)}, "
                             f"not {self.dsp_pairs!r}")
        if not isinstance(self.array_regs, bool):
            raise ValueError(f"OverlayConfig.array_regs must be True or False, not {self.array_regs!r}")
        if self.weight_store not in ("bram", "spram"):
            raise ValueError(f"OverlayConfig.weight_store must be 'bram' or 'spram', not {self.weight_store!r}")
        if self.weight_store == "spram" and not (self.loadable and self.port_bits % 16 == 0
                                                 and self.weight_depth <= 16384):
            raise ValueError("weights in SPRAM need a loadable overlay (SPRAM has no initial contents), a port "
                             "of whole 16-bit blocks and at most 16384 words")
        if (self.patch or self.wide) and (self.loadable or not self.conv):
            raise ValueError("a patch loader or a wide back end needs a fixed overlay built for convolutions")
        if self.patch and (len(self.patch) != 4 or not all(isinstance(v, int) and v >= 1 for v in self.patch)
                           or self.patch[1] * self.patch[2] * self.patch[3] > self.rows):
            raise ValueError(f"OverlayConfig.patch must be (in_w, cin, kh, kw) whose kh*kw*cin taps fit "
                             f"rows={self.rows}, not {self.patch!r}")
        if not self.act_formats or not self.weight_formats:
            raise ValueError("OverlayConfig needs at least one activation and one weight format")
        for bits, is_signed, binary in self.act_formats:
            if not 1 <= bits <= self.act_bits or (binary and bits != 1):
                raise ValueError(f"activation format {(bits, is_signed, binary)} does not fit act_bits={self.act_bits}")
        for bits, binary in self.weight_formats:
            if not 1 <= bits <= self.weight_bits or (binary and bits != 1):
                raise ValueError(f"weight format {(bits, binary)} does not fit weight_bits={self.weight_bits}")

    # -- derived ----------------------------------------------------------------------------------

    @property
    def macs(self) -> int:
        return self.rows * self.cols

    @property
    def x_bits(self) -> int:
        """Signed width of a decoded activation value: ``b`` for ``b``-bit codes (unsigned codes are
        decoded offset by ``2**(b-1)``, which the compiler folds into the bias), 2 for ±1."""
        return max([2 if binary else bits for bits, _, binary in self.act_formats])

    @property
    def w_bits(self) -> int:
        """Signed width of a decoded weight value (±1 needs 2 bits)."""
        return max([2 if binary else bits for bits, binary in self.weight_formats])

    def ratio(self, weight_bits: int) -> int:
        """Port words per array word at ``weight_bits`` bits per weight."""
        return max(1, math.ceil(self.rows * self.cols * weight_bits / self.port_bits))

    @property
    def ratio_max(self) -> int:
        return max(self.ratio(bits) for bits, _ in self.weight_formats)

    @property
    def out_bits(self) -> int:
        """Signed width of the values on ``o``: integer logits are ``acc + bias`` (``acc_bits + 1``), codes
        and threshold counts fit 10 bits. Narrow, so the host link's argmax compares few bits."""
        return min(OUT_BITS, max(self.acc_bits + 1, 10))

    @property
    def field_bits(self) -> int:
        """Signed width of a parameter record's bias and of each threshold: ``acc + bias`` fits
        ``acc_bits`` (the compiler checks it), and a threshold is clamped into that range (one outside
        is reached always or never, as its clamp), so neither needs more than ``acc_bits + 1``. Narrow
        fields keep the record, its block RAMs and the requantizer's threshold registers and compares
        small (a 4x4 W2A2 TFC's records: 55 bits, not 128)."""
        return min(32, self.acc_bits + 1)

    @property
    def param_bits(self) -> int:
        """Width of one channel's parameter record."""
        return self.field_bits + max(self.mult_bits + SHIFT_BITS, self.field_bits * self.max_thresholds)

    @property
    def program_word_bits(self) -> int:
        """Width of a program memory word: :data:`PROGRAM_WORD_BITS` (block RAM, written by the load
        port) for a loadable overlay, else a whole descriptor (a ROM in logic, folded by synthesis)."""
        return PROGRAM_WORD_BITS if self.loadable else descriptor_layout(self).size

    @property
    def program_word_count(self) -> int:
        """Program words per descriptor."""
        return math.ceil(descriptor_layout(self).size / self.program_word_bits)

    @property
    def program_depth(self) -> int:
        return self.max_layers * self.program_word_count

    def word_bits(self, space: int) -> int:
        """Bits of one word of load space ``space`` (1 program, 2 weights, 3 parameters): whole bytes,
        since the load port writes byte lanes (a parameter record is padded)."""
        bits = {1: self.program_word_bits, 2: self.port_bits, 3: self.param_bits}[space]
        return -(-bits // 8) * 8

    def depth(self, space: int) -> int:
        return {1: self.program_depth, 2: self.weight_depth, 3: self.param_depth}[space]

    @property
    def load_addr_bits(self) -> int:
        """Width of a word address on the load port."""
        return max(1, max(self.depth(s) for s in (1, 2, 3)).bit_length())

    @property
    def load_lane_bits(self) -> int:
        """Width of a byte-lane number on the load port."""
        return max(1, (max(self.word_bits(s) for s in (1, 2, 3)) // 8 - 1).bit_length())

    @property
    def array_config(self) -> ArrayConfig:
        return ArrayConfig(rows=self.rows, cols=self.cols, act_bits=self.x_bits, act_signed=True,
                           weight_bits=self.w_bits, weight_signed=True, max_k=self.rows, mult=self.mult,
                           systolic=self.systolic, dsp_pairs=0 if self.systolic else self.dsp_pairs,
                           input_reg=self.array_regs, sum_reg=self.array_regs and not self.systolic)


def descriptor_layout(cfg: OverlayConfig) -> data.StructLayout:
    """One layer of the program (built by :func:`lowbit.sw.flow.overlay.compile_program`); each count as
    wide as the overlay's memories let it be (``k`` and ``n`` at most a bank of codes, and so on)."""
    R, C = cfg.rows, cfg.cols
    codes = cfg.act_depth * R                       # most codes (inputs or outputs) a bank holds
    bits = lambda top: max(1, int(top).bit_length())
    return data.StructLayout({
        "k": unsigned(bits(codes)),                 # input codes (input-load length of layer 0)
        "kc": unsigned(bits(cfg.act_depth)),        # K-chunks
        "groups": unsigned(bits(-(-codes // C))),   # groups of C output channels
        "k_last": unsigned(bits(R)),                # lanes of the last chunk that hold codes (1..R)
        "n": unsigned(bits(codes)),                 # output channels
        "n_last": unsigned(bits(C)),                # channels of the last group (1..C)
        "act_fmt": unsigned(bits(len(cfg.act_formats) - 1)),
        "w_fmt": unsigned(bits(len(cfg.weight_formats) - 1)),
        "ratio": unsigned(bits(cfg.ratio_max)),     # port words per array word
        "w_base": unsigned(bits(cfg.weight_depth)),
        "p_base": unsigned(bits(cfg.param_depth)),
        "mode": unsigned(2),
        "zero_point": signed(CLAMP_FIELD_BITS),
        "lo": signed(CLAMP_FIELD_BITS),
        "hi": signed(CLAMP_FIELD_BITS),
        "n_thr": unsigned(bits(cfg.max_thresholds)),
        "out_lo": signed(10),
        "out_step": signed(4),
        "out_binary": unsigned(1),
        "last": unsigned(1),
        **(_conv_fields(cfg) if cfg.conv else {}),
        **({"wide": unsigned(1)} if cfg.wide else {}),      # layer 0's back end: a slot a cycle
    })


def _conv_fields(cfg: OverlayConfig) -> dict:
    """The descriptor fields of an overlay built with ``conv``: the geometry its address generator
    walks (every layer is a convolution over an ``in_h x in_w`` image of ``cin`` channels per pixel,
    ``cc_n`` activation words a pixel; a Dense layer is one ``1 x 1`` or whole-image window) and
    the address steps the compiler derives from it, so the sequencer multiplies nothing."""
    geo = unsigned(max(1, cfg.act_depth.bit_length()))
    count = unsigned(max(1, (cfg.act_depth * cfg.rows).bit_length()))      # up to a bank of codes
    addr = signed(_addr_bits(cfg))
    return {
        "pool": unsigned(1),                        # a MaxPool pass: lane-wise max of the window's words
        "cin": count,                               # input channels a pixel
        "cc_n": geo,                                # activation words a pixel (input)
        "in_h": geo, "in_w": geo, "kh": geo, "kw": geo, "oh": geo, "ow": geo,
        "sh": geo, "sw": geo, "ph": geo, "pw": geo,
        "step_kx": addr, "step_ky": addr,           # address step to the next kernel column / row
        "col_adv": addr, "row_adv": addr,           # window origin step to the next output column / row
        "origin": addr,                             # the first window's origin (negative when padded)
        "grp_step": unsigned(1),                    # a pool's groups are its words a pixel: origin + g
        "pad": signed(10),                          # the decoded value of a padding tap: zero point - offset
        "outs": count,                              # outputs (pool: words) in all
        "wb_n": count,                              # channels a written pixel
    }


def back_fields(cfg: OverlayConfig) -> tuple:
    """The :data:`BACK_FIELDS` an overlay's descriptors have (``outs`` and ``wb_n`` only with conv)."""
    return tuple(f for f in BACK_FIELDS if cfg.conv or f not in ("outs", "wb_n"))


def kept_fields(cfg: OverlayConfig, program) -> tuple:
    """The :data:`BACK_FIELDS` the back end keeps a copy of while the last layer drains and the front end
    runs the next inference's layer 0 (an overlay with an input memory): every one of a loadable overlay
    (registers), and those of a fixed ``program`` whose last layer's value differs from layer 0's (a
    select between a constant and the running descriptor, which is layer 0's while the copy is used; a
    field the two layers share needs none)."""
    back = back_fields(cfg)
    if cfg.loadable or not program:
        return back
    first, final = program[0], program[-1]
    return tuple(f for f in back if first.get(f, 0) != final.get(f, 0))


def select_tree(values, index):
    """``values[index]`` (``len(values) == 2 ** len(index)``) as a balanced tree of 2:1 selects, one level
    per index bit."""
    level = list(values)
    for bit in index:
        level = [Mux(bit, level[i + 1], level[i]) for i in range(0, len(level), 2)]
    return level[0]


def _addr_bits(cfg: OverlayConfig) -> int:
    """Signed width of the address generator's registers: a window over padding starts before the bank
    and its last taps may lie past it."""
    return (2 * cfg.act_depth).bit_length() + 2


def param_layout(cfg: OverlayConfig) -> data.UnionLayout:
    """One channel's parameter record: the folded bias, then the multiplier and shift (``requant``
    descriptors) or the thresholds (``thresholds`` descriptors); logits use the bias alone."""
    return data.UnionLayout({
        "requant": data.StructLayout({"bias": signed(cfg.field_bits), "mult": unsigned(cfg.mult_bits),
                                      "shift": unsigned(SHIFT_BITS)}),
        "thresholds": data.StructLayout({"bias": signed(cfg.field_bits),
                                         "t": data.ArrayLayout(signed(cfg.field_bits), cfg.max_thresholds)}),
    })


def program_words(cfg: OverlayConfig, descriptors) -> list[int]:
    """Descriptors (dicts of :func:`descriptor_layout` fields) as the program memory's words: each
    descriptor's bits, low first, in :attr:`OverlayConfig.program_word_count` words of
    :attr:`OverlayConfig.program_word_bits`."""
    layout, count, width = descriptor_layout(cfg), cfg.program_word_count, cfg.program_word_bits
    words = []
    for desc in descriptors:
        bits = layout.const(desc).as_value().value
        words += [bits >> (width * i) & ((1 << width) - 1) for i in range(count)]
    return words


class Sequencer(wiring.Component):
    """A layer's step nest and the addresses it reads: for each output position (row ``oy``, column
    ``ox``), each group ``g``, each step ``c`` (a kernel tap's word: kernel row ``ky``, column ``kx``,
    word ``cc`` of the pixel; a pool's groups are the pixel's words and its steps the taps) and each of
    the step's ``ratio`` port words ``sub``.

    ``start`` (one cycle) puts it at the first step of the layer ``init`` describes (the descriptor being
    latched; only its base fields are read), which ``desc`` holds from the next cycle on; each ``step``
    moves it to the next port word. Outputs describe the current one: ``act_addr`` (the word
    within the bank; 0 for a padding tap, ``pad``), ``w_addr``, ``sub``, ``first``/``last`` (the group's
    first and last step), ``last_cc`` (the pixel's last word: lanes past its channels are 0), ``final``
    (the layer's last port word). The window registers exist only in an overlay built with ``conv``;
    without it a layer is one position of ``kc`` chunks read in order. ``tests/test_overlay.py`` holds
    the sequences equal to a Python model; ``tests/test_formal_overlay.py`` proves the addresses stay
    inside the bank and the layer's weights for every descriptor the compiler can write.
    """

    def __init__(self, config: OverlayConfig):
        self.config = config
        bank = max(2, config.act_depth)
        super().__init__({
            "desc": In(descriptor_layout(config)), "init": In(descriptor_layout(config)), "start": In(1),
            "step": In(1),
            "act_addr": Out(range(bank)), "w_addr": Out(range(config.weight_depth + 1)), "sub": Out(5),
            "pad": Out(1), "first": Out(1), "last": Out(1), "last_cc": Out(1), "final": Out(1),
        })
        # The registers (a formal spec states invariants over them: sim/formal_overlay.py).
        cfg = config
        self.state = {"g": Signal(range(-(-cfg.act_depth * cfg.rows // cfg.cols) + 1), name="g"),
                      "c": Signal(range(cfg.act_depth + 1), name="c"), "sub": Signal(5, name="sub"),
                      "wptr": Signal(range(cfg.weight_depth + 1), name="wptr")}
        # Flags, each a counter at its last value, kept as registers (comparing a counter with a
        # descriptor field minus one is a carry chain: into the FSM's enable it was an 8x8 4-bit
        # board's critical path at 40 MHz): sub == ratio - 1, c == kc - 1, g == groups - 1, and with
        # conv cc == cc_n - 1, kx == kw - 1, ox == ow - 1, oy == oh - 1.
        counters = ("sub", "c", "g") + (("cc", "kx", "ox", "oy") if cfg.conv else ())
        self.flags = {n: Signal(name=f"at_{n}") for n in counters}
        if cfg.conv:
            GB = max(1, cfg.act_depth.bit_length())
            AS = signed(_addr_bits(cfg))
            self.state.update({n: Signal(GB, name=n) for n in ("cc", "kx", "ky", "ox", "oy")})
            self.state.update({n: Signal(AS, name=n) for n in ("iy", "ix", "iy0", "ix0", "a_addr", "win",
                                                                "row_win", "grp")})

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.config, self.desc
        g, c, sub, wptr = (self.state[n] for n in ("g", "c", "sub", "wptr"))
        at = self.flags
        end_word = at["sub"]
        end_group = end_word & at["c"]
        end_pos = end_group & at["g"]
        m.d.comb += [self.w_addr.eq(wptr), self.sub.eq(sub), self.first.eq(c == 0), self.last.eq(at["c"])]
        first = self.init
        with m.If(self.start):
            m.d.sync += [g.eq(0), c.eq(0), sub.eq(0), wptr.eq(first.w_base),
                         at["sub"].eq(first.ratio == 1), at["c"].eq(first.kc == 1), at["g"].eq(first.groups == 1)]
        with m.Elif(self.step):
            m.d.sync += [wptr.eq(wptr + 1), sub.eq(Mux(end_word, 0, sub + 1)),
                         at["sub"].eq(Mux(end_word, d.ratio == 1, sub + 2 == d.ratio))]
            with m.If(end_word):
                m.d.sync += [c.eq(Mux(end_group, 0, c + 1)), at["c"].eq(Mux(end_group, d.kc == 1, c + 2 == d.kc))]
            with m.If(end_group):
                m.d.sync += [g.eq(Mux(end_pos, 0, g + 1)), at["g"].eq(Mux(end_pos, d.groups == 1, g + 2 == d.groups))]
        if not cfg.conv:
            m.d.comb += [self.act_addr.eq(c), self.last_cc.eq(at["c"]), self.final.eq(end_pos)]
            return m

        # -- the window: origin, kernel position, input row and column, padding ---------------------
        cc, kx, ky, ox, oy, iy, ix, iy0, ix0, a_addr, win, row_win, grp = (
            self.state[n] for n in ("cc", "kx", "ky", "ox", "oy", "iy", "ix", "iy0", "ix0", "a_addr", "win",
                                    "row_win", "grp"))
        last_x, last_y, last_cc, last_kx = at["ox"], at["oy"], at["cc"], at["kx"]
        m.d.comb += [self.pad.eq((iy < 0) | (iy >= d.in_h) | (ix < 0) | (ix >= d.in_w)),
                     self.act_addr.eq(Mux(self.pad, 0, a_addr.as_unsigned())),
                     self.last_cc.eq(last_cc), self.final.eq(end_pos & last_x & last_y)]
        with m.If(self.start):
            m.d.sync += [cc.eq(0), kx.eq(0), ky.eq(0), ox.eq(0), oy.eq(0), iy.eq(-first.ph), iy0.eq(-first.ph),
                         ix.eq(-first.pw), ix0.eq(-first.pw), a_addr.eq(first.origin), win.eq(first.origin),
                         row_win.eq(first.origin), grp.eq(first.origin),
                         last_cc.eq(first.cc_n == 1), last_kx.eq(first.kw == 1), last_x.eq(first.ow == 1),
                         last_y.eq(first.oh == 1)]
        with m.Elif(self.step & end_pos):
            # the next output position: the same weights again, the next window
            m.d.sync += [cc.eq(0), kx.eq(0), ky.eq(0), wptr.eq(d.w_base), last_cc.eq(d.cc_n == 1),
                         last_kx.eq(d.kw == 1)]
            with m.If(last_x):
                nxt = row_win + d.row_adv
                m.d.sync += [ox.eq(0), oy.eq(oy + 1), ix0.eq(-d.pw), ix.eq(-d.pw), iy0.eq(iy0 + d.sh),
                             iy.eq(iy0 + d.sh), row_win.eq(nxt), win.eq(nxt), grp.eq(nxt), a_addr.eq(nxt),
                             last_x.eq(d.ow == 1), last_y.eq(oy + 2 == d.oh)]
            with m.Else():
                nxt = win + d.col_adv
                m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + d.sw), ix.eq(ix0 + d.sw), iy.eq(iy0), win.eq(nxt),
                             grp.eq(nxt), a_addr.eq(nxt), last_x.eq(ox + 2 == d.ow)]
        with m.Elif(self.step & end_group):
            nxt = grp + d.grp_step
            m.d.sync += [cc.eq(0), kx.eq(0), ky.eq(0), ix.eq(ix0), iy.eq(iy0), grp.eq(nxt), a_addr.eq(nxt),
                         last_cc.eq(d.cc_n == 1), last_kx.eq(d.kw == 1)]
        with m.Elif(self.step & end_word):
            # the next tap: word of the pixel, kernel column, kernel row
            with m.If(~last_cc):
                m.d.sync += [cc.eq(cc + 1), a_addr.eq(a_addr + 1), last_cc.eq(cc + 2 == d.cc_n)]
            with m.Elif(~last_kx):
                m.d.sync += [cc.eq(0), kx.eq(kx + 1), ix.eq(ix + 1), a_addr.eq(a_addr + d.step_kx),
                             last_cc.eq(d.cc_n == 1), last_kx.eq(kx + 2 == d.kw)]
            with m.Else():
                m.d.sync += [cc.eq(0), kx.eq(0), ix.eq(ix0), ky.eq(ky + 1), iy.eq(iy + 1),
                             a_addr.eq(a_addr + d.step_ky), last_cc.eq(d.cc_n == 1), last_kx.eq(d.kw == 1)]
        return m


class OverlayEngine(wiring.Component):
    """One array for every layer (see the module docstring).

    Parameters
    ----------
    config : OverlayConfig
    program : list of dict
        Descriptors (:func:`descriptor_layout` fields), at most ``config.max_layers`` (empty: the
        memories start empty and a model is loaded through the load port).
    weights, params : list of int
        Initial contents of the weight and parameter memories.

    Attributes
    ----------
    i, o : streams
    mac_cycles : Signal(32), out
        Cycles in which the array accumulated a step.
    ld_sel, ld_space, ld_addr, ld_lane, ld_data, ld_we, ld_re : in
        The load port (the host link's): while ``ld_sel`` is high it owns the program, weight and
        parameter memories (``ld_space`` 1, 2, 3 as :data:`lowbit.sw.link.frames.SPACES`): ``ld_we``
        writes the byte ``ld_data`` into byte lane ``ld_lane`` of word ``ld_addr``; ``ld_re`` reads word
        ``ld_addr``, and from the next cycle on ``ld_rdata`` is its byte ``ld_lane`` of the space
        ``ld_space`` names (the word is held until the next read). The engine must be idle (held in
        reset) meanwhile.
    ld_rdata : out
    """

    def __init__(self, config: OverlayConfig, program, weights, params):
        if len(program) > config.max_layers:
            raise ValueError(f"a program of {len(program)} layers does not fit max_layers={config.max_layers}")
        if len(weights) > config.weight_depth or len(params) > config.param_depth:
            raise ValueError("the weights or parameters do not fit the overlay's memories")
        if config.wide and not (program and program[0].get("wide")):
            raise ValueError("a wide back end takes its thresholds from a program whose layer 0 is wide")
        self.config = config
        self.program, self.weights, self.params = list(program), list(weights), list(params)
        super().__init__({
            "i": In(stream.Signature(unsigned(config.act_bits))),
            "o": Out(stream.Signature(signed(config.out_bits))),
            "mac_cycles": Out(32),
            "ld_sel": In(1), "ld_space": In(SPACE_BITS), "ld_addr": In(config.load_addr_bits),
            "ld_lane": In(config.load_lane_bits), "ld_data": In(8), "ld_we": In(1), "ld_re": In(1),
            "ld_rdata": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, A, P = cfg.rows, cfg.cols, cfg.act_bits, cfg.port_bits
        RM = cfg.ratio_max
        desc_shape = descriptor_layout(cfg)

        # Loadable: the program in 32-bit words of block RAM (a descriptor of ~100 bits would take
        # several block RAMs side by side, or as many flip-flops once it is writable). Else one word a
        # descriptor in logic, which synthesis folds with the fields that are the same in every layer.
        PW, PB = cfg.program_word_count, cfg.program_word_bits
        m.submodules.prog = prog = Memory(
            shape=unsigned(PB), depth=cfg.program_depth, init=program_words(cfg, self.program),
            attrs=BLOCK_RAM if cfg.loadable else {"ram_style": "logic"})
        # Block RAM even when shallow (Yosys put a 32x1 array's 4 words of 128 bits in 512 flip-flops, about
        # 1200 logic cells the planner counts as block RAMs, and its write enable was that board's critical path).
        m.submodules.act = act = Memory(shape=unsigned(R * A), depth=2 * cfg.act_depth, init=[], attrs=BLOCK_RAM)
        preload = cfg.in_depth > 0
        if preload:
            # The input memory: two halves of one input each, written from `i` while the layers run (its
            # own write port: the activation memory's is the write-back's).
            m.submodules.inm = inm = Memory(shape=unsigned(R * A), depth=2 * cfg.in_depth, init=[], attrs=BLOCK_RAM)
            in_w, in_r = inm.write_port(), inm.read_port()
        spram = cfg.weight_store == "spram"
        if spram:
            # One address for reads and writes: SB_SPRAM256KA blocks on an iCE40 UltraPlus.
            m.submodules.wmem = wram = SinglePortRAM(P, cfg.weight_depth)
        else:
            m.submodules.wmem = wmem = Memory(shape=unsigned(P), depth=cfg.weight_depth,
                                              init=self.weights, attrs=BLOCK_RAM)
        m.submodules.pmem = pmem = Memory(shape=unsigned(cfg.word_bits(3)), depth=cfg.param_depth,
                                          init=self.params, attrs=BLOCK_RAM)
        prog_r = prog.read_port()
        act_w = act.write_port()
        act_r = act.read_port()
        w_r = SimpleNamespace(addr=wram.addr, en=wram.ren, data=wram.rdata) if spram else wmem.read_port()
        p_r = pmem.read_port()
        # The load port writes each memory at the address it reads (one address per memory, so a
        # single-port RAM such as an iCE40 SPRAM can hold it).
        reads = {1: prog_r, 2: w_r, 3: p_r}
        writes = {}
        if cfg.loadable:
            writes = {1: prog.write_port(granularity=8),
                      2: SimpleNamespace(addr=None, data=wram.wdata, en=wram.wen) if spram
                      else wmem.write_port(granularity=8),
                      3: pmem.write_port(granularity=8)}
        for space, wp in writes.items():
            lanes = cfg.word_bits(space) // 8
            if wp.addr is not None:
                m.d.comb += wp.addr.eq(reads[space].addr)
            m.d.comb += [wp.data.eq(self.ld_data.replicate(lanes)),
                         wp.en.eq(Mux(self.ld_sel & self.ld_we & (self.ld_space == space),
                                      Const(1, lanes) << self.ld_lane, 0))]
        # The byte of the word read before, selected by the space and lane the port names now (the
        # engine is held in reset while it is loaded, so it keeps no register of its own for this).
        with m.Switch(self.ld_space):
            for space, rp in reads.items():
                with m.Case(space):
                    if cfg.loadable:
                        m.d.comb += self.ld_rdata.eq(rp.data.word_select(self.ld_lane, 8))

        d = Signal(desc_shape)                 # the running layer's descriptor
        layer = Signal(range(max(cfg.max_layers, 2)))
        in_bank = Signal()
        # The next layer's descriptor is read while this one runs: from the cycle after a layer is
        # latched, its successor's PW words are read one a cycle (the first PW - 1 kept in `pre`, the last
        # held on the read port), so the next layer starts one cycle after this one's last output
        # (the descriptor ready by then: `pf == PW`).
        next_base = Signal(range(max(cfg.program_depth, 2)))   # the next layer's first program word
        pf = Signal(range(PW + 1))              # its program words read so far
        pre = [Signal(PB, name=f"pre{i}") for i in range(PW - 1)]
        m.d.comb += [prog_r.addr.eq(next_base + Mux(pf == PW, PW - 1, pf)), prog_r.en.eq(1)]
        with m.If(pf != PW):
            m.d.sync += pf.eq(pf + 1)
        for i in range(PW - 1):
            with m.If(pf == i + 1):
                m.d.sync += pre[i].eq(prog_r.data)
        fetched = Signal(desc_shape)
        m.d.comb += fetched.eq(Cat(*pre, prog_r.data))

        # -- sequencer: the step nest and its addresses ----------------------------------------------
        m.submodules.seq = seq = Sequencer(cfg)
        m.d.comb += [seq.desc.eq(d), seq.init.eq(fetched)]
        advance = Signal()
        issue = Signal()                        # this cycle reads memories for the front end
        done_n = Signal(range(cfg.act_depth * cfg.rows + 1))   # outputs of this layer written back / sent
        out_fire = Signal()

        # requantizer read-out and write-back positions within the layer
        ch = Signal(range(cfg.act_depth * cfg.rows + 1))       # channel of the element entering the requantizer
        j = Signal(range(max(C, 2)))            # its column in the result slot
        # Registered flags: the slot being read is the layer's (position's) last group, and j its last
        # column (rg == groups - 1 and j == n_last - 1 or C - 1, as compares an 8x8 4-bit board's critical
        # path at 40 MHz into the slot's release).
        rg_last, j_last = Signal(name="rg_last"), Signal(name="j_last")
        rg = Signal(range(-(-cfg.act_depth * R // C) + 1))   # group of the slot being read out
        wb_lane = Signal(range(max(R, 2)))
        wb_word = Signal(range(cfg.act_depth + 1))

        conv = cfg.conv
        if conv:
            wb_ch = Signal(range(cfg.act_depth * cfg.rows + 1))
            ld_c = Signal(range(cfg.act_depth * cfg.rows + 1))

        # The back end (requantizer, write-back) runs the layer `b` describes: `d`'s, except while the last
        # layer's outputs drain (`b_last`) with the front end already on layer 0 of the next inference,
        # whose input is in the input memory; the back end then keeps the last layer's fields (constants of
        # a fixed program, registers of a loadable one). Its channels taken, `b_all` holds the requantizer
        # off the next layer's result slots until then.
        back = back_fields(cfg)
        b_last, b_all = Signal(), Signal()
        # channels of the layer taken (a Dense layer's `ch`; a Conv2d layer's `ch` restarts each position)
        tk = Signal.like(done_n) if conv else ch
        kept = kept_fields(cfg, self.program) if preload else ()
        if preload and cfg.loadable:
            lastd = Signal(data.StructLayout({f: desc_shape[f].shape for f in back}))
            last_of = lambda f: lastd[f]
        elif preload:
            final = self.program[-1] if self.program else {}
            last_of = lambda f: Const(final.get(f, 0), desc_shape[f].shape)
        b = SimpleNamespace(**{f: Mux(b_last, last_of(f), d[f]) if f in kept else d[f] for f in back},
                            last=b_last | d.last)
        b_total = b.outs if conv else b.n
        b_done = Signal()
        m.d.comb += b_done.eq(done_n == b_total)

        def back_start(desc):
            """The back end at the start of layer ``desc`` (its counters and last-group flags)."""
            m.d.sync += [done_n.eq(0), ch.eq(0), j.eq(0), rg.eq(0), wb_lane.eq(0), wb_word.eq(0), b_all.eq(0),
                         rg_last.eq(desc.groups == 1), j_last.eq(Mux(desc.groups == 1, desc.n_last == 1, C == 1))]
            if conv:
                m.d.sync += [wb_ch.eq(0), tk.eq(0)]

        if preload:
            with m.If(b_last & b_done):         # the last layer's outputs are out: on to layer 0
                m.d.sync += b_last.eq(0)
                back_start(d)

        # input load
        ld_k = Signal(range(cfg.act_depth * cfg.rows + 1))
        ld_lane = Signal(range(max(R, 2)))
        ld_word = Signal(range(cfg.act_depth + 1))
        ld_asm = Signal(data.ArrayLayout(unsigned(A), R))
        if preload:
            # The half being written and the half layer 0 reads; which hold an input; the input's length
            # (and channels a pixel), the first layer's, latched with it.
            wr_half, rd_half, in_full = Signal(), Signal(), Signal(2)
            in_known, in_k = Signal(), Signal.like(ld_k)
            in_cin = Signal.like(ld_c) if conv else None
            first_layer = Signal()              # the running layer reads the input memory
            release = Signal()                  # layer 0 read its input for the last time
            in_ready = in_full.bit_select(rd_half, 1)      # layer 0's input is in its half

        if cfg.patch:
            # The patch loader: the last (kh-1) rows and kw pixels of codes in a shift register; a code
            # that completes a window (its pixel's last channel, at least kh-1 rows and kw-1 columns
            # in) writes that window's taps as one word, in (kernel row, column, channel) order.
            img_w, pcin, pkh, pkw = cfg.patch
            hist = [Signal(A, name=f"lb{i}") for i in range((pkh - 1) * img_w * pcin + pkw * pcin - 1)]
            # (at least one bit each: a zero-width register is an empty vector in Verilog)
            px, prow, pc = (Signal(range(max(v, 2)), name=n) for v, n in ((img_w, "px"), (pkh, "prow"), (pcin, "pc")))
            back_of = lambda o: self.i.payload if o == 0 else hist[o - 1]   # o codes before the current
            taps = [back_of((pkh - 1 - ky) * img_w * pcin + (pkw - 1 - kx) * pcin + (pcin - 1 - c))
                    for ky in range(pkh) for kx in range(pkw) for c in range(pcin)]

        def take_patch(k, base):
            port = in_w if preload else act_w
            m.d.sync += [hist[0].eq(self.i.payload)] + [hist[i].eq(hist[i - 1]) for i in range(1, len(hist))]
            emit = (pc == pcin - 1) & (px >= pkw - 1) & (prow == pkh - 1)
            m.d.comb += [port.addr.eq(base + ld_word), port.en.eq(emit), port.data.eq(Cat(*taps))]
            m.d.sync += [ld_k.eq(ld_k + 1), ld_word.eq(ld_word + emit), pc.eq(Mux(pc == pcin - 1, 0, pc + 1))]
            with m.If(pc == pcin - 1):
                m.d.sync += px.eq(Mux(px == img_w - 1, 0, px + 1))
                with m.If((px == img_w - 1) & (prow != pkh - 1)):
                    m.d.sync += prow.eq(prow + 1)
            last = ld_k == k - 1
            with m.If(last):
                m.d.sync += [px.eq(0), prow.eq(0), pc.eq(0)]
            return last

        def take_input(k, cin, base):
            """The code on ``i`` into the word being assembled (a word holds one pixel's ``cin`` channels
            (conv), or ``R`` codes of a vector), a closed word written at ``base`` + its index; returns
            whether it is the input's last (of ``k``)."""
            if cfg.patch:
                return take_patch(k, base)
            closing = (ld_lane == R - 1) | ((ld_c == cin - 1) if conv else (ld_k == k - 1))
            port = in_w if preload else act_w
            m.d.sync += [ld_asm[r].eq(Mux(ld_lane == r, self.i.payload, ld_asm[r])) for r in range(R)]
            m.d.comb += [port.addr.eq(base + ld_word), port.en.eq(closing),
                         port.data.eq(Cat(*(Mux(ld_lane == r, self.i.payload, ld_asm[r]) for r in range(R))))]
            m.d.sync += ld_k.eq(ld_k + 1)
            if conv:
                m.d.sync += ld_c.eq(Mux(ld_c == cin - 1, 0, ld_c + 1))
            with m.If(closing):
                m.d.sync += [ld_lane.eq(0), ld_word.eq(ld_word + 1)]
            with m.Else():
                m.d.sync += ld_lane.eq(ld_lane + 1)
            return ld_k == k - 1

        if preload:
            # The loader: an input into the free half, then the other; layer 0 frees a half once it has
            # read it for the last time.
            room = in_known & ~in_full.bit_select(wr_half, 1)
            filled = Signal()
            m.d.comb += self.i.ready.eq(room)
            with m.If(self.i.valid & room):
                with m.If(take_input(in_k, in_cin, Mux(wr_half, cfg.in_depth, 0))):
                    m.d.comb += filled.eq(1)
                    m.d.sync += [ld_k.eq(0), ld_word.eq(0), wr_half.eq(~wr_half)]
            m.d.sync += in_full.eq((in_full | Cat(filled & ~wr_half, filled & wr_half))
                                   & ~Cat(release & ~rd_half, release & rd_half))
            with m.If(release):
                m.d.sync += rd_half.eq(~rd_half)

        if not preload:
            # Without the input memory the input loads into bank 0: in LOAD, or from the last layer's DRAIN
            # of the inference before (`loading_early`; in the cycle model `_load_while_draining`, in
            # lowbit.sw.flow.overlay); `in_done`: all of it came then, and layer 0 runs once latched.
            loading, loading_early, loaded, in_done = Signal(), Signal(), Signal(), Signal()
            first = SimpleNamespace(k=Mux(loading, d.k, fetched.k),
                                    cin=Mux(loading, d.cin, fetched.cin) if conv else None)
            m.d.comb += self.i.ready.eq(loading | loading_early)
            with m.If(self.i.valid & (loading | loading_early)):
                with m.If(take_input(first.k, first.cin, 0)):
                    m.d.comb += loaded.eq(1)
                    m.d.sync += [ld_k.eq(0), ld_lane.eq(0), ld_word.eq(0), in_done.eq(loading_early)]
                    if conv:
                        m.d.sync += ld_c.eq(0)

        with m.FSM(name="seq"):
            with m.State("FETCH"):              # after reset: the first descriptor
                with m.If(pf == PW):
                    m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += seq.start.eq(1)
                m.d.sync += [d.eq(fetched), pf.eq(0), next_base.eq(Mux(fetched.last, 0, next_base + PW))]
                with m.If(b_done):
                    back_start(seq.init)
                if preload:                     # the last layer still draining (DRAIN let it latch early)
                    with m.Else():
                        m.d.sync += b_last.eq(1)
                        if cfg.loadable:
                            m.d.sync += [lastd[f].eq(d[f]) for f in back]
                    m.d.sync += first_layer.eq(layer == 0)
                with m.If(layer == 0):
                    m.d.sync += in_bank.eq(0)
                    if preload:
                        m.d.sync += [in_known.eq(1), in_k.eq(fetched.k)]
                        if conv:
                            m.d.sync += in_cin.eq(fetched.cin)
                        with m.If(in_ready):
                            m.next = "RUN"
                        with m.Else():
                            m.next = "LOAD"
                    else:
                        # the input (or its start) may have come while the last layer drained
                        with m.If(in_done):
                            m.d.sync += in_done.eq(0)
                            m.next = "RUN"
                        with m.Else():
                            m.next = "LOAD"
                with m.Else():
                    m.next = "RUN"
            with m.State("LOAD"):               # the input being loaded (preload: being waited for)
                if preload:
                    with m.If(in_ready):
                        m.next = "RUN"
                else:
                    m.d.comb += loading.eq(1)
                    with m.If(loaded):
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [issue.eq(advance), seq.step.eq(advance)]
                with m.If(advance & seq.final):
                    m.next = "DRAIN"
                    if preload:
                        m.d.comb += release.eq(first_layer)
            with m.State("DRAIN"):
                # the next layer waits for this one's outputs, but layer 0 (not a pool) only for its descriptor
                early = (d.last & ~fetched.pool if conv else d.last) if preload else 0
                with m.If((b_done | early) & ~b_last & (pf == PW)):
                    m.d.sync += [in_bank.eq(~in_bank), layer.eq(Mux(d.last, 0, layer + 1))]
                    m.next = "LATCH"
                if not preload:
                    # The last layer's steps are issued, so it reads no activation word again and its
                    # outputs leave through `o`: the next input loads into bank 0 (layer 0's descriptor
                    # prefetched) while they drain. A pool or wide layer writes back; neither is last.
                    m.d.comb += loading_early.eq(d.last & (pf == PW) & ~in_done
                                                 & ((~d.pool & ~d.wide) if cfg.wide else ~d.pool if conv else 1))

        # -- front end: activation chunk and weight port word, one cycle after the issue -------------
        m.d.comb += [act_r.addr.eq(Mux(in_bank, cfg.act_depth, 0) + seq.act_addr), act_r.en.eq(advance),
                     w_r.addr.eq(seq.w_addr), w_r.en.eq(advance & (~d.pool if conv else 1))]
        if preload:
            m.d.comb += [in_r.addr.eq(Mux(rd_half, cfg.in_depth, 0) + seq.act_addr), in_r.en.eq(advance)]
        with m.If(self.ld_sel):
            for space, rp in reads.items():
                m.d.comb += [rp.addr.eq(self.ld_addr), rp.en.eq(self.ld_re & (self.ld_space == space))]

        # A step carries its layer's operand formats to the decoders: the next layer's descriptor may be
        # latched while the last step waits there (the array stalled for a result slot, layer 0 started early).
        own = {f: desc_shape[f].shape for f in ("act_fmt", "w_fmt", "k_last", *(("pad",) if conv else ()))}
        s1 = Signal(data.StructLayout({"fetch": 1, "step": 1, "first": 1, "last": 1, "sub": 5, "pad": 1,
                                       "last_cc": 1, "inp": 1, "d": data.StructLayout(own)}))
        with m.If(advance):
            m.d.sync += [s1.fetch.eq(issue), s1.step.eq(issue & (seq.sub == d.ratio - 1) & (~d.pool if conv else 1)),
                         s1.first.eq(seq.first), s1.last.eq(seq.last), s1.sub.eq(seq.sub), s1.pad.eq(seq.pad),
                         s1.last_cc.eq(seq.last_cc), s1.inp.eq(first_layer if preload else 0),
                         *(s1.d[f].eq(d[f]) for f in own)]
        # the step's activation word: from the input memory for layer 0 (preload), else from the bank
        act_data = Mux(s1.inp, in_r.data, act_r.data) if preload else act_r.data
        asm = [Signal(P, name=f"wasm{i}") for i in range(RM)]
        with m.If(advance & s1.fetch):
            for i in range(RM):
                with m.If(s1.sub == i):
                    m.d.sync += asm[i].eq(w_r.data)
        # The step's last port word comes straight from the memory; only positions where some format's
        # array word ends need that choice, the rest are the words gathered before.
        ends = {cfg.ratio(bits) - 1 for bits, _ in cfg.weight_formats}
        word = Cat(*(w_r.data if i == RM - 1 else Mux(s1.sub == i, w_r.data, asm[i]) if i in ends else asm[i]
                     for i in range(RM)))

        # -- operand decoders ---------------------------------------------------------------------
        acfg = cfg.array_config
        m.submodules.array = array = MacArray(acfg)
        for r in range(R):
            lane = act_data[r * A:(r + 1) * A]
            value = Const(0, signed(cfg.x_bits))
            for f, (bits, is_signed, binary) in enumerate(cfg.act_formats):
                if binary:
                    dec = Mux(lane[0], 1, -1)
                elif is_signed:
                    dec = lane[:bits].as_signed()
                else:                       # u - 2**(bits-1): the MSB flipped (the offset is in the bias)
                    dec = (lane[:bits] ^ Const(1 << (bits - 1), bits)).as_signed()
                value = Mux(s1.d.act_fmt == f, dec, value)
            # Lanes past a pixel's channels are 0 (a ±1 weight there is not); a padding tap is the
            # zero point, decoded.
            live = ~s1.last_cc | (r < s1.d.k_last)
            if conv:
                value = Mux(s1.pad, s1.d.pad, value)
            m.d.comb += array.x[r].eq(Mux(live, value, 0))
            for col in range(C):
                wv = Const(0, signed(cfg.w_bits))
                for f, (bits, binary) in enumerate(cfg.weight_formats):
                    off = (r * C + col) * bits
                    field = word[off:off + bits]
                    dec = Mux(field[0], 1, -1) if binary else field.as_signed()
                    wv = Mux(s1.d.w_fmt == f, dec, wv)
                m.d.comb += array.w[r][col].eq(wv)
        m.d.comb += array.en.eq(advance)
        s2 = delay_line(m, s1, array.latency, advance, "flags", s1.shape())

        # -- accumulators and the two result slots (as in DenseEngine) ------------------------------
        acc_shape = signed(cfg.acc_bits)
        acc = [Signal(acc_shape, name=f"acc{col}") for col in range(C)]
        slots = [[Signal(acc_shape, name=f"res{k}_{col}") for col in range(C)] for k in range(2)]
        full = Signal(2)
        wsel, rsel = Signal(), Signal()
        res_set, res_clr = Signal(), Signal()
        m.d.sync += full.eq((full & ~(res_clr << rsel)) | (res_set << wsel))
        with m.If(res_clr):
            m.d.sync += rsel.eq(~rsel)
        m.d.comb += advance.eq(~(s2.step & s2.last & full.bit_select(wsel, 1)))
        with m.If(advance & s2.step):
            m.d.sync += self.mac_cycles.eq(self.mac_cycles + 1)
            sums = [Mux(s2.first, 0, acc[col]) + array.sums[col] for col in range(C)]
            with m.If(s2.last):
                for k in range(2):
                    with m.If(wsel == k):
                        m.d.sync += [slot.eq(v) for slot, v in zip(slots[k], sums)]
                m.d.sync += wsel.eq(~wsel)
                m.d.comb += res_set.eq(1)
            with m.Else():
                m.d.sync += [a.eq(v) for a, v in zip(acc, sums)]

        # -- requantizer: one channel per cycle, parameters from the parameter memory --------------
        out_valid = Signal()
        out_y = Signal(signed(cfg.out_bits))
        out_ready = Signal()
        radv = Signal()
        m.d.comb += radv.eq(~out_valid | out_ready)
        res_full = full.bit_select(rsel, 1)
        # The channel being taken, slot rsel column j: a balanced tree of 2:1 selects (an If chain over the
        # columns was the critical path of an 8x8 4-bit board at 40 MHz, eight logic levels deep).
        pad = lambda slot: slot + [slot[-1]] * ((1 << len(j)) - C)
        cur = Signal(acc_shape)
        m.d.comb += cur.eq(select_tree(pad(slots[0]) + pad(slots[1]), Cat(j, rsel)))
        if cfg.wide:
            # a wide layer's slots (layer 0's, once the last layer before it has drained) go to the wide back end
            wide_on = d.wide & ~b_last
            wtake = Signal()
            m.d.comb += wtake.eq(res_full & wide_on & ~b_all)
            take = res_full & radv & ~b_all & ~wide_on
            slot_clr = (take & j_last) | wtake
        else:
            # (no logic of the wide back end at all: an overlay without it is the very netlist it was before)
            take = res_full & radv & ~b_all
            slot_clr = take & j_last
        m.d.comb += [p_r.addr.eq(b.p_base + ch), p_r.en.eq(radv), res_clr.eq(slot_clr)]
        with m.If(self.ld_sel):
            m.d.comb += [p_r.addr.eq(self.ld_addr), p_r.en.eq(self.ld_re & (self.ld_space == 3))]
        with m.If(take):
            m.d.sync += ch.eq(ch + 1)
            if conv:
                m.d.sync += tk.eq(tk + 1)
            with m.If(tk == b_total - 1):
                m.d.sync += b_all.eq(1)
            with m.If(j_last):
                next_last = Mux(rg_last, b.groups == 1, rg + 2 == b.groups)
                m.d.sync += [j.eq(0), rg.eq(rg + 1), rg_last.eq(next_last),
                             j_last.eq(Mux(next_last, b.n_last == 1, C == 1))]
                if conv:                    # the position's last group: the next one starts at channel 0
                    with m.If(rg_last):
                        m.d.sync += [rg.eq(0), ch.eq(0)]
            with m.Else():
                m.d.sync += [j.eq(j + 1), j_last.eq(Mux(rg_last, j + 2 == b.n_last, j + 2 == C))]
        r1_valid, r1_val = Signal(), Signal(acc_shape)
        with m.If(radv):
            m.d.sync += [r1_valid.eq(take), r1_val.eq(cur)]
        # stage 2: fields, bias
        rec = param_layout(cfg)(p_r.data[:cfg.param_bits])
        r2_valid, r2_total = Signal(), Signal(signed(cfg.acc_bits + 1))
        r2_mult = Signal(cfg.mult_bits)
        r2_shift = Signal(SHIFT_BITS)
        r2_thr = [Signal(signed(cfg.field_bits), name=f"r2_t{i}") for i in range(cfg.max_thresholds)]
        with m.If(radv):
            m.d.sync += [r2_valid.eq(r1_valid), r2_total.eq(r1_val + rec.requant.bias),
                         r2_mult.eq(rec.requant.mult), r2_shift.eq(rec.requant.shift)]
            m.d.sync += [r2_thr[i].eq(rec.thresholds.t[i]) for i in range(cfg.max_thresholds)]
        # stage 3: product (requant) or threshold count, and the rounding constant
        prod_bits = cfg.acc_bits + 1 + cfg.mult_bits + 1
        r3_valid, r3_prod = Signal(), Signal(signed(prod_bits))
        r3_shift = Signal(SHIFT_BITS)
        r3_half = Signal(prod_bits + 1)
        r3_count = Signal(range(max(cfg.max_thresholds + 1, 2)))
        r3_total = Signal(signed(cfg.acc_bits + 1))
        reached = [(r2_total >= r2_thr[i]) & (i < b.n_thr) for i in range(cfg.max_thresholds)]
        with m.If(radv):
            m.d.sync += [r3_valid.eq(r2_valid), r3_prod.eq(r2_total * r2_mult), r3_shift.eq(r2_shift),
                         r3_half.eq(Mux(r2_shift == 0, 0, Const(1, prod_bits + 1) << (r2_shift - 1)[:SHIFT_BITS])),
                         r3_count.eq(tree_sum(reached) if reached else 0), r3_total.eq(r2_total)]
        # stage 4: round half up (arith.round_shift); scale the count
        r4_valid, r4_round = Signal(), Signal(signed(prod_bits + 1))
        r4_y = Signal(signed(cfg.out_bits))
        with m.If(radv):
            m.d.sync += [r4_valid.eq(r3_valid), r4_round.eq((r3_prod + r3_half) >> r3_shift),
                         r4_y.eq(Mux(b.mode == MODES["thresholds"], b.out_lo + b.out_step * r3_count, r3_total))]
        # stage 5: the rounded value saturated to SAT_BITS (exact: every value past it clamps the same; no
        # long carry chain after the shift's)
        r5_valid, r5_sat = Signal(), Signal(signed(SAT_BITS))
        r5_y = Signal(signed(cfg.out_bits))
        top = r4_round[SAT_BITS - 1:]
        sat = Mux(top.all() | ~top.any(), r4_round[:SAT_BITS].as_signed(),
                  Mux(r4_round[-1], Const(-(1 << (SAT_BITS - 1)), signed(SAT_BITS)),
                      Const((1 << (SAT_BITS - 1)) - 1, signed(SAT_BITS))))
        with m.If(radv):
            m.d.sync += [r5_valid.eq(r4_valid), r5_sat.eq(sat), r5_y.eq(r4_y)]
        # stage 6: zero point and clamp (requant), or the value of stage 4
        yq = Signal(signed(SAT_BITS + 1))
        m.d.comb += yq.eq(r5_sat + b.zero_point)
        clamped = Mux(yq < b.lo, b.lo, Mux(yq > b.hi, b.hi, yq))
        with m.If(radv):
            m.d.sync += [out_valid.eq(r5_valid), out_y.eq(Mux(b.mode == MODES["requant"], clamped, r5_y))]

        if cfg.wide:
            self._wide_back_end(m, slots, rsel, wtake, tk, b_all, b_total, done_n, act_w, in_bank, wb_word)

        # -- outputs: the last layer's leave through `o`; the others are packed into the other bank --
        m.d.comb += out_fire.eq(out_valid & out_ready)
        with m.If(out_fire):
            m.d.sync += done_n.eq(done_n + 1)
        wb_asm = Signal(data.ArrayLayout(unsigned(A), R))
        code = Mux(b.out_binary, out_y > 0, out_y[:A])
        with m.If(b.last):
            m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.eq(out_y), out_ready.eq(self.o.ready)]
        with m.Else():
            m.d.comb += out_ready.eq(1)
            with m.If(out_fire):
                if conv:                    # a word holds one pixel's channels
                    closing = (wb_lane == R - 1) | (wb_ch == b.wb_n - 1)
                    m.d.sync += wb_ch.eq(Mux(wb_ch == b.wb_n - 1, 0, wb_ch + 1))
                else:
                    closing = (wb_lane == R - 1) | (done_n == b.n - 1)
                m.d.sync += [wb_asm[r].eq(Mux(wb_lane == r, code, wb_asm[r])) for r in range(R)]
                m.d.comb += [act_w.addr.eq(Mux(in_bank, 0, cfg.act_depth) + wb_word), act_w.en.eq(closing),
                             act_w.data.eq(Cat(*(Mux(wb_lane == r, code, wb_asm[r]) for r in range(R))))]
                with m.If(closing):
                    m.d.sync += [wb_lane.eq(0), wb_word.eq(wb_word + 1)]
                with m.Else():
                    m.d.sync += wb_lane.eq(wb_lane + 1)
        # -- MaxPool (conv): the lane-wise max of a window's words, written once the window is read ---
        if conv:
            pmax = Signal(R * A)
            word_in = act_data
            lanes = []
            for r in range(R):
                a, b = pmax[r * A:(r + 1) * A], word_in[r * A:(r + 1) * A]
                greater = Const(0)
                for f, (bits, is_signed, binary) in enumerate(cfg.act_formats):   # ±1: the bit, 1 = +1
                    gt = (b[:bits].as_signed() > a[:bits].as_signed()) if is_signed and not binary else (b[:bits] > a[:bits])
                    greater = Mux(d.act_fmt == f, gt, greater)
                lanes.append(Mux(greater, b, a))
            pooled = Mux(s1.first, word_in, Cat(*lanes))
            with m.If(advance & s1.fetch & d.pool):
                m.d.sync += pmax.eq(pooled)
                with m.If(s1.last):
                    m.d.comb += [act_w.addr.eq(Mux(in_bank, 0, cfg.act_depth) + wb_word), act_w.en.eq(1),
                                 act_w.data.eq(pooled)]
                    m.d.sync += [wb_word.eq(wb_word + 1), done_n.eq(done_n + 1)]

        # What a testbench watches to check the address sequences against the compiler's layout
        # (tests/test_overlay.py): memory reads issued by the front end and by the requantizer, and the
        # activation words written back.
        self.probes = {"issue": issue, "act_addr": Mux(first_layer, in_r.addr, act_r.addr) if preload else act_r.addr,
                       "from_input": first_layer if preload else Const(0),
                       "in_en": in_w.en if preload else Const(0), "in_addr": in_w.addr if preload else Const(0),
                       "w_addr": w_r.addr,
                       "take": take, "p_addr": p_r.addr, "wb_en": act_w.en, "wb_addr": act_w.addr,
                       "pool": d.pool if conv else Const(0)}
        return m

    def _wide_back_end(self, m, slots, rsel, wtake, tk, b_all, b_total, done_n, act_w, in_bank, wb_word):
        """Layer 0's result slot requantized in one cycle (:attr:`OverlayConfig.wide`): each column's sum
        ``acc`` against its channel's thresholds as constants, ``acc + bias >= t`` as ``acc >= t - bias``
        (from the parameter records the compiler wrote: the arithmetic is the narrow requantizer's), the
        count mapped to its code, and the channels' codes written back the next cycle as one word."""
        cfg, first = self.config, self.program[0]
        R, A = cfg.rows, cfg.act_bits
        records = param_layout(cfg)

        codes = []
        for col in range(first["n"]):
            record = records.from_bits(self.params[first["p_base"] + col]).thresholds
            acc = Mux(rsel, slots[1][col], slots[0][col])
            reached = [acc >= record.t[i] - record.bias for i in range(first["n_thr"])]
            count = tree_sum(reached) if reached else Const(0)
            table = []
            for c in range(first["n_thr"] + 1):
                value = first["out_lo"] + first["out_step"] * c
                table.append(int(value > 0) if first["out_binary"] else value & ((1 << A) - 1))
            code = Const(table[0], A)
            for c in range(1, len(table)):
                code = Mux(count == c, table[c], code)
            codes.append(code)
        wvalid, wword = Signal(), Signal(R * A)
        m.d.sync += wvalid.eq(wtake)
        with m.If(wtake):
            m.d.sync += [wword.eq(Cat(*codes)), tk.eq(tk + 1)]
            with m.If(tk == b_total - 1):
                m.d.sync += b_all.eq(1)
        with m.If(wvalid):
            m.d.comb += [act_w.addr.eq(Mux(in_bank, 0, cfg.act_depth) + wb_word), act_w.en.eq(1), act_w.data.eq(wword)]
            m.d.sync += [wb_word.eq(wb_word + 1), done_n.eq(done_n + 1)]
