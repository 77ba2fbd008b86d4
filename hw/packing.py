"""The word formats of a layer engine's memories: one pair of pack/unpack functions per memory, defined once.

The gateware reads these words (:mod:`lowbit.hw.dense`); :mod:`lowbit.sw.flow.rom` fills whole ROM images
with them.

Weight ROM (:func:`pack_weights` / :func:`unpack_weights`)
    Word ``g * KC + c`` (output-channel group ``g``, K-chunk ``c``; ``KC = ceil(K / R)``) holds the
    ``R x C`` weights ``w[c*R + r, g*C + j]`` at bit offset ``(r * C + j) * bits`` (row-major: lane ``r``,
    column ``j``), as ``amaranth.lib.data.ArrayLayout(ArrayLayout(shape, C), R)`` lays them out.
    Positions past K or N hold the *pad code* whose product is always 0: ``0`` for integer weights,
    ``1`` (+1) for binary weights, because binary activations are padded with bit 0 (-1) and
    XNOR(0, 1) = 0 contributes nothing to the popcount (``docs/arithmetic.md`` §2). Binary weights on
    integer activations (``ArrayConfig.weight_binary``) use the same encoding and pad bit: there the
    activation lanes past K hold code 0 (:func:`pack_chunks`), and ``±1 * 0 = 0`` whatever the bit.

    Worked example, R = C = 2, 4-bit signed, K = 3, N = 2, ``w = [[1, -2], [3, 4], [-5, 6]]``:
    KC = 2; word 0 = lanes (k=0, k=1): ``1 | (-2 & 15) << 4 | 3 << 8 | 4 << 12`` = ``0x43e1``;
    word 1 = lanes (k=2, pad): ``(-5 & 15) | 6 << 4`` = ``0x6b``.

    >>> [hex(v) for v in pack_weights([[1, -2], [3, 4], [-5, 6]], 2, 2, 4)]
    ['0x43e1', '0x6b']
    >>> unpack_weights(pack_weights([[1, -2], [3, 4], [-5, 6]], 2, 2, 4), 3, 2, 2, 2, 4, True).tolist()
    [[1, -2], [3, 4], [-5, 6]]

Binary weights are given as ±1 values and stored as bits (``+1 -> 1``), one bit each; R = C = 2, K = 3,
``w = [[1, -1], [-1, 1], [1, 1]]``: word 0 = ``1 | 0 << 1 | 0 << 2 | 1 << 3`` = ``0x9``, word 1 = lanes
(k=2, pad): ``1 | 1 << 1 | 1 << 2 | 1 << 3`` = ``0xf``.

    >>> [hex(v) for v in pack_weights([[1, -1], [-1, 1], [1, 1]], 2, 2, 1, binary=True)]
    ['0x9', '0xf']
"""

from __future__ import annotations

import math

import numpy as np

from ..sw.ir.arith import binary_decode, binary_encode

__all__ = ["pack_weights", "unpack_weights", "pack_chunks", "unpack_chunks", "pack_fields", "unpack_fields"]


def _to_bits(values, bits):
    return np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)


def _from_bits(codes, bits, signed):
    codes = np.asarray(codes, dtype=np.int64)
    return np.where(codes >> (bits - 1) & 1, codes - (1 << bits), codes) if signed else codes


def pack_weights(w, rows: int, cols: int, bits: int, binary: bool = False) -> list[int]:
    """Weight matrix ``w`` (K, N) -> ROM words (see the module docstring)."""
    w = np.asarray(w, dtype=np.int64)
    k, n = w.shape
    kc, groups = math.ceil(k / rows), math.ceil(n / cols)
    pad = 1 if binary else 0
    full = np.full((kc * rows, groups * cols), pad, dtype=np.int64)
    full[:k, :n] = binary_encode(w) if binary else _to_bits(w, bits)
    words = []
    for g in range(groups):
        for c in range(kc):
            block = full[c * rows:(c + 1) * rows, g * cols:(g + 1) * cols]
            word = 0
            for r in range(rows):
                for j in range(cols):
                    word |= int(block[r, j]) << ((r * cols + j) * bits)
            words.append(word)
    return words


