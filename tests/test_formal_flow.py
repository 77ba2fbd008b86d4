"""The formal flow itself: a true property passes, a false one fails with its location."""

from amaranth import Elaboratable, Module, Signal
from amaranth.asserts import AnyConst, Initial
from amaranth.hdl import Assert

from lowbit.sim.formal import check_formal


class _AdderSpec(Elaboratable):
    def __init__(self, bug):
        self.bug = bug

    def elaborate(self, platform):
        m = Module()
        a, b = AnyConst(4), AnyConst(4)
        total = Signal(5)
        m.d.sync += total.eq(a + b + self.bug)
        with m.If(~Initial()):
            m.d.comb += Assert(total == a + b)
        return m


def test_bmc_passes_a_true_property_and_fails_a_false_one(tmp_path):
    good = check_formal(_AdderSpec(0), tmp_path / "good", depth=5)
    assert good.passed and good.status == "PASS"
    bad = check_formal(_AdderSpec(1), tmp_path / "bad", depth=5)
    assert not bad.passed and bad.status == "FAIL" and "failed assertion" in bad.summary


def test_prove_mode(tmp_path):
    assert check_formal(_AdderSpec(0), tmp_path / "prove", mode="prove", depth=3).passed


def test_reset_any_lets_the_solver_reset(tmp_path):
    # With resets allowed at any time, `total` can be 0 after a reset: the property is false.
    assert not check_formal(_AdderSpec(0), tmp_path / "rst", depth=5, reset="any").passed
