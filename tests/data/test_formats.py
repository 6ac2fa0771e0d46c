"""Writers round-trip through the readers: SA-1B and COCO RLE exactly, polygons and YOLO-seg closely,
PNG folders exactly. Masks are real: BSDS500 regions and the GrabCut objects."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samkit.data.formats import (
    SegmentPrompts,
    coco_document,
    labelme_document,
    mask_annotation,
    mask_to_polygons,
    read_png_masks,
    sa1b_document,
    segment_document,
    write_label_map,
    write_png_masks,
    write_sa1b,
    write_yolo_seg,
)
from samkit.data.masks import mask_to_rle
from samkit.data.readers import open_dataset


@pytest.fixture(scope="module")
def sample(data_dir):
    """A BSDS500 image with its largest regions of the first annotator (single- and multi-part masks)."""
    ds = open_dataset("bsds500", data_dir / "BSDS500", split="val")
    s = ds[0]
    areas = s.masks.reshape(len(s.masks), -1).sum(1)
    return s, s.masks[np.argsort(-areas)[:6]]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _records(masks: np.ndarray) -> list[dict]:
    return [{"segmentation": mask_to_rle(m), "area": int(m.sum()), "predicted_iou": 0.9, "stability_score": 0.97}
            for m in masks]


def test_sa1b_round_trip_is_exact(sample, tmp_path):
    s, masks = sample
    shutil.copy(s.source, tmp_path / f"{s.name}.jpg")
    h, w = masks.shape[1:]
    write_sa1b(tmp_path / f"{s.name}.json", f"{s.name}.jpg", h, w, _records(masks))
    back = open_dataset("sa1b", tmp_path)[0]
    assert np.array_equal(back.masks, masks)
    assert [a["predicted_iou"] for a in back.extra["annotations"]] == [0.9] * len(masks)
    assert back.extra["image_info"] == {"image_id": 0, "file_name": f"{s.name}.jpg", "height": h, "width": w}


def test_sa1b_document_accepts_binary_masks(sample):
    _, masks = sample
    doc = sa1b_document("x.jpg", *masks.shape[1:], [{"segmentation": m, "area": int(m.sum())} for m in masks])
    decoded = [mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
               for a in doc["annotations"]]
    assert all(np.array_equal(d.astype(bool), m) for d, m in zip(decoded, masks, strict=False))


@pytest.mark.parametrize("kind", ["rle", "polygon"])
def test_coco_round_trip(sample, tmp_path, kind):
    s, masks = sample
    h, w = masks.shape[1:]
    shutil.copy(s.source, tmp_path / f"{s.name}.jpg")
    doc = coco_document([sa1b_document(f"{s.name}.jpg", h, w, _records(masks))], segmentation=kind)
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    back = open_dataset("coco", tmp_path / "annotations.json", image_dir=tmp_path)[0]
    assert len(back.masks) == len(masks)
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(masks) + 1))
    if kind == "rle":
        assert np.array_equal(back.masks, masks)
    else:  # outer contours through boundary pixel centres: holes are filled and the rim is approximate
        for got, want in zip(back.masks, masks, strict=False):
            assert _iou(got, _filled(want)) > 0.9


def test_polygons_of_a_rectangle_and_of_two_parts():
    m = np.zeros((30, 40), bool)
    m[5:15, 10:30] = True
    m[20:25, 2:6] = True
    polys = mask_to_polygons(m)
    assert len(polys) == 2 and polys[0] == [10.0, 5.0, 10.0, 14.0, 29.0, 14.0, 29.0, 5.0]
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_yolo_seg_round_trip(sample, tmp_path):
    s, masks = sample
    (tmp_path / "images").mkdir()
    shutil.copy(s.source, tmp_path / "images" / f"{s.name}.jpg")
    write_yolo_seg(tmp_path / "labels" / f"{s.name}.txt", masks, class_ids=range(len(masks)))
    back = open_dataset("yolo", tmp_path)[0]
    assert back.categories == list(range(len(masks)))
    for got, want in zip(back.masks, masks, strict=False):
        assert _iou(got, _filled(_largest_part(want))) > 0.9


def _largest_part(mask: np.ndarray) -> np.ndarray:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: background not reachable from the border becomes foreground."""
    padded = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    _, labels = cv2.connectedComponents(padded, connectivity=4)
    return labels[1:-1, 1:-1] != labels[0, 0]


def test_png_folder_round_trip(sample, tmp_path):
    _, masks = sample
    write_png_masks(tmp_path / "m", masks, _records(masks))
    assert np.array_equal(read_png_masks(tmp_path / "m"), masks)
    index = json.loads((tmp_path / "m" / "masks.json").read_text())
    assert [e["file"] for e in index] == [f"mask_{i:03d}.png" for i in range(len(masks))]
    assert index[0]["area"] == int(masks[0].sum()) and index[0]["predicted_iou"] == 0.9
    with pytest.raises(FileNotFoundError, match="no mask"):
        read_png_masks(tmp_path)


@pytest.fixture(scope="module")
def grabcut_mask(sample) -> np.ndarray:
    """One real (H, W) mask: the largest BSDS500 region of the sample."""
    return sample[1][0]


def test_segment_document_schema(grabcut_mask):
    prompts = SegmentPrompts(points=[(10.0, 20.0)], labels=[1], box=(0.0, 0.0, 50.0, 40.0))
    ann = mask_annotation(0, grabcut_mask, 0.75, "mask_0.png", "logits_0.npy")
    doc = segment_document("a.jpg", *grabcut_mask.shape, "mobile_sam", None, prompts, [ann])
    assert doc["image"] == {"file_name": "a.jpg", "height": grabcut_mask.shape[0], "width": grabcut_mask.shape[1]}
    assert doc["prompts"]["box"] == [0.0, 0.0, 50.0, 40.0] and doc["prompts"]["points"] == [[10.0, 20.0]]
    a = doc["annotations"][0]
    assert a["area"] == int(grabcut_mask.sum()) and a["logits_file"] == "logits_0.npy"
    np.testing.assert_array_equal(mask_utils.decode({**a["segmentation"], "counts": a["segmentation"]["counts"]
                                                     .encode()}).astype(bool), grabcut_mask)
    assert json.loads(json.dumps(doc)) == doc


def test_labelme_and_label_map(grabcut_mask, tmp_path):
    small = np.zeros_like(grabcut_mask)
    small[5:15, 5:25] = True
    doc = labelme_document("a.jpg", *grabcut_mask.shape, [grabcut_mask, small])
    assert (doc["imageHeight"], doc["imageWidth"]) == grabcut_mask.shape and doc["imagePath"] == "a.jpg"
    assert {s["group_id"] for s in doc["shapes"]} == {0, 1}
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in doc["shapes"])
    path = write_label_map(tmp_path / "a.png", iter([grabcut_mask, small]), *grabcut_mask.shape)
    labels = np.asarray(Image.open(path))
    assert labels.dtype == np.uint16 or labels.dtype == np.int32
    np.testing.assert_array_equal(labels == 2, small)  # later masks on top
    np.testing.assert_array_equal(labels == 1, grabcut_mask & ~small)
    assert not list(tmp_path.glob(".*tmp"))