def unpack_weights(words, k: int, n: int, rows: int, cols: int, bits: int, signed: bool,
                   binary: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_weights`: ROM words -> the (K, N) matrix."""
    kc, groups = math.ceil(k / rows), math.ceil(n / cols)
    full = np.zeros((kc * rows, groups * cols), dtype=np.int64)
    mask = (1 << bits) - 1
    for g in range(groups):
        for c in range(kc):
            word = int(words[g * kc + c])
            for r in range(rows):
                for j in range(cols):
                    full[c * rows + r, g * cols + j] = (word >> ((r * cols + j) * bits)) & mask
    w = full[:k, :n]
    return binary_decode(w) if binary else _from_bits(w, bits, signed)


def pack_chunks(x, rows: int, bits: int, binary: bool = False) -> list[int]:
    """One input vector (K,) -> ``ceil(K / rows)`` stream beats of ``rows`` lanes (lane 0 in the low
    bits); missing lanes are padded with code 0 (bit 0 = -1 for binary, see the module docstring).

    >>> [hex(v) for v in pack_chunks([1, -2, 3], 2, 4)]
    ['0xe1', '0x3']
    >>> unpack_chunks(pack_chunks([1, -2, 3], 2, 4), 3, 2, 4, True).tolist()
    [1, -2, 3]
    >>> unpack_chunks(pack_chunks([1, -1, -1], 2, 1, binary=True), 3, 2, 1, False, binary=True).tolist()
    [1, -1, -1]
    """
    x = np.asarray(x, dtype=np.int64).ravel()
    kc = math.ceil(len(x) / rows)
    full = np.zeros(kc * rows, dtype=np.int64)
    full[:len(x)] = binary_encode(x) if binary else _to_bits(x, bits)
    return [sum(int(full[c * rows + r]) << (r * bits) for r in range(rows)) for c in range(kc)]


def unpack_chunks(words, k: int, rows: int, bits: int, signed: bool, binary: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_chunks`."""
    mask = (1 << bits) - 1
    flat = np.array([(int(w) >> (r * bits)) & mask for w in words for r in range(rows)], dtype=np.int64)[:k]
    return binary_decode(flat) if binary else _from_bits(flat, bits, signed)


def pack_fields(records, fields, signed_fields=None) -> list[int]:
    """Records (dicts) -> integers, each field at its offset: ``fields`` is ``[(name, bits), ...]``
    from bit 0 up, values in two's complement. Used for the per-channel parameter ROM.

    A value that does not fit its field is a ValueError naming the field, never silently truncated:
    fields named in ``signed_fields`` hold ``[-2**(bits-1), 2**(bits-1))``, the others ``[0, 2**bits)``
    (with ``signed_fields=None`` either reading is accepted).

    >>> pack_fields([{"a": -1, "b": 3}], [("a", 4), ("b", 2)], signed_fields=("a",))
    [63]
    >>> unpack_fields([63], [("a", 4), ("b", 2)], signed_fields=("a",))
    [{'a': -1, 'b': 3}]
    >>> pack_fields([{"a": 8}], [("a", 4)], signed_fields=("a",))
    Traceback (most recent call last):
    ...
    ValueError: field 'a' of record 0 is 8, outside the 4-bit signed range [-8, 7]
    """
    out = []
    for i, rec in enumerate(records):
        word, offset = 0, 0
        for name, bits in fields:
            value = int(rec[name])
            if signed_fields is None:
                lo, hi, kind = -(1 << (bits - 1)), (1 << bits) - 1, "two's-complement or unsigned"
            elif name in signed_fields:
                lo, hi, kind = -(1 << (bits - 1)), (1 << (bits - 1)) - 1, "signed"
            else:
                lo, hi, kind = 0, (1 << bits) - 1, "unsigned"
            if not lo <= value <= hi:
                raise ValueError(f"field {name!r} of record {i} is {value}, outside the {bits}-bit {kind} "
                                 f"range [{lo}, {hi}]")
            word |= (value & ((1 << bits) - 1)) << offset
            offset += bits
        out.append(word)
    return out


def unpack_fields(words, fields, signed_fields=()) -> list[dict]:
    """Inverse of :func:`pack_fields`; fields named in ``signed_fields`` are sign-extended."""
    out = []
    for word in words:
        rec, offset = {}, 0
        for name, bits in fields:
            v = (int(word) >> offset) & ((1 << bits) - 1)
            if name in signed_fields and v >> (bits - 1):
                v -= 1 << bits
            rec[name] = v
            offset += bits
        out.append(rec)
    return out
