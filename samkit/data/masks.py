"""Binary mask utilities: COCO RLE (via pycocotools), boxes, areas, overlays and PNG export."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

Color = tuple[int, int, int]


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) mask -> COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = _encode(mask)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE -> (H, W) bool mask. ``counts`` may be a str, bytes, or a list of ints (uncompressed)."""
    height, width = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str):
        compressed = {"size": [height, width], "counts": counts.encode("utf-8")}
    else:
        compressed = {"size": [height, width], "counts": counts}
    return np.ascontiguousarray(mask_utils.decode(compressed).astype(bool))


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict:
    """(H, W) mask -> uncompressed COCO RLE ``{"size": [H, W], "counts": [int, ...]}``.

    Counts are run lengths over the column-major (Fortran) flattening, starting with a
    (possibly zero) run of background, exactly as ``pycocotools.mask.frPyObjects`` expects.
    pycocotools has no public encoder for this form, so the runs are found with numpy.
    """
    bool_mask = _as_bool_2d(mask)
    flat = bool_mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    boundaries = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return {"size": list(bool_mask.shape), "counts": counts}


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    """Tight box ``[x, y, w, h]`` (pixels, COCO convention) of an (H, W) mask; empty -> [0, 0, 0, 0]."""
    return [float(v) for v in mask_utils.toBbox(_encode(mask))]


def mask_area(mask: np.ndarray) -> int:
    """Number of foreground pixels of an (H, W) mask."""
    return int(np.count_nonzero(_as_bool_2d(mask)))


def mask_colors(count: int) -> list[Color]:
    """``count`` distinct, deterministic RGB colours (golden-ratio hue steps)."""
    hues = (0.6 + 0.618033988749895 * np.arange(count)) % 1.0
    return [tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)) for h in hues]


def overlay_masks(
    image: np.ndarray,
    masks: np.ndarray,
    alpha: float = 0.5,
    colors: Sequence[Color] | np.ndarray | None = None,
) -> np.ndarray:
    """Tint each of the (N, H, W) masks over the (H, W, 3) uint8 image; return a new (H, W, 3) uint8.

    Mask i is blended with ``colors[i]`` (default :func:`mask_colors`) at opacity ``alpha``
    and its contour is drawn 1 px wide on the mask's own boundary pixels, so pixels outside
    every mask are left unchanged. Later masks are painted over earlier ones.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks must be Nx{image.shape[0]}x{image.shape[1]}, got {masks.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    palette = mask_colors(len(masks)) if colors is None else [tuple(int(v) for v in c) for c in colors]
    if len(palette) < len(masks):
        raise ValueError(f"got {len(palette)} colours for {len(masks)} masks")
    out = image.copy()
    for mask, color in zip(masks.astype(bool), palette):
        tint = np.asarray(color, dtype=np.float32)
        out[mask] = np.rint((1.0 - alpha) * out[mask] + alpha * tint).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color, thickness=1)
    return out


def save_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write an (H, W) mask as an 8-bit greyscale PNG (background 0, foreground 255)."""
    pixels = _as_bool_2d(mask).astype(np.uint8) * 255
    Image.fromarray(pixels).save(Path(path), format="PNG")


def _as_bool_2d(mask: np.ndarray) -> np.ndarray:
    """Validate an (H, W) mask and return it as bool (non-zero = foreground)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _encode(mask: np.ndarray) -> dict:
    """(H, W) mask -> pycocotools compressed RLE (bytes counts)."""
    return mask_utils.encode(np.asfortranarray(_as_bool_2d(mask).astype(np.uint8)))
