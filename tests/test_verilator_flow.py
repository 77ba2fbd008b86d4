from amaranth.back import verilog

from lowbit.hw.selftest import Counter
from lowbit.sim.verilator import cocotb_run, lint


def test_cocotb_on_verilator_passes_a_correct_design_and_fails_a_wrong_one(tmp_path):
    good = tmp_path / "good.v"
    good.write_text(verilog.convert(Counter(8), name="counter"))
    assert cocotb_run([good], "counter", "lowbit.sim.tb_selftest", tmp_path / "good") == (1, 0)
    bad = tmp_path / "bad.v"
    bad.write_text(verilog.convert(Counter(8, step=2), name="counter"))
    assert cocotb_run([bad], "counter", "lowbit.sim.tb_selftest", tmp_path / "bad") == (1, 1)


def test_amaranth_verilog_lints_clean_with_the_documented_waivers(tmp_path):
    src = tmp_path / "counter.v"
    src.write_text(verilog.convert(Counter(8), name="counter"))
    lint(src, "counter")
