import json


def test_verilog_array_engine_and_binary_lint_clean(cli, tmp_path):
    code, out, err = cli("verilog", "--rows", "3", "--cols", "2", "--act-bits", "2", "--weight-bits", "8",
                         "--lint", "--json", "-o", str(tmp_path / "a.v"))
    assert code == 0, err
    assert json.loads(out)["lint"].startswith("clean") and "module lowbit_array" in (tmp_path / "a.v").read_text()
    code, out, err = cli("verilog", "--engine", "--rows", "3", "--cols", "2", "--act-bits", "2", "--weight-bits", "8",
                         "--weight-unsigned", "--lint", "--json", "-o", str(tmp_path / "e.v"))
    assert code == 0, err
    assert json.loads(out)["lint"].startswith("clean") and "module lowbit_engine" in (tmp_path / "e.v").read_text()
    for extra in (["--binary", "--rows", "8", "--cols", "4"], ["--systolic-2d", "--act-signed"],
                  ["--mult", "dsp", "--dsp-pack", "--weight-bits", "8"]):
        code, out, err = cli("verilog", *extra, "--lint", "-o", str(tmp_path / "b.v"))
        assert code == 0, (extra, err)


def test_verilog_refuses_dsp_pack_without_dsp(cli, tmp_path):
    code, out, err = cli("verilog", "--dsp-pack", "-o", str(tmp_path / "x.v"))
    assert code == 2 and "dsp_pack needs mult='dsp'" in err
    assert not (tmp_path / "x.v").exists()


def test_verilog_rejects_bad_config(cli, tmp_path):
    code, out, err = cli("verilog", "--act-bits", "9", "-o", str(tmp_path / "x.v"))
    assert code == 2 and "act_bits must be an integer from 1 to 8" in err
    assert not (tmp_path / "x.v").exists()


def test_bench_json_rows(cli):
    code, out, err = cli("bench", "--json")
    rows = json.loads(out)["rows"]
    assert code == 0
    for row in rows:
        assert {"name", "macs", "cycles", "utilization"} <= set(row)
        assert 0 < row["utilization"] <= 1
    assert any(r["name"].startswith("digits-mlp") for r in rows)
    assert all(r["inferences_per_s"] > 0 for r in json.loads(out)["reference"])
    # Overlay rows: what the planner picks on each device, with each layer's share of its roofline.
    overlay = {(r["name"], r["device"]): r for r in json.loads(out)["overlay"]}
    tfc1 = overlay[("tfc-w1a1", "ice40-up5k")]
    assert tfc1["fits"] and tfc1["pes"] >= 64 and len(tfc1["roofline_fraction"]) == 4
    assert tfc1["bounds"][1:] == ["outputs"] * 3        # 128 ±1 PEs on 64 inputs: the requantizer binds
    assert all(0 < f <= 1 for r in overlay.values() if r["fits"] for f in r["roofline_fraction"])
    assert not overlay[("tfc-w4a4", "ice40-up5k")]["fits"] and "block RAMs of 30" in overlay[("tfc-w4a4", "ice40-up5k")]["error"]


def test_verilog_of_binary_weights_on_integer_codes(cli, tmp_path):
    # The array and engine of ±1 weights on 8-bit codes, and the board core of a QONNX model whose first
    # layer has them (FINN's TFC-w1a1 pattern), all lint clean.
    from pathlib import Path
    for extra in (["--act-bits", "8"], ["--engine", "--act-bits", "4", "--act-signed", "--systolic"]):
        code, out, err = cli("verilog", "--binary-weights", *extra, "--lint", "-o", str(tmp_path / "w.v"))
        assert code == 0, (extra, err)
    fixture = Path(__file__).parent / "fixtures" / "brevitas" / "digits_tfc_w1a8.onnx"
    code, out, err = cli("verilog", str(fixture), "--lint", "--json", "-o", str(tmp_path / "core.v"))
    assert code == 0, err
    assert json.loads(out)["lint"].startswith("clean") and "module lowbit_core" in (tmp_path / "core.v").read_text()
    code, out, err = cli("verilog", "--binary-weights", "--binary", "-o", str(tmp_path / "x.v"))
    assert code == 2 and "weight_binary" in err and not (tmp_path / "x.v").exists()
