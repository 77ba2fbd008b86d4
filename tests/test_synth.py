import json

import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lowbit.hw.selftest import Counter
from lowbit.sw.errors import LowbitError
from lowbit.sw.flow.synth import failed_fmax, implement, parse_nextpnr_report


def _write(tmp_path, component, name):
    path = tmp_path / f"{name}.v"
    path.write_text(verilog.convert(component, name=name))
    return path


def test_up5k_place_and_route_of_a_tiny_design(tmp_path):
    src = _write(tmp_path, Counter(16), "counter")
    result = implement([src], "counter", "ice40-up5k", tmp_path / "build", clock_mhz=12, progress=lambda m: None)
    assert result.bitstream.exists() and result.bitstream.stat().st_size > 100_000  # a full UP5K image
    lcs = result.utilization["ICESTORM_LC"]
    assert lcs["available"] == 5280 and 16 <= lcs["used"] < 100
    assert result.fmax_mhz > 12 and result.timing_met
    assert result.yosys_cells["SB_CARRY"] > 0


def test_an_unmet_timing_target_fails_unless_measuring(tmp_path):
    """A target nobody meets stops the build; for measurements the Fmax reached is reported instead."""
    src = _write(tmp_path, Counter(16), "counter")
    with pytest.raises(LowbitError, match=r"^timing failed: Fmax \d+\.\d\d MHz is below the 2000 MHz") as exc:
        implement([src], "counter", "ice40-up5k", tmp_path / "a", clock_mhz=2000, pack=False,
                  progress=lambda m: None)
    assert "--clock-mhz" in exc.value.hint and "--seed" in exc.value.hint
    result = implement([src], "counter", "ice40-up5k", tmp_path / "b", clock_mhz=2000, pack=False,
                       progress=lambda m: None, timing_allow_fail=True)
    assert not result.timing_met and 12 < result.fmax_mhz < 2000


def test_a_timing_failure_names_the_routed_fmax_not_the_placement_estimate():
    log = ("Info: Max frequency for clock 'clk': 35.79 MHz (FAIL at 45.03 MHz)\n"
           "Info: Routing..\n"
           "ERROR: Max frequency for clock 'clk': 41.40 MHz (FAIL at 45.03 MHz)\n")
    assert failed_fmax(log) == 41.40
    assert failed_fmax("Info: Max frequency for clock 'clk': 50.00 MHz (PASS at 12.00 MHz)\n") is None


@pytest.mark.slow
def test_ecp5_place_and_route_of_a_tiny_design(tmp_path):
    src = _write(tmp_path, Counter(16), "counter")
    result = implement([src], "counter", "ecp5-85f", tmp_path / "build", clock_mhz=25, progress=lambda m: None)
    assert result.bitstream.exists()
    assert result.utilization["TRELLIS_COMB"]["available"] == 83640
    assert result.fmax_mhz > 25


class _Multipliers(wiring.Component):
    def __init__(self, n):
        self.n = n
        super().__init__({"a": In(16 * n), "b": In(16 * n), "p": Out(32 * n)})

    def elaborate(self, platform):
        m = Module()
        for i in range(self.n):
            m.d.sync += self.p[32 * i:32 * (i + 1)].eq(self.a[16 * i:16 * (i + 1)] * self.b[16 * i:16 * (i + 1)])
        return m


def test_design_that_cannot_fit_is_refused_before_place_and_route(tmp_path):
    src = _write(tmp_path, _Multipliers(10), "mults")
    with pytest.raises(LowbitError, match=r"does not fit: synthesis needs 10 ICESTORM_DSP but ice40-up5k has 8"):
        implement([src], "mults", "ice40-up5k", tmp_path / "build", mult="dsp", progress=lambda m: None)
    assert not (tmp_path / "build" / "nextpnr.log").exists()


def test_nextpnr_report_parsing(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({
        "utilization": {"ICESTORM_LC": {"used": 1234, "available": 5280}},
        "fmax": {"clk": {"achieved": 48.5, "constraint": 12.0}},
    }))
    util, fmax = parse_nextpnr_report(report)
    assert util == {"ICESTORM_LC": {"used": 1234, "available": 5280}}
    assert fmax == {"clk": 48.5}
    report.write_text(json.dumps({"utilization": {}}))
    log = "Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 61.20 MHz (PASS at 12.00 MHz)\n" \
          "Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 58.03 MHz (PASS at 12.00 MHz)\n"
    assert parse_nextpnr_report(report, log)[1] == {"clk$SB_IO_IN_$glb_clk": 58.03}
