"""Write results so that a failure never leaves a half-written output a later command could trust.

Files and folders are built under a temporary name beside the target and renamed into place only when
complete (a rename within one folder is atomic on POSIX). An interrupted or failed command leaves the
previous output, if any, untouched, and removes its temporary (and any parent folders it created).

Commands call :func:`check_output_path` before any expensive work, so an output that could never be
written (its parent is a file, a dangling or looping symbolic link, a name too long for the file
system, a folder without write permission) is refused in the first second, not after synthesis.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import LowbitError

__all__ = ["atomic_file", "atomic_dir", "check_output_path", "TEMP_NAME_EXTRA"]

#: Bytes the temporary name ``.{name}.XXXXXXXX.partial`` adds to an output's name.
TEMP_NAME_EXTRA = len(".") + len(".") + 8 + len(".partial")

_HINT = "choose another output path"


def _show(path) -> str:
    """``path`` for a one-line message: a name of hundreds of characters is shortened in the middle."""
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-30:]}"


def _os_error(what: str, path, exc: OSError) -> LowbitError:
    if exc.errno == errno.ENAMETOOLONG:
        return LowbitError(f"cannot {what} {_show(path)}: the path ({len(os.fsencode(str(path)))} bytes) or a "
                           "name in it is too long for the file system", "choose a shorter name")
    reason = exc.strerror or errno.errorcode.get(exc.errno, type(exc).__name__)
    return LowbitError(f"cannot {what} {_show(path)}: {reason}", _HINT)


def _lstat(path: Path):
    """``os.lstat`` of ``path`` or None if nothing is there; LowbitError for names the system refuses."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None          # reported by the parent check, which names the file in the way
        raise _os_error("use output", path, exc) from None


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_path(path, *, folder: bool = False) -> Path:
    """Refuse an output ``path`` that :func:`atomic_file` (or, with ``folder``, :func:`atomic_dir`) could
    not write; returns it as a Path. Nothing is created. Raises LowbitError naming the path and why."""
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.name in ("", ".", ".."):
        raise LowbitError(f"output {str(path)!r} names no {kind}", f"give a {kind} name such as out/model")
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            target = os.stat(path)
        except FileNotFoundError:
            raise LowbitError(f"output {_show(path)} is a symbolic link to {os.readlink(path)}, which does not exist",
                              "remove the link or choose another output path") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LowbitError(f"output {_show(path)} is a symbolic link that loops back on itself",
                                  "remove the link or choose another output path") from None
            raise _os_error("use output", path, exc) from None
        st = target
    if st is not None:
        if folder and not stat.S_ISDIR(st.st_mode):
            raise LowbitError(f"output {_show(path)} exists and is not a folder", "give a folder name")
        if not folder and stat.S_ISDIR(st.st_mode):
            raise LowbitError(f"output {_show(path)} is a folder", "give a file name")
        if not folder and not stat.S_ISREG(st.st_mode):
            raise LowbitError(f"output {_show(path)} exists and is not a regular file", "give a file name")
    # The nearest existing ancestor must be a folder we may create entries in.
    parent = path.parent
    while True:
        pst = _lstat(parent)
        if pst is not None:
            try:
                pst = os.stat(parent)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise LowbitError(f"output folder {_show(parent)} is a symbolic link that loops back on itself",
                                      _HINT) from None
                if exc.errno == errno.ENOENT:
                    raise LowbitError(f"output folder {_show(parent)} is a symbolic link to {os.readlink(parent)}, "
                                      "which does not exist", _HINT) from None
                raise _os_error("use output folder", parent, exc) from None
            if not stat.S_ISDIR(pst.st_mode):
                raise LowbitError(f"cannot write {_show(path)}: {_show(parent)} is a file, not a folder", _HINT)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise LowbitError(f"cannot write {_show(path)}: no permission to create files in {_show(parent)}", _HINT)
            break
        if parent == parent.parent:
            break
        parent = parent.parent
    limit = _name_max(parent)
    for part in path.parent.relative_to(parent).parts:     # folders that will be created
        if len(os.fsencode(part)) > limit:
            raise LowbitError(f"cannot create folder {_show(part)}: its name is {len(os.fsencode(part))} bytes, "
                              f"the file system allows {limit}", "choose a shorter name")
    size = len(os.fsencode(path.name))
    if size + TEMP_NAME_EXTRA > limit:
        raise LowbitError(f"output name {_show(path.name)} is {size} bytes; the file system allows {limit}, and "
                          f"lowbit needs {TEMP_NAME_EXTRA} more for its temporary name", "choose a shorter name")
    return path


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing ancestors; returns those created, deepest first (for cleanup)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder == folder.parent:
            break
        folder = folder.parent
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir():
                _remove_created(missing[missing.index(p) + 1:])
                raise LowbitError(f"cannot create folder {_show(p)}: a file of that name exists", _HINT) from None
        except OSError as exc:
            _remove_created(missing[missing.index(p) + 1:])
            raise _os_error("create folder", p, exc) from None
    return missing


def _remove_created(created: list[Path]) -> None:
    for p in created:                     # deepest first; only if still empty
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = check_output_path(path)
    created = _make_parents(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        _remove_created(created)
        raise _os_error("write", path, exc) from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _os_error("write", path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _remove_created(created)
        raise


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = True):
    """Yield a fresh temporary folder beside ``path``; on success it becomes ``path`` (an existing
    ``path`` is replaced if ``overwrite``), on error it is deleted and ``path`` is left as it was."""
    path = check_output_path(path, folder=True)
    if path.exists() and not overwrite:
        raise LowbitError(f"output folder {_show(path)} already exists", "remove it or choose another")
    created = _make_parents(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        _remove_created(created)
        raise _os_error("create folder", path, exc) from None
    try:
        yield tmp
        try:
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except OSError as exc:
            raise _os_error("write folder", path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise
