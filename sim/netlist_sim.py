"""Gate-level simulation of the netlist Yosys produced for a bitstream (iCE40), under Verilator.

The build writes ``top_netlist.v`` from the very synthesis run whose JSON nextpnr placed (``write_verilog``
after ``synth_ice40``). Here that netlist — LUTs, carries, flip-flops, block RAMs with their INIT
contents, SB_MAC16s — runs with the cell models Yosys ships (``ice40/cells_sim.v``) inside the same
harness and testbench as the RTL board simulation: the host driver talks to the netlist's UART pins.

Only the I/O pads are modelled here instead of by Yosys' ``SB_IO``, whose tristate pad Verilator cannot
simulate at the top level: :data:`SB_IO_MODEL` passes the pin straight through, for the unregistered pin
types lowbit's board tops use (an unknown pin type is refused by name).
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth import ClockSignal, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.errors import LowbitError
from ..sw.flow.toolchain import yosys_share

__all__ = ["NetlistCore", "netlist_sources", "SB_IO_MODEL"]

#: Pad model: an input pin type reads the pin, an output type drives it with D_OUT_0 (no registers).
SB_IO_MODEL = """// lowbit: SB_IO for simulation, unregistered pin types only (see lowbit.sim.netlist_sim)
module SB_IO (inout PACKAGE_PIN, input LATCH_INPUT_VALUE, input CLOCK_ENABLE, input INPUT_CLK,
              input OUTPUT_CLK, input OUTPUT_ENABLE, input D_OUT_0, input D_OUT_1, output D_IN_0, output D_IN_1);
  parameter [5:0] PIN_TYPE = 6'b000000;
  parameter [0:0] PULLUP = 1'b0;
  parameter [0:0] NEG_TRIGGER = 1'b0;
  parameter IO_STANDARD = "SB_LVCMOS";
  generate if (PIN_TYPE[5:2] != 4'b0000) begin : drive
    assign PACKAGE_PIN = D_OUT_0;
  end endgenerate
  assign D_IN_0 = PACKAGE_PIN;
  assign D_IN_1 = 1'b0;
endmodule
"""

#: Pin types the model implements: 0x01 input, unregistered; 0x29 output with enable, unregistered.
SUPPORTED_PIN_TYPES = {0x01, 0x29}

#: The board top's pins (Amaranth platform names) and the harness signal each one connects to.
PINS = {"clk": "clk12_0__io", "rx": "uart_0__rx__io", "tx": "uart_0__tx__io", "led0": "led_0__io",
        "led1": "led_1__io"}

_WRAPPER = """// lowbit: the netlist's pins as plain ports for the harness
module lowbit_netlist(input clk, input rx, output tx, output [1:0] leds);
  wire clk_pin, rx_pin, tx_pin, led0_pin, led1_pin;
  assign clk_pin = clk;
  assign rx_pin = rx;
  assign tx = tx_pin;
  assign leds = {led1_pin, led0_pin};
  top dut(%s);
endmodule
"""


class NetlistCore(wiring.Component):
    """Stands in for :class:`lowbit.hw.accel.AccelCore` in the board harness: the synthesised netlist
    (module ``lowbit_netlist``), clocked by the harness clock. ``divisor`` is the built UART divisor."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(2)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.netlist = Instance("lowbit_netlist", i_clk=ClockSignal("sync"), i_rx=self.rx,
                                        o_tx=self.tx, o_leds=self.leds)
        return m


def netlist_sources(build_dir, work) -> list[Path]:
    """The Verilog files of a gate-level simulation of ``build_dir``'s netlist, written into ``work``:
    the pin wrapper, the pad model, the netlist, and Yosys' iCE40 cell models without their SB_IO."""
    build_dir, work = Path(build_dir), Path(work)
    netlist = build_dir / "top_netlist.v"
    if not netlist.is_file():
        raise LowbitError(f"{build_dir} has no top_netlist.v", "build it again with this version of lowbit")
    text = netlist.read_text()
    header = re.search(r"^module top\(([^)]*)\);", text, re.M)
    ports = {p.strip() for p in header.group(1).split(",")} if header else set()
    if ports != set(PINS.values()):
        raise LowbitError(f"the netlist's top has pins {sorted(ports)}, the gate-level harness knows "
                          f"{sorted(PINS.values())}", "--netlist supports iCEBreaker-style tops (clock, UART, 2 LEDs)")
    for value in re.findall(r"\.PIN_TYPE\(6'h([0-9a-f]+)\)", text):
        if int(value, 16) not in SUPPORTED_PIN_TYPES:
            raise LowbitError(f"the netlist uses an SB_IO pin type 0x{int(value, 16):02x} the pad model does not "
                              "implement", "--netlist supports unregistered pins (0x01, 0x29)")
    cells = (yosys_share() / "ice40" / "cells_sim.v").read_text()
    start = cells.index("module SB_IO (")
    cells = cells[:start] + cells[cells.index("endmodule", start) + len("endmodule"):]
    work.mkdir(parents=True, exist_ok=True)
    files = {"lowbit_netlist.v": _WRAPPER % ", ".join(f".{pin}({name}_pin)" for name, pin in PINS.items()),
             "sb_io_model.v": SB_IO_MODEL, "cells_sim_noio.v": cells}
    out = []
    for name, content in files.items():
        path = work / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
        out.append(path)
    return out + [netlist.resolve()]
