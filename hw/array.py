"""The MAC array: ``R x C`` products of one K-chunk, reduced to ``C`` column sums.

:class:`MacArray` is the array the layer engine (:mod:`lowbit.hw.dense`) drives; it is a component of
its own so that it can be simulated, formally checked and synthesised alone. Each cycle with ``en``
high it takes ``R`` activation codes ``x[r]`` and an ``R x C`` weight word ``w[r][j]`` and, ``latency``
enabled cycles later, presents ``sums[j] = sum_r x[r] * w[r][j]`` (in binary mode the number of
agreeing ±1 pairs). Every register advances only on ``en``, so a stall freezes the whole array with its
skew intact. Three reductions, chosen by :class:`~lowbit.hw.config.ArrayConfig`:

* adder tree (default): the ``R`` products of a column, registered when ``product_reg``, summed by a
  balanced tree; latency 1 (0 without ``product_reg``);
* ``systolic``: an ``R x C`` grid of :class:`SystolicPE` passing partial sums down the rows; row ``r``'s
  operands are delayed ``r`` cycles (the input skew) and activations are broadcast along each row;
  latency ``R`` (+1 with ``product_reg``);
* ``systolic_2d``: activations also hop one column per cycle, column ``j``'s weights are delayed
  ``r + j`` and its sum leaves ``C - 1 - j`` cycles of de-skew at the bottom; latency ``R + C - 1``
  (+1 with ``product_reg``).

Products (:func:`product`): XNOR for ±1 x ±1, a conditional negate for ±1 weights on integer activations
(``weight_binary``), select/negate/shift for 1- and 2-bit weights in logic,
shift-and-add up to :data:`SHIFT_ADD_MAX_BITS` in logic, ``*`` otherwise (Yosys maps it to LUTs or, with
``mult="dsp"``, to SB_MAC16 / MULT18X18D); with ``dsp_pack`` two neighbouring columns share one
multiplier, with ``dsp_pairs`` only that many pairs (the rest as ``mult`` says).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig

__all__ = ["MacArray", "SystolicPE", "code_shape", "delay_line", "kept", "operand_shapes", "product",
           "radix4_product", "times3", "tree_sum", "uses_radix4"]


def code_shape(bits: int, is_signed: bool):
    """Shape of a ``bits``-bit integer code."""
    return signed(bits) if is_signed else unsigned(bits)


def operand_shapes(cfg: ArrayConfig):
    """Shapes of one activation code and one weight code (``unsigned(1)`` for a ±1 bit)."""
    if cfg.binary:
        return unsigned(1), unsigned(1)
    if cfg.weight_binary:
        return code_shape(cfg.act_bits, cfg.act_signed), unsigned(1)
    return code_shape(cfg.act_bits, cfg.act_signed), code_shape(cfg.weight_bits, cfg.weight_signed)


def delay_line(m, sig, stages: int, en, name: str, shape):
    """``sig`` delayed by ``stages`` registers of ``shape`` that advance only when ``en`` is high."""
    for k in range(stages):
        reg = Signal(shape, name=f"{name}_d{k + 1}")
        with m.If(en):
            m.d.sync += reg.eq(sig)
        sig = reg
    return sig


def product(cfg: ArrayConfig, x, w, m=None, x3=None, name: str = "p"):
    """One PE's product as ``cfg`` asks for it (an Amaranth expression): XNOR for binary operands, ``x``
    or ``-x`` for a ±1 weight bit on an integer code, a select/negate/shift for 1- and 2-bit weights in
    logic, radix-4 digits of the weight (:func:`radix4_product`) or shift-and-add for other narrow
    products in logic, ``*`` otherwise. With a module ``m`` the adders of a product in logic are kept
    apart (:func:`kept`); ``x3`` is ``3 * x`` where a row of PEs shares it."""
    if cfg.binary:
        return ~(x ^ w)      # XNOR: 1 when the ±1 values agree
    if cfg.weight_binary:
        # Weight bit 1 is +1, bit 0 is -1: a conditional negate whatever `mult` says (no multiply to map).
        # The code is widened by one bit first, so -x of the most negative (or largest unsigned) code
        # fits; product_bits (A + 1) holds every result, the slice only drops the negation's extra bit.
        xs = x.as_signed() if cfg.act_signed else Cat(x, Const(0, 1)).as_signed()
        return Mux(w, xs, -xs)[:cfg.product_bits].as_signed()
    if cfg.weight_bits <= 2 and cfg.mult == "lut":
        # 1- and 2-bit weights: select, negate, shift-add instead of a multiplier.
        xs = x.as_signed() if cfg.act_signed else Cat(x, Const(0, 1)).as_signed()
        if cfg.weight_signed:
            cases = {0: 0, 1: xs, -1: -xs, -2: -(xs << 1)}
        else:
            cases = {0: 0, 1: xs, 2: xs << 1, 3: xs + (xs << 1)}
        lo, hi = cfg.weight_range
        out = Const(0, signed(cfg.product_bits))
        for value in range(lo, hi + 1):
            if value:
                out = Mux(w == value, cases[value], out)
        return out
    if uses_radix4(cfg):
        return radix4_product(m, x, cfg.act_signed, w, cfg.weight_signed, cfg.product_bits, x3=x3, name=name)
    if cfg.mult == "lut" and min(cfg.act_bits, cfg.weight_bits) <= SHIFT_ADD_MAX_BITS:
        return shift_add_product(x, cfg.act_signed, w, cfg.weight_signed, cfg.product_bits)
    return x * w


def kept(m, value, name: str):
    """``value`` through a wire Yosys keeps (an Amaranth signal with ``keep``), or ``value`` itself
    without a module. Yosys's ``alumacc`` otherwise merges a tree of small adders into one ``$macc``
    that ``maccmap`` builds from full adders in LUTs; kept apart, each adder is a carry chain (one LC a
    bit on iCE40). An 8 x 4 array of signed 4 x 4 products: 1532 LUTs merged, 900 kept with radix-4
    products (``synth_ice40 -dsp`` of the array alone)."""
    if m is None:
        return value
    wire = Signal(value.shape(), name=name, attrs={"keep": 1})
    m.d.comb += wire.eq(value)
    return wire


def uses_radix4(cfg: ArrayConfig) -> bool:
    """Whether the array's products are :func:`radix4_product` (integer products in logic with weights
    and activations of 3 to :data:`SHIFT_ADD_MAX_BITS` bits)."""
    return (cfg.mult == "lut" and not cfg.binary and not cfg.weight_binary
            and 3 <= cfg.weight_bits <= SHIFT_ADD_MAX_BITS and 3 <= cfg.act_bits <= SHIFT_ADD_MAX_BITS)


def times3(m, x, x_signed, name: str = "x3"):
    """``3 * x`` (one adder), for :func:`radix4_product`: a row of PEs shares the activation."""
    xs = x.as_signed() if x_signed else Cat(x, Const(0, 1)).as_signed()
    return kept(m, xs + (xs << 1), name)


def radix4_product(m, x, x_signed, w, w_signed, bits, x3=None, name: str = "p"):
    """``x * w`` over the weight's 2-bit digits: an unsigned digit selects ``0, x, 2x`` or ``3x`` (two
    LUT4s a bit, ``3x`` shared by the row), a signed top digit (``0, x, -2x, -x``) or sign bit is the
    ones' complement of the multiple plus a carry-in of the adder that adds it. A signed 4 x 4 product
    is then one 6-bit adder and 18 LUTs of selects (shift-and-add: three adders, 36 LUTs)."""
    xs = x.as_signed() if x_signed else Cat(x, Const(0, 1)).as_signed()
    if x3 is None:
        x3 = times3(m, x, x_signed, f"{name}_x3")
    n = len(w)
    acc = None
    for k in range(0, n, 2):
        top = k + 2 >= n
        if k + 1 < n:
            d0, d1 = w[k], w[k + 1]
            if top and w_signed:         # digit d1 d0 = 0, 1, -2, -1
                term, neg = Mux(d1, Mux(d0, ~xs, ~(xs << 1)), Mux(d0, xs, 0)), d1
            else:
                term, neg = Mux(d1, Mux(d0, x3, xs << 1), Mux(d0, xs, 0)), None
        elif w_signed:                   # a lone sign bit weighs -2**k
            term, neg = Mux(w[k], ~xs, 0), w[k]
        else:
            term, neg = Mux(w[k], xs, 0), None
        if acc is None:                  # k == 0: the lowest digit of a weight of 3 or more bits is unsigned
            acc = term
            continue
        high = (acc >> k) + term if neg is None else (acc >> k) + term + neg
        acc = Cat(acc[:k], kept(m, high, f"{name}_d{k // 2}")).as_signed()
    return acc[:bits].as_signed()


#: Narrow LUT products are written as shift-and-add over the narrower operand's bits, not ``*``:
#: Yosys's ``booth`` pass (run before ``synth_ice40``, where it shrinks the wide requantizer
#: multipliers by ~9 %) makes a lone 4x4 multiplier 38 LUTs instead of 31. In the
#: ``lowbit bench --synth-only array`` rows this took a UP5K 4x4 4-bit array from 792 to 729 LCs and
#: an 8x8 one from 3380 to 3125 (commit a76b730).
SHIFT_ADD_MAX_BITS = 6


def shift_add_product(x, x_signed, w, w_signed, bits):
    """``x * w`` as a sum of partial products, one per bit of the narrower operand (the sign bit of a
    signed operand weighs ``-2**(n-1)``), so no ``$mul`` cell reaches synthesis."""
    a, a_signed, b, b_signed = (x, x_signed, w, w_signed)
    if len(w) > len(x):
        a, a_signed, b, b_signed = w, w_signed, x, x_signed
    av = a.as_signed() if a_signed else Cat(a, Const(0, 1)).as_signed()
    total = Const(0, signed(bits))
    for k in range(len(b)):
        term = Mux(b[k], av << k, 0)
        total = total - term if (b_signed and k == len(b) - 1) else total + term
    return total[:bits].as_signed()


def tree_sum(values, m=None, name: str = "t"):
    """A balanced adder tree over ``values`` (Amaranth expressions); with a module ``m`` each adder is
    :func:`kept` apart."""
    values = list(values)
    level = 0
    while len(values) > 1:
        nxt = [kept(m, values[i] + values[i + 1], f"{name}_{level}_{i // 2}") for i in range(0, len(values) - 1, 2)]
        level += 1
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


class SystolicPE(wiring.Component):
    """One processing element of the systolic array: ``psum_out <= psum_in + x_in * w_in`` and
    ``x_out <= x_in`` (for the next column), both registered and advancing only when ``en`` is high.
    With ``product_reg`` the product is registered first (multiply and add in separate cycles)."""

    def __init__(self, config: ArrayConfig, x_shape, w_shape, psum_in_shape, psum_out_shape):
        self.config = config
        super().__init__({"en": In(1), "x_in": In(x_shape), "w_in": In(w_shape), "psum_in": In(psum_in_shape),
                          "x_out": Out(x_shape), "psum_out": Out(psum_out_shape)})

    def elaborate(self, platform):
        m = Module()
        value = product(self.config, self.x_in, self.w_in, m)
        if self.config.product_reg:
            # Every PE adds one cycle, so the skew between rows (and the partial sum arriving from the
            # row above) stays aligned.
            prod = Signal(value.shape(), name="prod")
            with m.If(self.en):
                m.d.sync += prod.eq(value)
            value = prod
        with m.If(self.en):
            m.d.sync += [self.psum_out.eq(self.psum_in + value), self.x_out.eq(self.x_in)]
        return m


class MacArray(wiring.Component):
    """``R x C`` multiply-accumulate array (see the module docstring).

    Attributes
    ----------
    en : Signal, in
        Advance every register (a stall holds the array, skew included).
    x : ArrayLayout(code, R), in
        One K-chunk of activation codes.
    w : ArrayLayout(ArrayLayout(code, C), R), in
        The chunk's weights, ``w[r][j]`` for lane ``r`` and column ``j``.
    sums : ArrayLayout(sum, C), out
        Column sums of the chunk presented ``latency`` enabled cycles earlier.
    latency : int
        Enabled cycles from ``x``/``w`` to ``sums``.
    """

    def __init__(self, config: ArrayConfig):
        self.config = config
        cfg = config
        R, C = cfg.rows, cfg.cols
        self.x_shape, self.w_shape = operand_shapes(cfg)
        self.latency = cfg.latency
        super().__init__({
            "en": In(1),
            "x": In(data.ArrayLayout(self.x_shape, R)),
            "w": In(data.ArrayLayout(data.ArrayLayout(self.w_shape, C), R)),
            "sums": Out(data.ArrayLayout(self.psum_shape(R), C)),
        })

    def psum_shape(self, rows: int):
        """Shape of a sum of ``rows`` products."""
        bits = self.config.psum_bits(rows)
        return unsigned(bits) if self.config.binary else signed(bits)

    def elaborate(self, platform):
        m = Module()
        self._operands(m)
        if self.config.systolic:
            self._grid(m)
        else:
            self._tree(m)
        return m

    def _operands(self, m):
        """The operands the products take: ``x`` and ``w`` as they come, or with ``input_reg`` registered
        (and the row's ``3x`` of a radix-4 array computed before its register)."""
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        self._x3 = [None] * R
        radix4 = uses_radix4(cfg) and not cfg.systolic and not cfg.dsp_pack
        if not cfg.input_reg:
            self._x, self._w = self.x, self.w
            return
        self._x = Signal(data.ArrayLayout(self.x_shape, R), name="x_in")
        self._w = Signal(data.ArrayLayout(data.ArrayLayout(self.w_shape, C), R), name="w_in")
        with m.If(self.en):
            m.d.sync += [self._x.eq(self.x), self._w.eq(self.w)]
        if radix4:
            for r in range(R):
                now = times3(m, self.x[r], cfg.act_signed, f"x3_{r}")
                self._x3[r] = Signal(now.shape(), name=f"x3_in{r}")
                with m.If(self.en):
                    m.d.sync += self._x3[r].eq(now)

    def _tree(self, m):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        prod_shape = unsigned(1) if cfg.binary else signed(cfg.product_bits)
        prods = [[Signal(prod_shape, name=f"p{r}_{j}") for j in range(C)] for r in range(R)]
        for r in range(R):
            assigns = [p.eq(v) for p, v in zip(prods[r], self._row_products(m, r))]
            if cfg.product_reg:
                with m.If(self.en):
                    m.d.sync += assigns
            else:
                m.d.comb += assigns
        for j in range(C):
            # A binary column is a popcount, which Yosys's full adders build better than carry chains.
            total = tree_sum([prods[r][j] for r in range(R)], None if cfg.binary else m, f"col{j}")
            if cfg.sum_reg:
                with m.If(self.en):
                    m.d.sync += self.sums[j].eq(total)
            else:
                m.d.comb += self.sums[j].eq(total)

    def _row_products(self, m, r):
        """The ``C`` products of row ``r``: one per column, or with ``dsp_pack`` one multiplier for each
        pair of columns (``x * (w_a + w_b * 2**S)``, split exactly into ``x*w_a`` and ``x*w_b``)."""
        cfg = self.config
        C = cfg.cols
        x, wrow = self._x[r], self._w[r]
        pairs = C // 2 if cfg.dsp_pack else min(C // 2, max(0, cfg.dsp_pairs - r * (C // 2)))
        S = cfg.product_bits
        out = []
        for j in range(0, 2 * pairs, 2):
            packed = Signal(signed(S + cfg.product_bits + 1), name=f"pk{r}_{j}")
            m.d.comb += packed.eq(x * (wrow[j] + (wrow[j + 1] << S)))
            # lo: the low S bits, signed; hi = (packed - lo) >> S, i.e. the high bits plus lo's borrow
            lo = packed[:S].as_signed()
            out += [lo, (packed[S:].as_signed() + packed[S - 1])[:cfg.product_bits].as_signed()]
        if cfg.dsp_pack:
            return out + ([x * wrow[C - 1]] if C % 2 else [])
        x3 = None
        if uses_radix4(cfg) and C > 2 * pairs:
            x3 = self._x3[r] if self._x3[r] is not None else times3(m, x, cfg.act_signed, f"x3_{r}")
        return out + [product(cfg, x, wrow[j], m, x3, f"p{r}_{j}v") for j in range(2 * pairs, C)]

    def _grid(self, m):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        two_d = cfg.systolic_2d
        pes = [[None] * C for _ in range(R)]
        for r in range(R):
            x = delay_line(m, self._x[r], r, self.en, f"x{r}", self.x_shape)
            for j in range(C):
                w = delay_line(m, self._w[r][j], r + j if two_d else r, self.en, f"w{r}_{j}", self.w_shape)
                pe = SystolicPE(cfg, self.x_shape, self.w_shape, self.psum_shape(max(r, 1)), self.psum_shape(r + 1))
                m.submodules[f"pe{r}_{j}"] = pe
                m.d.comb += [pe.en.eq(self.en), pe.w_in.eq(w),
                             pe.x_in.eq(pes[r][j - 1].x_out if two_d and j else x),
                             pe.psum_in.eq(pes[r - 1][j].psum_out if r else 0)]
                pes[r][j] = pe
        for j in range(C):
            out = delay_line(m, pes[R - 1][j].psum_out, C - 1 - j if two_d else 0, self.en, f"deskew{j}",
                             self.psum_shape(R))
            m.d.comb += self.sums[j].eq(out)
