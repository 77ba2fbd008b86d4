"""A tiny design for toolchain self-tests (``lowbit doctor``): a free-running counter with an enable."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Counter"]


class Counter(wiring.Component):
    """``count`` increments every cycle ``en`` is high; ``led`` is its top bit.

    Parameters
    ----------
    width : int
        Width of ``count``.
    step : int
        Increment per enabled cycle (tests build a ``step=2`` counter to prove the self-test can fail).
    """

    def __init__(self, width: int = 24, step: int = 1):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"Counter width must be a positive integer, not {width!r}")
        self.width = width
        self.step = step
        super().__init__({"en": In(1), "led": Out(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + self.step)
        m.d.comb += self.led.eq(self.count[-1])
        return m
