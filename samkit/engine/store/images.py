"""Image files of a project, confined to one root folder: no path (``..``, absolute, or a symlink)
may lead outside it. Registration records sha256, byte size and pixel size."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit.data.image_io import load_image, require_min_size
from samkit.engine.store.models import Image
from samkit.errors import ImageError, SamkitError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class PathEscape(SamkitError):
    """A path that resolves outside the image root."""


class ImageTooLarge(ImageError):
    """More pixels than allowed (a decompression bomb or just too big)."""


def confined(root: Path, relative: str) -> Path:
    """The real path of ``relative`` under ``root``; raises PathEscape when it (or a symlink on the way)
    leads outside ``root``."""
    root = root.resolve()
    if not relative or Path(relative).is_absolute() or "\x00" in relative:
        raise PathEscape(f"not a relative image path: {relative!r}")
    real = Path(os.path.realpath(root / relative))
    if not real.is_relative_to(root):
        raise PathEscape(f"path leads outside the image root: {relative!r}")
    return real


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_image(path: Path, max_pixels: int) -> tuple[int, int]:
    """(width, height) of the image file at ``path`` after a full decode; ImageError when it is not an
    image, is too small, or has more than ``max_pixels`` (checked from the header, before decoding)."""
    try:
        with PILImage.open(path) as im:
            width, height = im.size
    except PILImage.DecompressionBombError as exc:  # far above PIL's own limit, refused from the header
        raise ImageTooLarge(f"image too large: {path.name}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"not an image: {path.name} ({exc.__class__.__name__})") from None
    if width * height > max_pixels:
        raise ImageTooLarge(f"image too large: {path.name} is {width} x {height} pixels, above {max_pixels:,}")
    require_min_size(load_image(path, max_pixels=max_pixels), path.name)
    return width, height


def register(session: Session, project_id: int, root: Path, relative: str, max_pixels: int) -> Image:
    """The Image row of ``root/relative`` (added when new); the file is checked and hashed."""
    path = confined(root, relative)
    rel = path.relative_to(root.resolve()).as_posix()
    found = session.scalar(select(Image).where(Image.project_id == project_id, Image.path == rel))
    if found is not None:
        return found
    width, height = check_image(path, max_pixels)
    image = Image(project_id=project_id, path=rel, sha256=sha256_file(path), size_bytes=path.stat().st_size,
                  width=width, height=height)
    session.add(image)
    session.flush()
    return image


def scan(session: Session, project_id: int, root: Path, max_pixels: int) -> tuple[int, list[str]]:
    """Register every image file under ``root`` (symlinks leading outside are skipped); returns
    (number registered, one message per refused file)."""
    count, refused = 0, []
    root = root.resolve()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            rel = (Path(folder) / name).relative_to(root).as_posix()
            try:
                register(session, project_id, root, rel, max_pixels)
                count += 1
            except SamkitError as exc:
                refused.append(str(exc))
    return count, refused
