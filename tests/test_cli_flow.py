"""The CLI end to end: quantize -> eval -> build (iCEBreaker) -> run --sim, with --json outputs."""

import json
import re

import numpy as np
import pytest

from lowbit.sw.data.digits import digits_split, train_mlp


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow")
    xtr, ytr, xte, yte = digits_split()
    train_mlp(xtr, ytr).save_npz(d / "mlp.npz")
    np.savez(d / "calib.npz", x=xtr[:300])
    np.savez(d / "test.npz", x=xte[:40], y=yte[:40])
    return d


def test_quantize_then_eval(cli, files):
    code, out, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "calib.npz"),
                         "--per-channel", "--report", "--json", "-o", str(files / "m4.lbm"))
    assert code == 0, err
    rep = json.loads(out)["report"]
    assert len(rep) == 2 and all(r["sqnr_db"] > 10 for r in rep)
    code, out, err = cli("eval", str(files / "m4.lbm"), "--data", str(files / "test.npz"), "--json")
    result = json.loads(out)
    assert code == 0 and result["n"] == 40 and 0.85 <= result["accuracy"] <= 1.0
    assert sum(v["n"] for v in result["per_class"].values()) == 40


def test_eval_float_model_needs_calibration(cli, files):
    code, out, err = cli("eval", str(files / "mlp.npz"), "--data", str(files / "test.npz"))
    assert code == 2 and "needs calibration data" in err


@pytest.fixture(scope="module")
def built(files, cli_quiet):
    """The quantized digits MLP built for iCEBreaker as a dataflow pipeline: ``(folder, report)``."""
    code, out, err = cli_quiet("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "calib.npz"),
                               "--per-channel", "-o", str(files / "m.lbm"))
    assert code == 0, err
    # The dataflow pipeline (auto takes the overlay for this model: fewer cycles, tests/test_overlay_plan.py)
    code, out, err = cli_quiet("build", str(files / "m.lbm"), "--board", "icebreaker", "--arch", "dataflow",
                               "-o", str(files / "b"), "--json")
    assert code == 0, err
    return files / "b", json.loads(out)


def test_build_for_icebreaker_and_run_on_the_simulated_board(cli, files, built):
    report = built[1]
    for key in ("board", "device", "fmax_mhz", "clock_mhz", "timing_met", "cycles_per_inference",
                "inferences_per_s", "utilization", "architecture_reason"):
        assert key in report
    assert report["timing_met"] and report["utilization"]["ICESTORM_LC"]["used"] <= 5280
    # The report gives its PEs and each layer's cycles against its compute roof.
    assert report["architecture"] == "dataflow" and report["pes"] == sum(r * c for r, c in report["arrays"])
    assert [l["cycles"] for l in report["layers"]] and all(0 < l["roofline_fraction"] <= 1 for l in report["layers"])
    assert report["macs_per_s"] == report["pes"] * report["clock_mhz"] * 1e6
    assert (files / "b" / "top.bin").exists() and list((files / "b" / "roms").glob("*.hex"))
    code, out, err = cli("run", str(files / "b"), "--sim", "--data", str(files / "test.npz"), "--json")
    result = json.loads(out)
    assert code == 0, err
    assert result["n"] == 40 and result["mismatches"] == 0 and result["accuracy"] == result["reference_accuracy"]
    assert result["cycles_per_inference"] > 0
    # IDENTIFY, answered by the simulated board, describes every compute layer
    assert [(l["k"], l["n"], l["weight_bits"]) for l in result["layers"]] == [(64, 32, 4), (32, 10, 4)]
    # The simulated board is the built core, ROMs initialised from the model it was built from.
    assert result["rom_source"] == "model"
    # The link rate in the report counts the bytes that really cross the link: 5 INFER frames of 8,
    # plus IDENTIFY and COUNTERS, each a 6-byte request.
    from lowbit.sw.link import frames
    link = report["link"]
    assert link["batch"] == 8 and result["link_bytes"] == {
        "sent": 5 * link["request_bytes"] + 2 * frames.OVERHEAD_BYTES,
        "received": 5 * link["response_bytes"] + 2 * frames.OVERHEAD_BYTES + frames.IDENTIFY_HEAD_BYTES + 1
        + 2 * frames.LAYER_BYTES + frames.CAPACITY_BYTES + frames.COUNTERS_BYTES}
    assert report["inferences_per_s"] == min(report["compute_inferences_per_s"], link["inferences_per_s"])
    assert report["bound"] == "link" and 500 < link["inferences_per_s"] < 2000     # 1 Mbaud, 64 inputs
    # On iCE40 the requantizers' multipliers go to SB_MAC16 when the arrays need none.
    assert report["requant_dsp"] and report["utilization"]["ICESTORM_DSP"]["used"] > 0
    assert (files / "b" / "top_netlist.v").exists()      # for --netlist (test_netlist_sim below)
    tmp_path = files / "two"
    tmp_path.mkdir()
    with np.load(files / "test.npz") as z:
        np.savez(tmp_path / "two.npz", x=z["x"][:2])
    # The RTL simulated is the design that was built: core.v moved with its build folder (other source
    # paths in its attributes) still runs; core.v of other gateware is refused before any simulation.
    core = files / "b" / "core.v"
    text = core.read_text()
    core.write_text(re.sub(r'\(\* src = "[^"]*" \*\)', '(* src = "/elsewhere/hw/x.py:1" *)', text))
    code, out, err = cli("run", str(files / "b"), "--sim", "--data", str(tmp_path / "two.npz"), "--json")
    assert code == 0 and json.loads(out)["mismatches"] == 0, err
    core.write_text(text.replace("endmodule", "  wire other;\nendmodule", 1))
    code, out, err = cli("run", str(files / "b"), "--sim", "--data", str(tmp_path / "two.npz"))
    assert code == 2 and "built from other gateware" in err and "Traceback" not in err
    core.write_text(text)


