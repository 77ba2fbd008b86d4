"""Write results so that a failure never leaves a half-written output a later command could trust.

Files and folders are built under a temporary name beside the target and renamed into place only when
complete (a rename within one folder is atomic on POSIX). An interrupted or failed command leaves the
previous output, if any, untouched, and removes its temporary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LowbitError

__all__ = ["atomic_file", "atomic_dir"]


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    if path.is_dir():
        raise LowbitError(f"output {path} is a folder", "give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = True):
    """Yield a fresh temporary folder beside ``path``; on success it becomes ``path`` (an existing
    ``path`` is replaced if ``overwrite``), on error it is deleted and ``path`` is left as it was."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LowbitError(f"output {path} exists and is not a folder", "give a folder name")
    if path.exists() and not overwrite:
        raise LowbitError(f"output folder {path} already exists", "remove it or choose another")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
