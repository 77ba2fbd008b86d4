"""The gate-level harness's checks (cheap; the full netlist run is the slow test in test_cli_flow.py)."""

import pytest

from lowbit.sim.netlist_sim import PINS, netlist_sources
from lowbit.sw.errors import LowbitError

TOP = "module top(" + ", ".join(PINS.values()) + ");\n"


def _netlist(tmp_path, text):
    (tmp_path / "b").mkdir(exist_ok=True)
    (tmp_path / "b" / "top_netlist.v").write_text(text)
    return tmp_path / "b"


def test_sources_are_wrapper_pad_model_cells_and_the_netlist(tmp_path):
    build = _netlist(tmp_path, TOP + "  SB_IO #(.PIN_TYPE(6'h29)) a (); SB_IO #(.PIN_TYPE(6'h01)) b ();\nendmodule\n")
    files = netlist_sources(build, tmp_path / "work")
    names = [f.name for f in files]
    assert names == ["lowbit_netlist.v", "sb_io_model.v", "cells_sim_noio.v", "top_netlist.v"]
    cells = (tmp_path / "work" / "cells_sim_noio.v").read_text()
    assert "module SB_LUT4" in cells and "module SB_RAM40_4K" in cells and "module SB_IO (" not in cells
    wrapper = (tmp_path / "work" / "lowbit_netlist.v").read_text()
    assert all(f".{pin}(" in wrapper for pin in PINS.values())


def test_an_unknown_pin_type_or_top_is_refused_by_name(tmp_path):
    with pytest.raises(LowbitError, match="pin type 0x24"):
        netlist_sources(_netlist(tmp_path, TOP + "SB_IO #(.PIN_TYPE(6'h24)) a ();\n"), tmp_path / "w")
    with pytest.raises(LowbitError, match="the netlist's top has pins"):
        netlist_sources(_netlist(tmp_path, "module top(clk, led);\n"), tmp_path / "w")
    (tmp_path / "b" / "top_netlist.v").unlink()
    with pytest.raises(LowbitError, match="has no top_netlist.v"):
        netlist_sources(tmp_path / "b", tmp_path / "w")


@pytest.mark.parametrize("field,value,words", [("reweightable", True, "placeholder ROMs"),
                                               ("family", "ecp5", "implemented for iCE40")])
def test_netlist_runs_are_refused_where_the_netlist_is_not_the_bitstream(tmp_path, field, value, words):
    import json

    import numpy as np

    from lowbit.sw.data.synthetic import random_dense_model
    from lowbit.sw.flow.simulate import simulate_build
    folder = tmp_path / "b"
    folder.mkdir()
    model = random_dense_model(8, 4)
    model.save(folder / "model.lbm")
    record = {"board": "icebreaker", "arch": "dataflow", "overlay": None, "family": "ice40", "arrays": [[2, 2]], "clock_hz": 12e6, "baud": 1_000_000,
              "max_batch": 8, "timeout_bytes": 32, "reweightable": False, "rom_seed": 1, "rom_block": None,
              "mult": "lut", "requant_dsp": False, "pll": False, "divisor": 12}
    record[field] = value
    if field == "reweightable":
        record["rom_block"] = 256
    if field == "family":
        record["rom_block"] = None
    (folder / "build.json").write_text(json.dumps(record))
    with pytest.raises(LowbitError, match=words):
        simulate_build(folder, np.zeros((1, 8), dtype=int), netlist=True)
