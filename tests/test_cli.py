import json


def test_unknown_subcommand_is_one_line_and_exit_2(cli):
    code, out, err = cli("frobnicate")
    assert code == 2
    assert err.count("\n") == 1 and "invalid choice: 'frobnicate'" in err and "Traceback" not in err


def test_doctor_quick_json_lists_every_tool_working(cli):
    code, out, err = cli("doctor", "--quick", "--json")
    result = json.loads(out)
    names = {c["name"] for c in result["checks"]}
    assert {"yosys", "nextpnr-ice40", "nextpnr-ecp5", "icepack", "icebram", "ecppack", "ecpbram",
            "verilator", "sby"} <= names
    assert code == 0 and result["ok"], [c for c in result["checks"] if not c["ok"]]


def test_doctor_reports_a_missing_tool_and_fails(cli, monkeypatch):
    from lowbit.sw.flow import toolchain
    toolchain.tool.cache_clear()
    monkeypatch.setenv("ICEPACK", "/nowhere/icepack")
    try:
        code, out, err = cli("doctor", "--quick")
    finally:
        toolchain.tool.cache_clear()
    assert code == 1
    assert "BAD  icepack" in out and "ICEPACK=/nowhere/icepack does not name an executable program" in out


def test_doctor_full_runs_both_flows(cli):
    code, out, err = cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 0
    assert checks["ice40 up5k flow"]["ok"] and "LCs" in checks["ice40 up5k flow"]["detail"]
    assert checks["verilator + cocotb"]["ok"]
