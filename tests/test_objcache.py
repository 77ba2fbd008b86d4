"""The compile cache Verilator's makefile runs its compiles through (lowbit.sw.flow.objcache)."""

import os
import sys
from pathlib import Path

import pytest

from lowbit.sw.flow import objcache, toolchain

#: A stand-in compiler: writes the object (the source's bytes and a header's) and a -MMD dependency
#: file naming the source and the header, and counts its calls.
FAKE_CXX = """\
import sys
from pathlib import Path
args = sys.argv[1:]
src = Path(next(a for a in args if a.endswith('.cpp')))
obj = Path(args[args.index('-o') + 1])
header = src.with_name('runtime.h')
Path('calls.txt').open('a').write('x')
obj.write_bytes(src.read_bytes() + header.read_bytes())
Path(obj.with_suffix('.d')).write_text(f'{obj}: {src} \\\\\\n  {header}\\n')
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "cache"))
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "runtime.cpp").write_text("int f() { return 1; }\n")
    (pkg / "runtime.h").write_text("// v1\n")
    cxx = tmp_path / "cxx.py"
    cxx.write_text(FAKE_CXX)
    return tmp_path, pkg, cxx


def compile_in(folder: Path, pkg: Path, cxx: Path, flags=("-Os",)) -> int:
    folder.mkdir(exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert objcache.main([sys.executable, str(cxx), *flags, "-MMD", "-c", "-o", "runtime.o",
                              str(pkg / "runtime.cpp")]) == 0
    finally:
        os.chdir(cwd)
    calls = folder / "calls.txt"
    return len(calls.read_text()) if calls.exists() else 0


def test_a_runtime_object_is_compiled_once_and_copied_into_other_build_folders(setup):
    tmp_path, pkg, cxx = setup
    assert compile_in(tmp_path / "a", pkg, cxx) == 1
    assert compile_in(tmp_path / "b", pkg, cxx) == 0          # from the cache, the compiler not run
    assert (tmp_path / "b" / "runtime.o").read_bytes() == (tmp_path / "a" / "runtime.o").read_bytes()
    assert (tmp_path / "b" / "runtime.d").read_text() == (tmp_path / "a" / "runtime.d").read_text()


def test_other_flags_a_changed_source_or_a_changed_header_compile_again(setup):
    tmp_path, pkg, cxx = setup
    assert compile_in(tmp_path / "a", pkg, cxx) == 1
    assert compile_in(tmp_path / "b", pkg, cxx, flags=("-O0",)) == 1
    (pkg / "runtime.cpp").write_text("int f() { return 2; }\n")
    assert compile_in(tmp_path / "c", pkg, cxx) == 1
    (pkg / "runtime.h").write_text("// v2\n")
    assert compile_in(tmp_path / "d", pkg, cxx) == 1
    assert (tmp_path / "d" / "runtime.o").read_bytes().endswith(b"// v2\n")
    assert compile_in(tmp_path / "e", pkg, cxx) == 0


def test_sources_of_the_build_folder_are_never_cached(setup):
    tmp_path, pkg, cxx = setup
    assert objcache._parse(["c++", "-c", "-o", "x.o", str(Path.cwd() / "Vtop.cpp")]) is None
    assert objcache._parse(["c++", "-c", "-o", "x.o", "Vtop.cpp"]) is None
    assert objcache._parse(["c++", "-o", "board", "a.o", "b.o"]) is None


def test_verilator_builds_go_through_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    monkeypatch.delenv("OBJCACHE", raising=False)
    flags = toolchain.verilator_env()["MAKEFLAGS"]
    assert "CFG_CXXFLAGS_PCH_I=-include" in flags
    wrapper = Path(flags.split("OBJCACHE=")[1].split()[0])
    assert wrapper.parent == tmp_path and os.access(wrapper, os.X_OK)
