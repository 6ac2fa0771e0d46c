"""All-or-nothing output folders: bad input never leaves partial output files behind."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from samkit.errors import SamkitError


@contextmanager
def staged_outputs(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh staging directory; publish its files into ``out_dir`` only on success.

    The staging directory is created beside ``out_dir`` (in its nearest existing ancestor, so
    on the same filesystem and nothing is created before success). On normal exit every file
    (subfolders kept) is moved into ``out_dir`` with ``os.replace`` — atomic per file,
    overwriting same-named files — creating ``out_dir`` as needed. On an exception the staging
    directory is deleted and ``out_dir`` is left exactly as it was (not even created).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SamkitError(f"output path exists and is not a directory: {out_dir}")
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=_existing_ancestor(out_dir)))
    try:
        yield staging
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require_writable(out_dir: str | os.PathLike, what: str = "output folder") -> None:
    """Fail now (before slow work) unless ``out_dir`` is, or can be created as, a writable folder; the
    message names ``out_dir`` as given (``what``: how the user gave it, e.g. ``--out``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SamkitError(f"{what} {out_dir} exists and is not a directory")
    parent = out_dir if out_dir.exists() else _existing_ancestor(out_dir)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SamkitError(f"cannot write to {what} {out_dir}: {parent} is not writable")


def _existing_ancestor(path: Path) -> Path:
    """The parent of ``path`` if it exists, else its nearest existing ancestor (must be a folder)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SamkitError(f"cannot create output folder {path}: {parent} is not a directory")
    return parent


def _publish(staging: Path, out_dir: Path) -> None:
    """Move every file under ``staging`` to the same relative place under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for root, _dirs, files in os.walk(staging):
        target_root = out_dir / Path(root).relative_to(staging)
        target_root.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(root) / name, target_root / name)
