"""Mask utilities: RLE round trips checked against pycocotools, boxes, areas, overlays, PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samkit.data.masks import (
    draw_legend,
    mask_area,
    mask_bbox_xywh,
    mask_colors,
    mask_geometry,
    mask_to_rle,
    mask_to_uncompressed_rle,
    overlay_masks,
    rle_to_mask,
    save_mask_png,
)

# pycocotools 2.0.11 ``decode`` trips a numpy 2 DeprecationWarning inside its own Cython code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(scope="module")
def grabcut_masks(data_dir: Path) -> dict[str, np.ndarray]:
    """Every GrabCut ground truth as an (H, W) bool mask (255 = foreground; 128 = unknown band)."""
    paths = sorted((data_dir / "GrabCut" / "boundary_GT").glob("*.bmp"))
    assert paths
    return {path.name: np.asarray(Image.open(path).convert("L")) == 255 for path in paths}


def _hand_mask() -> np.ndarray:
    """5x6 mask; foreground spans columns 1..4 and rows 2..3 (6 pixels)."""
    mask = np.zeros((5, 6), bool)
    mask[2, 1:5] = True
    mask[3, 2:4] = True
    return mask


EDGE_MASKS = {
    "empty": np.zeros((3, 4), bool),
    "full": np.ones((3, 4), bool),
    "starts_with_fg": np.eye(4, dtype=bool),
    "single_pixel": np.ones((1, 1), bool),
    "hand": _hand_mask(),
}


# --- RLE ----------------------------------------------------------------------------------


def test_rle_round_trip_on_grabcut(grabcut_masks: dict[str, np.ndarray]) -> None:
    for name, mask in grabcut_masks.items():
        rle = json.loads(json.dumps(mask_to_rle(mask)))  # JSON-serialisable
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str), name
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask, err_msg=name)
        np.testing.assert_array_equal(rle_to_mask(rle), mask, err_msg=name)


def test_uncompressed_rle_on_grabcut(grabcut_masks: dict[str, np.ndarray]) -> None:
    for name, mask in grabcut_masks.items():
        rle = json.loads(json.dumps(mask_to_uncompressed_rle(mask)))
        assert sum(rle["counts"]) == mask.size, name
        compressed = mask_utils.frPyObjects(rle, *rle["size"])
        np.testing.assert_array_equal(mask_utils.decode(compressed).astype(bool), mask, err_msg=name)
        assert compressed["counts"].decode() == mask_to_rle(mask)["counts"], name
        np.testing.assert_array_equal(rle_to_mask(rle), mask, err_msg=name)


@pytest.mark.parametrize("name", sorted(EDGE_MASKS))
def test_rle_edge_cases(name: str) -> None:
    mask = EDGE_MASKS[name]
    rle = mask_to_rle(mask)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    np.testing.assert_array_equal(rle_to_mask({**rle, "counts": rle["counts"].encode()}), mask)
    uncompressed = mask_to_uncompressed_rle(mask)
    decoded = mask_utils.decode(mask_utils.frPyObjects(uncompressed, *uncompressed["size"]))
    np.testing.assert_array_equal(decoded.astype(bool), mask)
    result = rle_to_mask(uncompressed)
    assert result.dtype == bool and result.flags["C_CONTIGUOUS"]


def test_rle_of_views_and_odd_shapes(grabcut_masks: dict[str, np.ndarray]) -> None:
    """Strided and transposed views, odd sizes, one row or column: each encodes to the mask it is."""
    mask = next(iter(grabcut_masks.values()))
    for view in (mask[:, ::3], mask[::2, 1::5], mask.T, mask[7:8], mask[:, 11:12], mask[:301, :199]):
        np.testing.assert_array_equal(rle_to_mask(mask_to_rle(view)), view)
        assert mask_to_rle(view)["counts"] == mask_to_rle(view.copy())["counts"]


def test_uncompressed_counts_are_column_major() -> None:
    # columns of the hand mask, top to bottom: col0 all bg, col1 row2, col2 rows 2-3, ...
    assert mask_to_uncompressed_rle(_hand_mask()) == {
        "size": [5, 6],
        "counts": [7, 1, 4, 2, 3, 2, 3, 1, 7],
    }
    assert mask_to_uncompressed_rle(np.ones((2, 2), bool))["counts"] == [0, 4]


def test_non_bool_masks_are_binarised() -> None:
    mask = _hand_mask()
    assert mask_to_rle(mask.astype(np.uint8) * 255) == mask_to_rle(mask)
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.zeros((1, 3, 4), bool))


# --- boxes and areas ----------------------------------------------------------------------


def test_bbox_and_area_hand_computed() -> None:
    mask = _hand_mask()
    assert mask_bbox_xywh(mask) == [1.0, 2.0, 4.0, 2.0]
    assert mask_area(mask) == 6
    assert isinstance(mask_area(mask), int)


def test_bbox_and_area_of_empty_mask() -> None:
    assert mask_bbox_xywh(np.zeros((4, 4), bool)) == [0.0, 0.0, 0.0, 0.0]
    assert mask_area(np.zeros((4, 4), bool)) == 0


def test_bbox_and_area_match_numpy_on_grabcut(grabcut_masks: dict[str, np.ndarray]) -> None:
    for name, mask in list(grabcut_masks.items())[:10]:
        ys, xs = np.nonzero(mask)
        expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert mask_bbox_xywh(mask) == [float(v) for v in expected], name
        assert mask_area(mask) == int(mask.sum()), name


# --- overlay ------------------------------------------------------------------------------


def test_overlay_changes_only_mask_pixels(data_dir: Path, grabcut_masks: dict[str, np.ndarray]) -> None:
    name = min(grabcut_masks)
    jpg = data_dir / "GrabCut" / "data_GT" / name.replace(".bmp", ".jpg")
    image = np.asarray(Image.open(jpg).convert("RGB"))
    original = image.copy()
    first = grabcut_masks[name]
    second = np.zeros_like(first)
    second[:40, :40] = True
    masks = np.stack([first, second])
    out = overlay_masks(image, masks, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    outside = ~masks.any(axis=0)
    np.testing.assert_array_equal(out[outside], image[outside])
    changed = (out != image).any(axis=2)
    assert changed[first].mean() > 0.99 and changed[second].mean() > 0.99
    np.testing.assert_array_equal(image, original)  # input untouched


def test_overlay_tint_and_contour_colours() -> None:
    image = np.full((9, 9, 3), 100, np.uint8)
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    out = overlay_masks(image, mask[None], alpha=0.5, colors=[(200, 0, 50)])
    np.testing.assert_array_equal(out[4, 4], [150, 50, 75])  # interior: 50 % blend
    np.testing.assert_array_equal(out[2, 4], [200, 0, 50])  # boundary: contour colour
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])


def test_overlay_default_colours_are_deterministic_and_distinct() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    masks = np.ones((3, 4, 4), bool)
    np.testing.assert_array_equal(overlay_masks(image, masks), overlay_masks(image, masks))
    colors = mask_colors(20)
    assert colors == mask_colors(20)
    assert len(set(colors)) == 20
    assert all(0 <= c <= 255 for color in colors for c in color)


def test_overlay_rejects_bad_shapes() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="masks"):
        overlay_masks(image, np.zeros((1, 5, 4), bool))
    with pytest.raises(ValueError, match="image"):
        overlay_masks(image[..., 0], np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="colours"):
        overlay_masks(image, np.zeros((2, 4, 4), bool), colors=[(1, 2, 3)])


# --- PNG export ---------------------------------------------------------------------------


def test_save_mask_png(tmp_path: Path, grabcut_masks: dict[str, np.ndarray]) -> None:
    mask = next(iter(grabcut_masks.values()))
    save_mask_png(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as im:
        assert im.format == "PNG" and im.mode == "L"
        pixels = np.asarray(im)
    assert set(np.unique(pixels)) == {0, 255}
    np.testing.assert_array_equal(pixels == 255, mask)


def test_overlay_keeps_the_photo_visible_under_many_masks(data_dir: Path, grabcut_masks: dict[str, np.ndarray]) -> None:
    name = min(grabcut_masks)  # a real photo
    image = np.asarray(Image.open(data_dir / "GrabCut" / "data_GT" / name.replace(".bmp", ".jpg")).convert("RGB"))
    mask = np.zeros(image.shape[:2], bool)
    mask[50:200, 60:300] = True
    stack = np.stack([mask] * 120)  # 120 masks over the same pixels: blended once, not 120 times
    out = overlay_masks(image, stack, alpha=0.4, contour_width=1)
    inner = np.zeros_like(mask)
    inner[52:198, 62:298] = True  # away from the 1 px outline
    colour = np.asarray(mask_colors(120)[-1], np.float64)
    expected = np.rint(0.6 * image[inner] + 0.4 * colour)
    np.testing.assert_allclose(out[inner], expected, atol=1)
    # an iterable of masks (read one at a time) gives the same picture as the stack
    np.testing.assert_array_equal(overlay_masks(image, iter(stack[:3]), alpha=0.4),
                                  overlay_masks(image, stack[:3], alpha=0.4))


def test_overlay_max_side_downscales() -> None:
    image = np.full((100, 300, 3), 50, np.uint8)
    mask = np.zeros((100, 300), bool)
    mask[20:80, 30:150] = True
    out = overlay_masks(image, iter([mask]), max_side=150, colors=[(255, 0, 0)])
    assert out.shape == (50, 150, 3)
    assert (out[25, 40] != 50).any() and (out[25, 120] == 50).all()


def test_legend_is_drawn_in_the_top_left_corner_only() -> None:
    image = np.full((480, 640, 3), 200, np.uint8)
    out = draw_legend(image, [("mask_0.png  IoU 0.93", (255, 0, 0)), ("mask_1.png  IoU 0.50", (0, 0, 255))])
    changed = (out != image).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() < 120 and xs.max() < 400  # a panel, not the whole picture
    assert ((out == (255, 0, 0)).all(axis=2)).any() and ((out == (0, 0, 255)).all(axis=2)).any()  # swatches
    assert ((out == 255).all(axis=2)).any()  # white text


def test_mask_geometry_matches_the_separate_helpers(grabcut_masks: dict[str, np.ndarray]) -> None:
    masks = [*EDGE_MASKS.values(), *list(grabcut_masks.values())[:10]]
    for mask in masks:
        geometry = json.loads(json.dumps(mask_geometry(mask)))  # JSON-ready
        assert geometry == {"rle": mask_to_rle(mask), "bbox": mask_bbox_xywh(mask), "area": mask_area(mask)}
        assert geometry["area"] == int(mask.sum())
