"""Load any image (file, PIL image, numpy array) as an HxWx3 uint8 RGB array.

Conversion rules (shared by files, PIL images and arrays where they apply):

* ``L``, ``LA``, ``1``, ``CMYK``, ``RGBA`` and other 8-bit modes: PIL's own conversion to RGB;
  alpha is dropped (not composited), so fully transparent pixels keep their stored colour.
* ``P`` / ``PA`` (palette, with or without transparency): expanded through RGBA, alpha dropped,
  so every index maps to its palette RGB.
* ``I;16`` / ``I;16B`` / ``I;16L`` / ``I`` and uint16 arrays: divided by 257 (65535 -> 255),
  rounded, clipped to 0..255 (negative ``I`` values become 0).
* ``F`` (32-bit float images): multiplied by 255 when the maximum is <= 1, else clipped to 0..255.
* float arrays: assumed to be in 0..1, multiplied by 255, rounded and clipped.
* bool arrays: False -> 0, True -> 255.
* grey (HxW, HxWx1) is repeated to three channels; a fourth (alpha) channel is dropped.
"""
from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samkit.errors import ImageError

DEFAULT_MAX_PIXELS = 200_000_000
MAX_PIXELS_ENV = "SAMKIT_MAX_IMAGE_PIXELS"
MIN_IMAGE_SIDE = 8  # px: the CLI and the everything engine refuse smaller images (masks would be noise)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PALETTE_MODES = ("P", "PA")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)

_pil_guard_lock = threading.Lock()
_pil_guard_depth = 0
_pil_saved_limit: int | None = None

ImageSource = str | os.PathLike | Image.Image | np.ndarray


def load_image(source: ImageSource, max_pixels: int | None = None) -> np.ndarray:
    """Return ``source`` as a C-contiguous (H, W, 3) uint8 RGB array.

    Files are opened lazily and their header size is checked against the pixel limit
    (``max_pixels``, else ``$SAMKIT_MAX_IMAGE_PIXELS``, else ``DEFAULT_MAX_PIXELS``) before
    any decoding; EXIF orientation is applied to files and PIL images. In-memory inputs are
    not size-checked. Raises ``ImageError`` for anything unreadable or unsupported.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        label = getattr(source, "filename", "") or "<PIL image>"
        return _decode(source, label)
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), resolve_max_pixels(max_pixels))
    raise ImageError(
        f"unsupported image source of type {type(source).__name__}: "
        "expected a path, a PIL image or a numpy array"
    )


def require_min_size(image: np.ndarray, name: str | os.PathLike, min_side: int = MIN_IMAGE_SIDE) -> None:
    """Raise ``ImageError`` when a side of the (H, W, ...) image is under ``min_side`` pixels."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"image too small: {name} is {w} x {h} pixels; samkit needs at least "
                         f"{min_side} x {min_side} (upscale it first)")


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit: the argument, else ``$SAMKIT_MAX_IMAGE_PIXELS``, else the default."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            raise ImageError(f"{MAX_PIXELS_ENV} must be a positive integer, got {raw!r}") from None
    if max_pixels <= 0:
        raise ImageError(f"the image pixel limit must be a positive integer, got {max_pixels}")
    return max_pixels


def _load_file(path: Path, max_pixels: int) -> np.ndarray:
    """Open, size-check and fully decode the image file at ``path``."""
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"image path is a directory, not a file: {path}")
    with _pil_bomb_check_disabled():
        try:
            with Image.open(path) as im:
                _check_size(path, im.size, max_pixels)
                im.load()
                return _decode(im, str(path))
        except UnidentifiedImageError:
            raise ImageError(f"cannot read image {path}: not a recognised image format") from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"cannot read image {path}: {exc}") from None


def _check_size(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Raise ``ImageError`` when the header size (W, H) exceeds ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {path} is {width} x {height} = {width * height:,} pixels, "
            f"above the limit of {max_pixels:,}; raise it with --max-pixels N "
            f"or the {MAX_PIXELS_ENV} environment variable"
        )


@contextmanager
def _pil_bomb_check_disabled() -> Iterator[None]:
    """Turn off PIL's decompression-bomb check (we enforce our own limit); restored on exit.

    Re-entrant across threads: the first caller in saves ``Image.MAX_IMAGE_PIXELS`` and the
    last one out restores it, so concurrent loads are not serialised.
    """
    global _pil_guard_depth, _pil_saved_limit
    with _pil_guard_lock:
        if _pil_guard_depth == 0:
            _pil_saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_guard_depth += 1
    try:
        yield
    finally:
        with _pil_guard_lock:
            _pil_guard_depth -= 1
            if _pil_guard_depth == 0:
                Image.MAX_IMAGE_PIXELS = _pil_saved_limit


def _decode(im: Image.Image, label: str) -> np.ndarray:
    """Apply EXIF orientation and convert a PIL image of any mode to (H, W, 3) uint8."""
    try:
        im = ImageOps.exif_transpose(im)
        if im.mode in _SIXTEEN_BIT_MODES:
            return _array_to_rgb(_sixteen_bit_to_uint8(np.asarray(im)))
        if im.mode == "F":
            return _array_to_rgb(_float_image_to_uint8(np.asarray(im), label))
        if im.mode in _PALETTE_MODES:
            im = im.convert("RGBA")
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except _DECODE_ERRORS as exc:
        raise ImageError(f"cannot read image {label}: {exc}") from None


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit ``I``) grey levels -> uint8 by /257, rounded and clipped."""
    return np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _float_image_to_uint8(values: np.ndarray, label: str) -> np.ndarray:
    """PIL ``F`` pixels -> uint8: scaled by 255 when max <= 1, else clipped to 0..255."""
    _require_finite(values, label)
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> C-contiguous (H, W, 3) uint8."""
    shape = "x".join(map(str, array.shape))
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {shape}")
    if array.size == 0:
        raise ImageError(f"image array is empty (shape {shape})")
    pixels = _array_to_uint8(array)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an array of a supported dtype to uint8 (see the module docstring)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return _sixteen_bit_to_uint8(array)
    if np.issubdtype(array.dtype, np.floating):
        _require_finite(array, "image array")
        return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise ImageError(
        f"unsupported image array dtype {array.dtype}: use uint8, uint16, bool or float in 0..1"
    )


def _require_finite(values: np.ndarray, label: str) -> None:
    """Raise ``ImageError`` when float pixel values contain NaN or infinity."""
    if not np.isfinite(values).all():
        raise ImageError(f"{label} contains NaN or infinite pixel values")
