"""cocotb test for :class:`lowbit.hw.selftest.Counter`, run by ``lowbit doctor`` through Verilator."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge


@cocotb.test()
async def counter_counts_only_when_enabled(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    assert int(dut.count.value) == 0, "counter moved while disabled"
    dut.en.value = 1
    await ClockCycles(dut.clk, 37)
    dut.en.value = 0
    await RisingEdge(dut.clk)
    assert int(dut.count.value) == 37, f"expected 37 after 37 enabled cycles, got {int(dut.count.value)}"
