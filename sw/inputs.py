"""Input files the CLI is handed: checked before they are read (:func:`check_input_file`), ``.npz``
readers that never unpickle, and data sets (``x`` with optional labels ``y``).

Every failure is a one-line :class:`LowbitError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from .errors import LowbitError

__all__ = ["check_input_file", "read_npz", "load_data", "PICKLE_REFUSED"]

#: What lowbit says about a pickled array: it never unpickles (a pickle can run any code).
PICKLE_REFUSED = "lowbit does not load pickles (they can run code)"


def _show(path) -> str:
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-30:]}"


def check_input_file(path, what: str = "file") -> Path:
    """``path`` as a Path if it is a readable regular file; else LowbitError saying what it is instead.

    The type is checked with ``stat`` before anything opens the file, so a FIFO given as a model does
    not block the command waiting for a writer.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LowbitError(f"{what} {_show(path)} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise LowbitError(f"{what} {_show(path)}: the path or a name in it is too long for the file system",
                              "check the path") from None
        if exc.errno == errno.ELOOP:
            raise LowbitError(f"{what} {_show(path)} is a symbolic link that loops back on itself",
                              "check the path") from None
        if exc.errno == errno.ENOTDIR:
            raise LowbitError(f"{what} {_show(path)} does not exist (a part of the path is a file, not a folder)",
                              "check the path") from None
        raise LowbitError(f"cannot read {what} {_show(path)}: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISDIR(st.st_mode):
        raise LowbitError(f"{what} {_show(path)} is a folder, not a file", "give the file inside it")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise LowbitError(f"{what} {_show(path)} is not a regular file (it is {kind})", "give a file")
    if not os.access(path, os.R_OK):
        raise LowbitError(f"cannot read {what} {_show(path)}: permission denied")
    return path


def read_npz(path, what: str = "file", keys=None) -> tuple[dict, list]:
    """``(arrays, names)``: the arrays of a NumPy ``.npz`` archive (only those of ``keys`` it has, if
    given) as a dict, and the names of all its members. LowbitError for anything else: a single
    ``.npy`` array (also renamed to ``.npz``), a damaged archive, a pickled (object) member."""
    path = check_input_file(path, what)
    with open(path, "rb") as f:
        magic = f.read(6)
    hint = ("save it with numpy.savez(path, x=inputs, y=labels)" if what == "data file"
            else "write it with numpy.savez; see docs/model-format.md")
    if magic == b"\x93NUMPY":
        raise LowbitError(f"{_show(path)} is a single .npy array, not an .npz archive", hint)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise LowbitError(f"{_show(path)} is not an .npz archive", hint)
            out = {}
            for k in z.files if keys is None else [k for k in keys if k in z.files]:
                try:
                    out[k] = z[k]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise LowbitError(f"{_show(path)}: array {k!r} is a pickled object array; {PICKLE_REFUSED}",
                                          "save plain numeric arrays with numpy.savez") from None
                    raise
            return out, list(z.files)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise LowbitError(f"{_show(path)} is not a readable .npz file ({type(exc).__name__})",
                          "the file is truncated or not a NumPy archive") from None


def load_data(path, need_labels: bool = False):
    """``(x, y)`` from an .npz holding ``x`` (N, ...) floats and optionally ``y`` (N,) integer labels."""
    z, files = read_npz(path, "data file", keys=("x", "y"))
    path = Path(path)
    if "x" not in z:
        raise LowbitError(f"{path} has no array 'x' (it has {', '.join(sorted(files)) or 'nothing'})",
                          "save inputs as x (and labels as y) with numpy.savez")
    x, y = z["x"], z.get("y")
    if x.dtype.kind not in "fiu" or x.ndim < 2 or len(x) == 0:
        raise LowbitError(f"{path}: x must be a non-empty numeric array of shape (N, ...), got {x.dtype} {x.shape}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise LowbitError(f"{path}: x contains NaN or infinity")
    if y is not None:
        if y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise LowbitError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
        y = y.astype(np.int64)
    elif need_labels:
        raise LowbitError(f"{path} has no labels 'y'", "accuracy needs integer labels y")
    return x, y
