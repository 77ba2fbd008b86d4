import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from lowbit.boards.targets import board_device, build_board, platform_class, prepare_board
from lowbit.sw.errors import LowbitError


class LoopbackCore(wiring.Component):
    """Test core: echoes rx to tx, blinks the LEDs from a counter."""

    def __init__(self, clk_hz):
        self.clk_hz = clk_hz
        super().__init__({"rx": In(1), "tx": Out(1), "leds": Out(2)})

    def elaborate(self, platform):
        m = Module()
        count = Signal(24)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [self.tx.eq(self.rx), self.leds.eq(count[-2:])]
        return m


@pytest.mark.parametrize("name,cls,device", [
    ("icebreaker", "ICEBreakerPlatform", "ice40-up5k"),
    ("ulx3s-85f", "ULX3S_85F_Platform", "ecp5-85f"),
    ("ULX3S_85F", "ULX3S_85F_Platform", "ecp5-85f"),
    ("upduino-v3", "UpduinoV3Platform", "ice40-up5k"),
    ("icestick", "ICEStickPlatform", "ice40hx1k"),
])
def test_boards_are_found_by_name(name, cls, device):
    platform = platform_class(name)
    assert platform.__name__ == cls
    assert board_device(platform()).name == device


def test_unknown_board_suggests_names():
    with pytest.raises(LowbitError, match=r"unknown board .ulx3s-99f. \(try icebreaker, ulx3s-85f, ulx3s\d+f"):
        platform_class("ulx3s-99f")


def test_board_without_open_flow_is_refused():
    with pytest.raises(LowbitError, match="uses xc7a35ti, which has no open Yosys/nextpnr flow"):
        board_device(platform_class("arty-a7-35")())


def test_board_without_uart_is_refused(tmp_path):
    with pytest.raises(LowbitError, match="has no UART resource"):
        prepare_board("ice40-hx1k-blink-evn", LoopbackCore, tmp_path)


def test_icebreaker_build_routes_the_uart_pins_and_meets_timing(tmp_path):
    result = build_board("icebreaker", LoopbackCore, tmp_path, progress=lambda m: None)
    pcf = (tmp_path / "top.pcf").read_text()
    assert "set_io uart_0__rx__io 6" in pcf and "set_io uart_0__tx__io 9" in pcf
    assert result.bitstream.exists() and result.clock_mhz == 12.0 and result.timing_met


def test_ulx3s_85f_build(tmp_path):
    result = build_board("ulx3s-85f", LoopbackCore, tmp_path, progress=lambda m: None)
    lpf = (tmp_path / "top.lpf").read_text()
    assert "uart_0__tx__io" in lpf and "uart_tx_enable" in lpf
    assert result.bitstream.exists() and result.clock_mhz == 25.0 and result.timing_met


# -- PLL clocks (--clock-mhz) -------------------------------------------------------------------------

@pytest.mark.parametrize("target", [16.0, 18.0, 24.0, 30.0, 48.0])
def test_icepll_settings_give_the_frequency_they_claim(target):
    from lowbit.boards.pll import pll_plan
    plan = pll_plan("ice40", 12.0, target)
    p = plan.params
    # SIMPLE feedback: f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ), VCO 533..1066 MHz.
    f_pfd = 12.0 / (p["DIVR"] + 1)
    f_vco = f_pfd * (p["DIVF"] + 1)
    assert abs(f_vco / 2 ** p["DIVQ"] - plan.out_mhz) < 1e-3
    assert abs(plan.out_mhz - target) <= 0.01 * target
    assert 533 <= f_vco <= 1066 and 10 <= f_pfd <= 133


@pytest.mark.parametrize("target", [40.0, 50.0, 60.0, 75.0])
def test_ecppll_settings_give_the_frequency_they_claim(target):
    from lowbit.boards.pll import pll_plan
    plan = pll_plan("ecp5", 25.0, target)
    p = plan.params
    # CLKOP feedback: f_out = f_in * CLKFB_DIV / CLKI_DIV; VCO = f_out * CLKOP_DIV in 400..800 MHz.
    assert p["FEEDBK_PATH"] == "CLKOP"
    assert abs(25.0 * p["CLKFB_DIV"] / p["CLKI_DIV"] - plan.out_mhz) < 1e-3
    assert 400 <= plan.out_mhz * p["CLKOP_DIV"] <= 800
    assert abs(plan.out_mhz - target) <= 0.01 * target


@pytest.mark.parametrize("family,mhz", [("ice40", 300.0), ("ice40", 8.0), ("ecp5", 450.0)])
def test_pll_frequency_outside_the_range_is_refused(family, mhz):
    from lowbit.boards.pll import pll_plan
    with pytest.raises(LowbitError, match="outside the .* PLL's"):
        pll_plan(family, 12.0, mhz)


@pytest.mark.parametrize("board,osc,mhz,prim,resource", [
    ("icebreaker", 12.0, 24.0, "SB_PLL40_PAD", "ICESTORM_PLL"),
    ("ulx3s-85f", 25.0, 50.0, "EHXPLLL", "EHXPLLL"),
])
def test_pll_build_clocks_the_core_from_the_pll(tmp_path, board, osc, mhz, prim, resource):
    seen = []
    result = build_board(board, lambda hz: (seen.append(hz), LoopbackCore(hz))[1], tmp_path,
                         progress=lambda m: None, clock_mhz=mhz)
    assert seen == [mhz * 1e6]                          # the core is built for the PLL's clock
    assert result.clock_mhz == mhz and result.timing_met
    assert result.utilization[resource]["used"] == 1
    assert prim in (tmp_path / "top.il").read_text()
