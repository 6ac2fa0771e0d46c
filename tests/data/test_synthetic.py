"""Paste scenes: determinism, exact masks (occlusion, feathered edges), dropping, real data, registry."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from samkit.data.readers import BSDS500Dataset, DatasetError, DatasetWarning, evaluation_image_ids, open_dataset
from samkit.data.sample import Sample
from samkit.data.synthetic import (
    FEATHER_ALPHA,
    PasteScenes,
    object_candidates,
    open_paste_scenes,
    paste,
)

BACKGROUND = np.array([40, 200, 40], dtype=np.uint8)
# Object k is colour COLOURS[k] under its mask and black elsewhere: black inside a pasted mask would
# mean image and mask were cut, scaled, flipped or placed differently.
COLOURS = np.array([[220, 30, 30], [30, 30, 220], [230, 200, 20], [200, 40, 220], [20, 210, 220], [250, 250, 250]],
                   dtype=np.uint8)


def _object(k: int) -> Sample:
    """(96, 128) image with one ellipse of COLOURS[k] (its mask) on black."""
    mask = np.zeros((96, 128), dtype=np.uint8)
    cv2.ellipse(mask, (64, 48), (20 + 7 * k, 40 - 3 * k), 15 * k, 0, 360, 1, thickness=-1)
    image = np.where(mask[..., None] > 0, COLOURS[k], 0).astype(np.uint8)
    return Sample(f"obj{k}", image, mask[None] > 0, source=f"mem://obj{k}")


def _scenes(length: int = 6, seed: int = 0, **options) -> PasteScenes:
    objects = [_object(k) for k in range(len(COLOURS))]
    backgrounds = [Sample("bg", np.broadcast_to(BACKGROUND, (120, 160, 3)).copy(), np.zeros((0, 120, 160), bool))]
    return PasteScenes(objects, backgrounds, length, seed, out_size=192, **options)


def _colour(object_name: str) -> np.ndarray:
    return COLOURS[int(object_name.split("#")[0].removeprefix("obj"))]


def _erode(mask: np.ndarray) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0) > 0


def test_scenes_are_deterministic_in_seed_and_index() -> None:
    ds = _scenes(length=5, seed=7)
    assert len(ds) == 5 and ds.names == [f"paste_7_{i}" for i in range(5)]
    a, b, again = ds[2], _scenes(length=5, seed=7)[2], ds[-3]
    for other in (b, again):
        assert other.name == a.name == "paste_7_2"
        assert np.array_equal(other.image, a.image) and np.array_equal(other.masks, a.masks)
        assert other.extra == a.extra
    assert not np.array_equal(ds[3].image, a.image)
    assert not np.array_equal(_scenes(length=5, seed=8)[2].image, a.image)
    assert [s.name for s in ds] == ds.names
    with pytest.raises(IndexError):
        ds[5]


def test_masks_are_disjoint_and_exactly_the_pasted_pixels() -> None:
    ds = _scenes(length=8, objects_per_scene=(2, 4), min_visible=0.0)
    counts = []
    for scene in ds:
        masks, image = scene.masks, scene.image
        assert max(image.shape[:2]) == 192 and masks.dtype == bool and masks.shape[1:] == image.shape[:2]
        assert len(masks) >= 1 and masks.reshape(len(masks), -1).any(axis=1).all()
        assert (masks.sum(axis=0) <= 1).all()  # occlusion: every pixel belongs to one object at most
        # Every changed pixel is labelled and every labelled pixel changed (nothing dropped is visible).
        assert np.array_equal((image != BACKGROUND).any(axis=2), masks.any(axis=0))
        extra = scene.extra
        assert len(extra["objects"]) == len(extra["scales"]) == len(extra["pasted_areas"]) == len(masks)
        for mask, name, area in zip(masks, extra["objects"], extra["pasted_areas"], strict=False):
            off = (image != _colour(name)).any(axis=2) & mask
            assert not (off & _erode(mask)).any()  # only the 1-px edge is blended
            assert mask.sum() <= area
        counts.append(len(masks))
    assert max(counts) >= 2  # some scenes really have several objects


def test_paste_feathers_the_edge_and_clips_to_the_frame() -> None:
    canvas = np.zeros((6, 8, 3), dtype=np.uint8)
    pixels = np.full((5, 5, 3), 200, dtype=np.float32)
    mask = np.ones((5, 5), dtype=bool)
    mask[0, 0] = False
    pasted = paste(canvas, pixels, mask, -2, 4)  # rows -2..2 and cols 4..8: cut at the top and right
    expected = np.zeros((6, 8), dtype=bool)
    expected[:3, 4:8] = mask[2:, :4]
    assert np.array_equal(pasted, expected)
    values = canvas[..., 0]
    assert (values[~pasted] == 0).all()
    assert values[1, 5] == 200 and values[1, 6] == 200  # interior (its neighbours are all in the mask)
    assert values[2, 5] == round(200 * FEATHER_ALPHA) and values[0, 4] == round(200 * FEATHER_ALPHA)
    assert values[0, 7] == 200  # the frame border is no mask edge


def test_objects_below_min_visible_are_dropped() -> None:
    ds = _scenes(length=8, objects_per_scene=(4, 4), scale=(0.9, 1.0), min_visible=0.6)
    dropped = 0
    for scene in ds:
        visible = scene.masks.reshape(len(scene.masks), -1).sum(axis=1)
        assert (visible >= 0.6 * np.array(scene.extra["pasted_areas"])).all()
        assert len(scene.masks) + len(scene.extra["dropped"]) <= 4
        dropped += len(scene.extra["dropped"])
    assert dropped > 0


def test_object_eligibility_and_no_usable_object() -> None:
    masks = np.zeros((3, 100, 100), dtype=bool)
    masks[0, :20, :20] = True  # 400 px: too small
    masks[1, :95] = True  # 95 % of the image: too big
    masks[2, 10:60, 10:60] = True
    sample = Sample("s", np.zeros((100, 100, 3), np.uint8), masks)
    assert object_candidates(sample).tolist() == [2]
    bad = Sample("s", sample.image, masks[:2])
    ds = PasteScenes([bad], [bad], 2)
    with pytest.raises(DatasetError), pytest.warns(DatasetWarning, match="no usable sample"):
        ds[0]
    assert list(ds) == [] and len(ds.skipped) == 1  # iteration skips unusable scenes (recorded once)
    for options in ({"objects_per_scene": (0, 2)}, {"scale": (0.5, 0.2)}, {"min_visible": 1.5}):
        with pytest.raises(ValueError):
            PasteScenes([sample], [sample], 2, **options)


def _assert_no_eval_images(scene: Sample, eval_ids: set[str]) -> None:
    sample_names = [name.split("#")[0] for name in scene.extra["objects"]] + [scene.extra["background"]]
    sources = scene.extra["object_sources"] + [scene.extra["background_source"]]
    assert not set(sample_names) & eval_ids
    assert all("/coco128-seg/" in s or "/BSDS500/images/" in s for s in sources)


def test_coco_objects_on_bsds_backgrounds(data_dir: Path) -> None:
    coco = open_dataset("coco", data_dir / "coco128-seg" / "annotations_coco_format.json",
                        image_dir=data_dir / "coco128-seg")
    backgrounds = BSDS500Dataset(data_dir / "BSDS500", "val")
    eval_ids = evaluation_image_ids(data_dir)
    for scene in PasteScenes(coco, backgrounds, 3, seed=1):
        h, w = scene.image.shape[:2]
        assert max(h, w) == 512 and min(h, w) == 342  # BSDS photos are 481x321
        assert scene.image.dtype == np.uint8 and scene.masks.dtype == bool and scene.masks.shape[1:] == (h, w)
        assert scene.masks.any(axis=(1, 2)).all() and scene.ignore is None
        assert all(s.startswith(str(data_dir / "coco128-seg")) for s in scene.extra["object_sources"])
        _assert_no_eval_images(scene, eval_ids)


def test_open_dataset_paste_uses_only_training_photos(data_dir: Path) -> None:
    ds = open_dataset("paste", data_dir, length=3, seed=2, objects_per_scene=[2, 3], out_size=256)
    assert isinstance(ds, PasteScenes) and len(ds) == 3 and ds.names[0] == "paste_2_0"
    eval_ids = evaluation_image_ids(data_dir)
    bsds_parts = ds.backgrounds.parts
    assert [p.split for p in bsds_parts] == ["train", "val"] and all(p.excluded for p in bsds_parts)
    assert not {n for p in bsds_parts for n in p.names} & eval_ids
    assert ds.objects.parts[1] is ds.backgrounds  # objects: coco128-seg + the same BSDS train/val
    scene = ds[0]
    assert max(scene.image.shape[:2]) == 256 and 1 <= len(scene.masks) <= 3
    _assert_no_eval_images(scene, eval_ids)
    assert np.array_equal(open_paste_scenes(data_dir, length=3, seed=2, objects_per_scene=(2, 3),
                                            out_size=256)[0].image, scene.image)
