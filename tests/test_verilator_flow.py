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


def test_vpi_sees_the_top_level_ports_only(tmp_path):
    """cocotb's runner makes every signal public; cocotb_run narrows that to the top module's ports (the
    testbenches touch nothing else), so Verilator need not evaluate all combinational logic at every clock
    edge. The testbench above, which drives and reads those ports, passes through the same path."""
    from lowbit.sim.verilator import _public_ports
    src = tmp_path / "counter.v"
    src.write_text(verilog.convert(Counter(8), name="counter"))
    args = _public_ports([src], "counter", tmp_path)
    assert args[0] == "--no-public-flat-rw"
    rules = (tmp_path / "ports.vlt").read_text().splitlines()
    assert rules[0] == "`verilator_config"
    assert sorted(rules[1:]) == sorted(f'public_flat_rw -module "counter" -var "{p}"'
                                       for p in ("clk", "rst", "en", "count", "led"))
    assert _public_ports([src], "other", tmp_path) == []
