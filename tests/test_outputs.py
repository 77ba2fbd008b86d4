import pytest

from lowbit.sw.errors import LowbitError
from lowbit.sw.outputs import atomic_dir, atomic_file


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "model.lbm"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.lbm"]
    with atomic_file(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_dir_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    out = tmp_path / "build"
    with pytest.raises(LowbitError, match="does not fit"):
        with atomic_dir(out) as d:
            (d / "report.json").write_text("{}")
            raise LowbitError("does not fit")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(out) as d:
        (d / "a").write_text("1")
    with atomic_dir(out) as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_atomic_dir_refuses_a_file_and_existing_without_overwrite(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(LowbitError, match="exists and is not a folder"):
        with atomic_dir(tmp_path / "f"):
            pass
    (tmp_path / "d").mkdir()
    with pytest.raises(LowbitError, match="already exists"):
        with atomic_dir(tmp_path / "d", overwrite=False):
            pass
