"""A compile cache for the objects every Verilator build makes alike.

Each Verilator model (a board simulation, a cocotb bench) compiles the Verilator runtime
(``verilated.cpp``, ``verilated_vpi.cpp``, ``verilated_threads.cpp``, ``verilated_dpi.cpp``) again in its own
build folder: about 16 s of g++ a build on this project's machines, for objects that only depend on the
installed packages and the compile flags. Verilator's makefile runs every compile through ``$(OBJCACHE)``
(:func:`lowbit.sw.flow.toolchain.verilator_env` points it at :func:`wrapper`); this module is that
command. A compile whose source lies outside the build folder (the installed packages' sources) is
looked up by its command line and its source's bytes, and the entry is used only while every file its
dependency list (``-MMD``) names still has the bytes it had when the entry was made (ccache's "direct
mode"). Every other compile runs as it is: the model's own C++, the precompiled headers, and cocotb's
``verilator.cpp``, which includes the model's header.

The cache lives in ``$LOWBIT_CACHE`` or ``~/.cache/lowbit`` (``$XDG_CACHE_HOME/lowbit``); deleting it is
always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_root", "wrapper", "main"]

#: Sources whose objects are cached (C++ translation units).
SOURCE_SUFFIXES = (".cpp", ".cc", ".cxx", ".c")


def cache_root() -> Path:
    if os.environ.get("LOWBIT_CACHE"):
        return Path(os.environ["LOWBIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lowbit"


def wrapper() -> Path:
    """An executable that runs :func:`main` with this Python (made once in the cache folder; Make takes
    ``OBJCACHE`` as one word, so it cannot be ``python -m ...``)."""
    folder = cache_root()
    path = folder / f"objcache-{hashlib.sha256(sys.executable.encode()).hexdigest()[:12]}"
    text = f"#!{sys.executable}\nimport sys\nfrom lowbit.sw.flow.objcache import main\nsys.exit(main(sys.argv[1:]))\n"
    if not path.exists() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return path


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse(argv: list[str]):
    """``(source, object, depfile)`` of a ``-c`` compile with one source outside the working folder, or
    None (not cached)."""
    if "-c" not in argv[1:]:
        return None
    sources = [a for a in argv[1:] if a.endswith(SOURCE_SUFFIXES) and not a.startswith("-")]
    if len(sources) != 1:
        return None
    source = Path(sources[0])
    if not source.is_absolute() or not source.is_file() or source.resolve().is_relative_to(Path.cwd().resolve()):
        return None
    obj = argv[argv.index("-o") + 1] if "-o" in argv[:-1] else source.with_suffix(".o").name
    dep = str(Path(obj).with_suffix(".d")) if "-MMD" in argv or "-MD" in argv else None
    return source, Path(obj), dep


def _deps(text: str) -> list[str]:
    """The prerequisites a make dependency file lists."""
    body = text.replace("\\\n", " ").split(":", 1)[1] if ":" in text else ""
    return [w for w in body.split() if w != "\\"]


def main(argv: list[str]) -> int:
    """Run the compile ``argv`` (compiler first), or copy its object from the cache."""
    parsed = _parse(argv)
    if parsed is None:
        os.execvp(argv[0], argv)
    source, obj, dep = parsed
    key = _digest(json.dumps([argv, _digest(source.read_bytes())]).encode())
    entry = cache_root() / "objects" / key[:2] / key
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        if all(_digest(Path(p).read_bytes()) == h for p, h in manifest["deps"].items()):
            shutil.copyfile(entry / "object.o", obj)
            if dep is not None:
                Path(dep).write_text(manifest["depfile"])
            return 0
    except (OSError, ValueError, KeyError):
        pass
    rc = subprocess.call(argv)
    if rc != 0 or dep is None or not obj.is_file() or not Path(dep).is_file():
        return rc       # without a dependency list an entry could not be checked later: not kept
    try:
        depfile = Path(dep).read_text()
        paths = _deps(depfile)
        if not all(Path(p).is_absolute() for p in paths):
            return 0    # it includes a file of the build folder (the model's header): not the same for others
        deps = {p: _digest(Path(p).read_bytes()) for p in paths}
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent))
        shutil.copyfile(obj, tmp / "object.o")
        (tmp / "manifest.json").write_text(json.dumps({"deps": deps, "depfile": depfile}))
        if entry.exists():      # made before a dependency changed
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:         # another build stored it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass                    # a cache that cannot be written only costs time
    return 0
