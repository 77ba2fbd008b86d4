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