@pytest.mark.slow
def test_run_trace_writes_the_waveform(cli, files, built, tmp_path):
    """--trace writes the waveform of the board simulation (a second Verilator build, with tracing: in
    the slow set)."""
    with np.load(files / "test.npz") as z:
        np.savez(tmp_path / "two.npz", x=z["x"][:2])
    code, out, err = cli("run", str(built[0]), "--sim", "--data", str(tmp_path / "two.npz"),
                         "--trace", str(tmp_path / "run.vcd"), "--json")
    assert code == 0, err
    text = (tmp_path / "run.vcd").read_text(errors="replace")
    assert "$enddefinitions" in text and " rx " in text and " tx " in text
    code, _, err = cli("run", str(built[0]), "--sim", "--data", str(tmp_path / "two.npz"), "--trace",
                       str(tmp_path / "run.fst"))
    assert code == 2 and "writes VCD" in err


@pytest.mark.slow
def test_binary_weights_on_8_bit_inputs_build_and_run_bit_exactly_on_the_simulated_board(cli, files):
    # The QONNX TFC-w1a8 fixture (±1 weights on 8-bit codes, then an XNOR layer) through the whole flow:
    # fold, synthesis and place-and-route for iCEBreaker, then the Verilator board against the reference.
    from pathlib import Path
    fixture = Path(__file__).parent / "fixtures" / "brevitas" / "digits_tfc_w1a8.onnx"
    code, out, err = cli("build", str(fixture), "--board", "icebreaker", "-o", str(files / "w1"), "--json")
    assert code == 0, err
    assert json.loads(out)["timing_met"]
    code, out, err = cli("run", str(files / "w1"), "--sim", "--data", str(files / "test.npz"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 40 and result["mismatches"] == 0 and result["bit_exact"]
    assert [(l["in_bits"], l["weight_bits"], l["binary"]) for l in result["layers"]] == [(8, 1, 1), (1, 1, 1)]


@pytest.mark.slow
def test_gate_level_netlist_of_the_bitstream_agrees(cli, files, tmp_path):
    """run --sim --netlist on a fresh iCEBreaker build: the netlist Yosys wrote for the bitstream, with
    Yosys' cell models, gives the reference's outputs (8 inputs; the Verilator build of the 2.4 MB
    netlist takes minutes, so this runs in the slow set)."""
    code, _, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "calib.npz"),
                       "--per-channel", "-o", str(tmp_path / "m.lbm"))
    assert code == 0, err
    code, _, err = cli("build", str(tmp_path / "m.lbm"), "--board", "icebreaker", "-o", str(tmp_path / "b"))
    assert code == 0, err
    code, out, err = cli("run", str(tmp_path / "b"), "--sim", "--netlist", "--limit", "8", "--data",
                         str(files / "test.npz"), "--json")
    assert code == 0, err
    gate = json.loads(out)
    assert gate["simulation"] == "netlist" and gate["rom_source"] == "netlist"
    assert gate["n"] == 8 and gate["mismatches"] == 0 and gate["sim_inputs_per_s"] > 0


@pytest.mark.slow
def test_mult_dsp_build_puts_products_in_dsps_and_stays_bit_exact(cli, files, tmp_path):
    """lowbit build --mult dsp: every array product is a multiplier (the fold caps them at the DSPs left
    after the requantizers'), synthesis maps the 8 x 8-bit ones to SB_MAC16 (Yosys leaves products of
    fewer than 11 bits in logic), and the simulated board is bit-exact."""
    code, _, err = cli("quantize", str(files / "mlp.npz"), "--calib-data", str(files / "calib.npz"),
                       "--weight-bits", "8", "--act-bits", "8", "--per-channel", "-o", str(tmp_path / "m.lbm"))
    assert code == 0, err
    code, out, err = cli("build", str(tmp_path / "m.lbm"), "--board", "icebreaker", "-o", str(tmp_path / "b"),
                         "--mult", "dsp", "--json")
    assert code == 0, err
    report = json.loads(out)
    products = sum(r * c for r, c in report["arrays"])
    assert report["mult"] == "dsp" and report["utilization"]["ICESTORM_DSP"]["used"] >= products + 1
    code, out, err = cli("run", str(tmp_path / "b"), "--sim", "--data", str(files / "test.npz"), "--json")
    assert code == 0, err
    assert json.loads(out)["mismatches"] == 0
