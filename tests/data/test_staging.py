"""staged_outputs: files appear in out_dir only when the block succeeds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from samkit.data.staging import staged_outputs
from samkit.errors import SamkitError


class Boom(Exception):
    pass


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative path -> content)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_success_creates_out_dir_and_moves_files(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    with staged_outputs(out_dir) as staging:
        assert staging.is_dir() and staging.parent == tmp_path
        assert not out_dir.exists()  # nothing published before the block ends
        (staging / "a.json").write_text("{}")
        (staging / "masks").mkdir()
        (staging / "masks" / "0.png").write_bytes(b"png")
    assert _snapshot(out_dir) == {"a.json": b"{}", "masks/0.png": b"png"}
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging leftovers


def test_success_overwrites_same_named_files_and_keeps_others(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.json").write_text("old")
    (out_dir / "keep.txt").write_text("keep")
    with staged_outputs(out_dir) as staging:
        (staging / "a.json").write_text("new")
    assert _snapshot(out_dir) == {"a.json": b"new", "keep.txt": b"keep"}


def test_success_creates_missing_parents(tmp_path: Path) -> None:
    out_dir = tmp_path / "x" / "y" / "out"
    with staged_outputs(out_dir) as staging:
        assert staging.parent == tmp_path  # nearest existing ancestor: same filesystem
        (staging / "f").write_text("1")
    assert _snapshot(out_dir) == {"f": b"1"}


def test_exception_leaves_existing_out_dir_untouched(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.json").write_text("old")
    before = _snapshot(out_dir)
    with pytest.raises(Boom), staged_outputs(out_dir) as staging:
        (staging / "a.json").write_text("partial")
        (staging / "b.png").write_bytes(b"partial")
        raise Boom
    assert _snapshot(out_dir) == before
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exception_does_not_create_out_dir(tmp_path: Path) -> None:
    out_dir = tmp_path / "new" / "out"
    with pytest.raises(Boom), staged_outputs(out_dir) as staging:
        (staging / "a.json").write_text("partial")
        raise Boom
    assert not out_dir.exists() and not out_dir.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), staged_outputs(out_dir) as staging:
        (staging / "a.json").write_text("partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_out_dir_that_is_a_file_is_rejected_up_front(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("i am a file")
    with pytest.raises(SamkitError, match="not a directory"), staged_outputs(target):
        pytest.fail("the block must not run")
    assert target.read_text() == "i am a file"
    assert sorted(os.listdir(tmp_path)) == ["out"]
