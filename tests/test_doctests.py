"""The worked examples in docstrings are run: a paired pack/unpack example that drifts from the code fails."""

import doctest
import importlib

import pytest

MODULES = ["lowbit.hw.packing", "lowbit.sw.flow.rom", "lowbit.sw.ir.arith", "lowbit.sw.link.frames"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
