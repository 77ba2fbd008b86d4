import itertools

import pytest

from lowbit.hw.config import ArrayConfig
from lowbit.sw.ir.arith import int_range


@pytest.mark.parametrize("field,value,message", [
    ("rows", 0, "ArrayConfig.rows must be an integer from 1 to 64, not 0"),
    ("cols", 65, "ArrayConfig.cols must be an integer from 1 to 64, not 65"),
    ("act_bits", 9, "ArrayConfig.act_bits must be an integer from 1 to 8, not 9"),
    ("weight_bits", 0, "ArrayConfig.weight_bits must be an integer from 1 to 8, not 0"),
    ("act_bits", 4.0, "ArrayConfig.act_bits must be an integer from 1 to 8, not 4.0"),
    ("mult", "magic", "ArrayConfig.mult must be one of lut, dsp, not 'magic'"),
    ("binary", 1, "ArrayConfig.binary must be True or False, not 1"),
    ("max_k", 0, "ArrayConfig.max_k must be an integer from 1 to 1048576, not 0"),
])
def test_invalid_fields_are_named(field, value, message):
    with pytest.raises(ValueError) as info:
        ArrayConfig(**{field: value})
    assert str(info.value) == message


def test_binary_needs_one_bit_operands():
    with pytest.raises(ValueError, match="binary needs act_bits=1 and weight_bits=1"):
        ArrayConfig(binary=True)
    assert ArrayConfig(binary=True, act_bits=1, weight_bits=1).product_range == (-1, 1)


@pytest.mark.parametrize("a,w,sa,sw", list(itertools.product([1, 2, 4, 8], [1, 2, 4, 8], [False, True], [False, True])))
def test_acc_bits_is_exactly_enough_for_max_k_extreme_products(a, w, sa, sw):
    cfg = ArrayConfig(act_bits=a, weight_bits=w, act_signed=sa, weight_signed=sw, max_k=300)
    (alo, ahi), (wlo, whi) = int_range(a, sa), int_range(w, sw)
    extremes = [300 * p for p in (alo * wlo, alo * whi, ahi * wlo, ahi * whi)] + [0]
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    assert all(lo <= e <= hi for e in extremes)  # enough
    narrower = cfg.acc_bits - 1
    assert narrower == 0 or not all(-(1 << (narrower - 1)) <= e <= (1 << (narrower - 1)) - 1 for e in extremes)


def test_replace_validates_and_derives():
    cfg = ArrayConfig(rows=8, cols=8)
    bigger = cfg.replace(max_k=4096)
    assert bigger.acc_bits == cfg.acc_bits + 2 and bigger.rows == 8
    assert cfg.weight_word_bits == 8 * 8 * 4 and cfg.macs == 64
    with pytest.raises(ValueError, match="rows"):
        cfg.replace(rows=100)


@pytest.mark.parametrize("a,sa", list(itertools.product([1, 2, 4, 8], [False, True])))
def test_binary_weights_take_products_of_plus_minus_the_code(a, sa):
    cfg = ArrayConfig(act_bits=a, weight_bits=1, act_signed=sa, weight_binary=True, max_k=300)
    lo, hi = int_range(a, sa)
    m = max(abs(lo), abs(hi))
    assert cfg.product_range == (-m, m) and cfg.weights_binary and not cfg.binary
    assert cfg.acc_range == (-300 * m, 300 * m) and cfg.weight_word_bits == cfg.rows * cfg.cols
    with pytest.raises(ValueError, match=r"^ArrayConfig.weight_binary \(±1 weights, integer activations\) needs "
                                         r"weight_bits=1 and binary=False, not weight_bits=4, binary=False$"):
        ArrayConfig(act_bits=a, weight_bits=4, weight_binary=True)
