"""The one configuration object of the lowbit MAC array generator.

Gateware (``lowbit.hw``), host software (``lowbit.sw``) and simulation (``lowbit.sim``) all read an
:class:`ArrayConfig`; every width that follows from its fields is a derived property, never a number
typed by hand elsewhere. This module does not import Amaranth, so the host package stays light.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..sw.ir.arith import int_range, signed_bits_for

__all__ = ["ArrayConfig", "MULT_IMPLS"]

#: How multiplies are mapped: ``"lut"`` keeps them in logic (any device), ``"dsp"`` lets synthesis use
#: the device's multipliers (SB_MAC16 on iCE40 UP5K, MULT18X18D on ECP5).
MULT_IMPLS = ("lut", "dsp")


@dataclass(frozen=True)
class ArrayConfig:
    """Parameters of an ``rows`` x ``cols`` low-bit MAC array.

    Each cycle the array takes ``rows`` input activations (lanes of the reduction dimension K) and
    ``rows * cols`` weights, and adds ``rows`` products into each of ``cols`` column accumulators (one
    output channel each).

    Parameters
    ----------
    rows : int
        Reduction lanes R (activations consumed per cycle), 1..64.
    cols : int
        Output channels C computed in parallel, 1..64.
    act_bits, weight_bits : int
        Widths of activation and weight codes, 1..8.
    act_signed, weight_signed : bool
        Two's-complement (True) or unsigned (False) codes.
    binary : bool
        ±1 activations and weights as single bits (``1 -> +1``, ``0 -> -1``); products become XNOR and
        the column sum a popcount. Requires ``act_bits == weight_bits == 1``; the signedness fields are
        then ignored.
    weight_binary : bool
        ±1 weights stored as single bits (``1 -> +1``, ``0 -> -1``) with ordinary ``act_bits``-bit
        integer activations: each product is ``x`` or ``-x``, a conditional negate with no multiplier
        (``docs/arithmetic.md`` §2, mode ``binary_weights``). Requires ``weight_bits == 1`` and
        ``binary=False``; ``weight_signed`` is then ignored.
    max_k : int
        Longest dot product (input features x kernel taps) the array must accumulate without overflow.
    mult : str
        ``"lut"`` or ``"dsp"``, see :data:`MULT_IMPLS`.
    product_reg : bool
        Register each product before the adder tree (costs one flip-flop per product bit, buys Fmax).
    input_reg : bool
        Register the operands where they enter the array (``R·A + R·C·W`` flip-flops, and with radix-4
        products the row's ``3x``, computed before the register), so the path from the memories and the
        operand decoders ends there instead of running on through the multiplies; one cycle more latency.
    sum_reg : bool
        Register the column sums where they leave the adder tree (``C`` sums), so the tree and whatever adds
        the sums (an engine's accumulators) are separate cycles; one cycle more latency. Adder tree only.
    systolic_2d : bool
        With ``systolic``: activations also hop one column to the right per cycle instead of being
        broadcast along the row (no fan-out of ``C``); column ``j`` then lags ``j`` cycles, its weights
        are delayed ``r + j`` and its sum is de-skewed by ``C - 1 - j`` cycles at the bottom (``C - 1``
        cycles more latency, more flip-flops).
    dsp_pack : bool
        With ``mult="dsp"``: compute the products of two neighbouring columns (which share the
        activation) with one multiplier, ``x * (w_a + w_b * 2**S)`` with ``S`` the product width, and
        split the result (``lo = low S bits, signed``; ``hi = (p - lo) >> S``), so a DSP serves two
        narrow products where the widths fit (SB_MAC16 16x16: ``A <= 16`` and ``W + S <= 16``, e.g.
        4-bit x 4-bit). Adder-tree reduction only.
    dsp_pairs : int
        With the adder tree: the first ``dsp_pairs`` pairs of neighbouring columns (row 0's pairs
        ``(0, 1), (2, 3), ...`` first, then row 1's, ...) are computed as ``dsp_pack`` computes every pair,
        one packed multiply each, which synthesis with DSP mapping (``synth_ice40 -dsp``) puts in a DSP
        block; the other products are written as ``mult`` says. So a UP5K array of 4-bit LUT products can
        use the SB_MAC16 blocks the requantizer leaves (``dsp_pack`` is every pair).
    systolic : bool
        Reduce each column with a registered partial-sum chain instead of an adder tree: row ``r``'s
        activation and weights are skewed by ``r`` cycles (triangular delay lines), the partial sum
        moves down one row per cycle, and a column's sum leaves the last row ``R`` cycles after its
        chunk was read. The critical path is one multiply-add whatever ``R``; it costs about
        ``R(R-1)/2 * (A + C*W)`` flip-flops of skew plus ``R*C`` partial-sum registers, so it suits
        ECP5 better than a 5280-LC UP5K. With ``product_reg`` each PE also registers its product
        (multiply and add in separate cycles; one more cycle of latency).

    Raises
    ------
    ValueError
        naming the field whose value is out of range or inconsistent.
    """

    rows: int = 4
    cols: int = 4
    act_bits: int = 4
    weight_bits: int = 4
    act_signed: bool = False
    weight_signed: bool = True
    binary: bool = False
    weight_binary: bool = False
    max_k: int = 1024
    mult: str = "lut"
    product_reg: bool = True
    input_reg: bool = False
    sum_reg: bool = False
    systolic: bool = False
    systolic_2d: bool = False
    dsp_pack: bool = False
    dsp_pairs: int = 0

    def __post_init__(self):
        for name, lo, hi in (("rows", 1, 64), ("cols", 1, 64), ("act_bits", 1, 8),
                             ("weight_bits", 1, 8), ("max_k", 1, 1 << 20)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"ArrayConfig.{name} must be an integer from {lo} to {hi}, not {value!r}")
        for name in ("act_signed", "weight_signed", "binary", "weight_binary", "product_reg", "input_reg", "sum_reg",
                     "systolic", "systolic_2d", "dsp_pack"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ArrayConfig.{name} must be True or False, not {getattr(self, name)!r}")
        if self.mult not in MULT_IMPLS:
            raise ValueError(f"ArrayConfig.mult must be one of {', '.join(MULT_IMPLS)}, not {self.mult!r}")
        if self.systolic_2d and not self.systolic:
            raise ValueError("ArrayConfig.systolic_2d needs systolic=True")
        if self.dsp_pack and (self.mult != "dsp" or self.weights_binary or self.systolic):
            raise ValueError("ArrayConfig.dsp_pack needs mult='dsp', non-binary operands and the adder tree "
                             f"(mult={self.mult!r}, binary={self.binary}, weight_binary={self.weight_binary}, "
                             f"systolic={self.systolic})")
        if not isinstance(self.dsp_pairs, int) or isinstance(self.dsp_pairs, bool) or \
                not 0 <= self.dsp_pairs <= self.rows * (self.cols // 2):
            raise ValueError(f"ArrayConfig.dsp_pairs must be an integer from 0 to {self.rows * (self.cols // 2)} "
                             f"(rows x column pairs), not {self.dsp_pairs!r}")
        if self.sum_reg and self.systolic:
            raise ValueError("ArrayConfig.sum_reg needs the adder tree (a systolic chain registers its sums)")
        if self.dsp_pairs and (self.weights_binary or self.systolic):
            raise ValueError("ArrayConfig.dsp_pairs needs non-binary operands and the adder tree "
                             f"(binary={self.binary}, weight_binary={self.weight_binary}, systolic={self.systolic})")
        if self.binary and (self.act_bits != 1 or self.weight_bits != 1):
            raise ValueError(f"ArrayConfig.binary needs act_bits=1 and weight_bits=1, not "
                             f"act_bits={self.act_bits}, weight_bits={self.weight_bits}")
        if self.weight_binary and (self.binary or self.weight_bits != 1):
            raise ValueError("ArrayConfig.weight_binary (±1 weights, integer activations) needs weight_bits=1 and "
                             f"binary=False, not weight_bits={self.weight_bits}, binary={self.binary}")

    def replace(self, **changes) -> "ArrayConfig":
        """A copy with some fields changed (validated like a new object)."""
        return dataclasses.replace(self, **changes)

    # -- derived ranges and widths ----------------------------------------------------------------

    @property
    def weights_binary(self) -> bool:
        """Weights are ±1 bits (``binary`` or ``weight_binary``), packed with the binary encoding."""
        return self.binary or self.weight_binary

    @property
    def act_range(self) -> tuple[int, int]:
        """Inclusive range of activation *values* (±1 in binary mode)."""
        return (-1, 1) if self.binary else int_range(self.act_bits, self.act_signed)

    @property
    def weight_range(self) -> tuple[int, int]:
        """Inclusive range of weight *values* (±1 with ``binary`` or ``weight_binary``; the products' range
        is the same as over ``{-1, +1}``)."""
        return (-1, 1) if self.weights_binary else int_range(self.weight_bits, self.weight_signed)

    @property
    def product_range(self) -> tuple[int, int]:
        """Inclusive range of one product ``x * w``."""
        (alo, ahi), (wlo, whi) = self.act_range, self.weight_range
        corners = (alo * wlo, alo * whi, ahi * wlo, ahi * whi)
        return min(corners), max(corners)

    @property
    def product_bits(self) -> int:
        """Signed width of one product (in binary mode, of the XNOR bit's ±1 value)."""
        return signed_bits_for(*self.product_range)

    @property
    def acc_range(self) -> tuple[int, int]:
        """Range of a dot product of up to ``max_k`` terms (an empty sum is 0)."""
        plo, phi = self.product_range
        return min(0, self.max_k * plo), max(0, self.max_k * phi)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: the smallest that makes overflow impossible for ``max_k`` terms."""
        return signed_bits_for(*self.acc_range)

    @property
    def latency(self) -> int:
        """Enabled cycles from an operand pair entering the array to its column sums (``MacArray.latency``)."""
        regs = sum(map(bool, (self.product_reg, self.input_reg, self.sum_reg)))
        return regs + (self.rows + (self.cols - 1 if self.systolic_2d else 0) if self.systolic else 0)

    def psum_bits(self, rows: int) -> int:
        """Width of a sum of ``rows`` products (unsigned popcount in binary mode, else signed)."""
        if self.binary:
            return max(rows, 1).bit_length()
        plo, phi = self.product_range
        return signed_bits_for(min(0, rows * plo), max(0, rows * phi))

    @property
    def weight_word_bits(self) -> int:
        """Bits of one weight ROM word: all ``rows * cols`` weights consumed in one cycle."""
        return self.rows * self.cols * self.weight_bits

    @property
    def macs(self) -> int:
        """Multiply-accumulates per cycle at full utilisation."""
        return self.rows * self.cols
