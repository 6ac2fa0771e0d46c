"""Binary mask utilities: COCO RLE (via pycocotools), boxes, areas, overlays and PNG export."""
from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

Color = tuple[int, int, int]


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) mask -> pycocotools compressed RLE (bytes counts). pycocotools reads column-major uint8: OpenCV's
    blocked transpose writes it several times faster than numpy's strided copy."""
    pixels = np.ascontiguousarray(_as_bool_2d(mask)).view(np.uint8)
    if pixels.size == 0:
        return mask_utils.encode(np.asfortranarray(pixels))
    return mask_utils.encode(cv2.transpose(pixels).T)


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) mask -> COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    return _json_rle(encode_rle(mask))


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
    return [float(v) for v in mask_utils.toBbox(encode_rle(mask))]


def mask_area(mask: np.ndarray) -> int:
    """Number of foreground pixels of an (H, W) mask."""
    return int(np.count_nonzero(_as_bool_2d(mask)))


def mask_geometry(mask: np.ndarray) -> dict:
    """``rle`` (compressed COCO RLE, JSON-ready), ``bbox`` (XYWH) and ``area`` of an (H, W) mask, from one
    encoding (box and area are read from the runs, not from the pixels again)."""
    rle = encode_rle(mask)
    return {"rle": _json_rle(rle), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": int(mask_utils.area(rle))}


def mask_colors(count: int) -> list[Color]:
    """``count`` distinct, deterministic RGB colours (golden-ratio hue steps)."""
    hues = (0.6 + 0.618033988749895 * np.arange(count)) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]
    return [(round(255 * r), round(255 * g), round(255 * b)) for r, g, b in rgb]


def overlay_masks(
    image: np.ndarray,
    masks: np.ndarray | Iterable[np.ndarray],
    alpha: float = 0.5,
    colors: Sequence[Color] | np.ndarray | None = None,
    contour_width: int | None = None,
    max_side: int | None = None,
) -> np.ndarray:
    """Tint the masks over the (H, W, 3) uint8 image and outline each; return a new (H, W, 3) uint8.

    ``masks``: an (N, H, W) array or an iterable of (H, W) masks (read one at a time, so a large image
    never holds them all). Each pixel is blended once, with the colour of the last mask covering it
    (``colors[i]``, default :func:`mask_colors`), at opacity ``alpha``: the photo stays visible however
    many masks overlap. Then every mask's border is drawn in its colour, ``contour_width`` px wide
    (default: 1 px per 500 px of the shorter side, at least 1) on the mask's own pixels, so pixels
    outside every mask are left unchanged. ``max_side``: draw on the image downscaled to at most this many
    pixels on its longer side (each mask is downscaled as it is read), for very large images.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = masks[None]
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
            raise ValueError(f"masks must be Nx{image.shape[0]}x{image.shape[1]}, got {masks.shape}")
        if colors is not None and len(colors) < len(masks):
            raise ValueError(f"got {len(colors)} colours for {len(masks)} masks")
    full = image.shape[:2]
    if max_side is not None and max(full) > max_side:
        scale = max_side / max(full)
        size = (max(1, round(full[1] * scale)), max(1, round(full[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        masks = (cv2.resize(np.asarray(m, dtype=np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks)
    width = contour_width or max(1, round(min(image.shape[:2]) / 500))
    band = np.ones((2 * width + 1, 2 * width + 1), np.uint8)  # erosion by this leaves a `width` px border
    owner = np.zeros(image.shape[:2], dtype=np.uint16)  # 1 + index of the last mask covering each pixel
    edge = np.zeros(image.shape[:2], dtype=np.uint16)  # 1 + index of the last mask outlined at each pixel
    count = 0
    for count, mask in enumerate(masks, start=1):
        if count > np.iinfo(np.uint16).max:
            raise ValueError(f"at most {np.iinfo(np.uint16).max} masks per overlay")
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"masks must be Nx{full[0]}x{full[1]}, got a mask of {mask.shape}")
        owner[mask] = count
        pixels = mask.view(np.uint8)
        edge[pixels > cv2.erode(pixels, band)] = count
    palette = mask_colors(count) if colors is None else [tuple(int(v) for v in c) for c in colors]
    if len(palette) < count:
        raise ValueError(f"got {len(palette)} colours for {count} masks")
    table = np.asarray([(0, 0, 0), *palette[:count]], dtype=np.float32)  # row 0: no mask
    out = image.copy()
    rows = max(1, (1 << 20) // image.shape[1])  # blend ~1 M pixels at a time: float temporaries stay small
    for y0 in range(0, image.shape[0], rows):
        part, own, rim = out[y0:y0 + rows], owner[y0:y0 + rows], edge[y0:y0 + rows]
        covered = own > 0
        part[covered] = np.rint((1.0 - alpha) * part[covered] + alpha * table[own[covered]]).astype(np.uint8)
        outlined = rim > 0
        part[outlined] = table[rim[outlined]].astype(np.uint8)
    return out


def draw_legend(image: np.ndarray, entries: Sequence[tuple[str, Color]]) -> np.ndarray:
    """A legend in the top-left corner of a copy of the (H, W, 3) uint8 image: one colour swatch and
    text per entry, on a dark translucent panel (sized to the image: readable from 300 to 10000 px)."""
    out = image.copy()
    if not entries:
        return out
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 900)
    thick = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, text_h), base = cv2.getTextSize("Ag", font, scale, thick)
    line = text_h + base + max(4, round(6 * scale))
    pad = max(4, round(8 * scale))
    text_w = max(cv2.getTextSize(text, font, scale, thick)[0][0] for text, _ in entries)
    panel_w = min(w, pad * 3 + line + text_w)
    panel_h = min(h, pad * 2 + line * len(entries))
    region = out[:panel_h, :panel_w]
    region[:] = np.rint(region * 0.35).astype(np.uint8)  # darken: white text reads on any photo
    for i, (text, color) in enumerate(entries):
        top = pad + i * line
        cv2.rectangle(out, (pad, top + 2), (pad + line - 6, top + line - 4), tuple(int(c) for c in color), -1)
        cv2.putText(out, text, (pad * 2 + line - 6, top + text_h + 2), font, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
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


def _json_rle(rle: dict) -> dict:
    """pycocotools' compressed RLE (bytes counts) -> ``{"size": [H, W], "counts": str}``."""
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("utf-8")}
