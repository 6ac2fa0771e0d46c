"""RefCOCO-style reader: the shared subset (36 expressions, 13 refs, 6 images), PNG vs polygon targets,
the plain one-record-per-expression variant, JSONL, write_refs round trip, and errors naming the record."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.data.masks import mask_to_rle
from samkit.data.readers import DatasetError, DatasetWarning, open_dataset
from samkit.data.refer import RefDataset, RefSample, group_key, write_refs
from samkit.eval.metrics import iou
from tests.data.refer_toolkit import toolkit_copy

SUBSET = "refcoco_coco128_subset"


@pytest.fixture(scope="module")
def subset(data_dir: Path) -> Path:
    return data_dir / SUBSET


@pytest.fixture(scope="module")
def refs(subset: Path) -> RefDataset:
    return RefDataset(subset / "refs.json")


def test_shared_subset_counts_and_metadata(refs: RefDataset, subset: Path) -> None:
    raw = json.loads((subset / "refs.json").read_text())
    assert len(raw) == 13 and len(refs) == 36 == sum(len(r["sentences"]) for r in raw)
    assert len(refs.images) == 6 and len(set(refs.names)) == 36
    samples = list(refs)
    assert not refs.skipped
    assert len({s.extra["record"] for s in samples}) == 13
    # SOURCE.txt says refcoco has 13 sentences, but 14 + 12 + 6 + 4 = 36, the total it also gives
    assert Counter(s.group for s in samples) == {"refcoco(unc)/testB": 14, "refcoco+(unc)/testB": 12,
                                                 "refcocog(google)/val": 6, "refcocog(umd)/val": 4}
    first = samples[0]
    assert isinstance(first, RefSample) and first.name == "refcoco+_49805_141420"
    assert first.sentence == "glass with water" and first.extra["category"] == "cup"
    assert first.extra["sent_id"] == 141420 and first.extra["image_id"] == 605 and first.extra["mask_source"] == "png"
    # the expressions of an image are consecutive (one image embedding per image in evaluation)
    runs = [s.source for i, s in enumerate(samples) if i == 0 or s.source != samples[i - 1].source]
    assert len(runs) == len(set(runs)) == 6


def test_shared_subset_masks_match_images_and_boxes(refs: RefDataset) -> None:
    for sample in refs:
        h, w = sample.image.shape[:2]
        assert sample.image.dtype == np.uint8 and sample.masks.shape == (1, h, w) and sample.mask.dtype == bool
        assert sample.mask.sum() > 500
        ys, xs = np.nonzero(sample.mask)
        x, y, bw, bh = sample.extra["bbox_xywh"]  # RefCOCO's box; the mask comes from the matched instance
        assert abs(xs.min() - x) < 4 and abs(ys.min() - y) < 4 and abs(xs.max() + 1 - (x + bw)) < 4
        assert abs(ys.max() + 1 - (y + bh)) < 4


def test_polygon_targets_agree_with_png_masks(refs: RefDataset, subset: Path) -> None:
    polygons = RefDataset(subset / "refs.json", mask_source="polygon")
    assert polygons.names == refs.names
    ious = [iou(a.mask, b.mask) for a, b in zip(refs, polygons, strict=False)]
    assert all(p.extra["mask_source"] == "polygon" for p in polygons)
    # measured: 1.0 for all 36 (the PNGs were rasterised from these polygons with pycocotools, as here)
    assert min(ious) >= 0.99


def test_open_dataset_kind_refer(subset: Path) -> None:
    assert open_dataset("refer", subset).names == open_dataset("refer", subset / "refs.json").names


def _scene(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 40x60 image with a 10x20 rectangle target, written as images/a.png and masks/a.png."""
    image = np.full((40, 60, 3), 90, dtype=np.uint8)
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:20, 20:40] = True
    image[mask] = (200, 30, 30)
    for sub, array in (("images", image), ("masks", mask.astype(np.uint8) * 255)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / sub / "a.png")
    return image, mask


def test_plain_records_png_polygon_and_rle(tmp_path: Path) -> None:
    _, mask = _scene(tmp_path)
    box_polygon = [19.5, 9.5, 39.5, 9.5, 39.5, 19.5, 19.5, 19.5]  # pixel-edge corners of the rectangle
    records = [
        {"image": "images/a.png", "mask": "masks/a.png", "sentence": "the  red box "},
        {"image": "images/a.png", "polygon": box_polygon, "sentence": "the red box", "split": "val"},
        {"image": "images/a.png", "segmentation": mask_to_rle(mask), "sentences": ["red", {"sent": "box"}]},
    ]
    (tmp_path / "refs.json").write_text(json.dumps({"refs": records}))
    ds = RefDataset(tmp_path / "refs.json")
    assert len(ds) == 4 and ds.names == ["refs_r0_s0", "refs_r1_s0", "refs_r2_s0", "refs_r2_s1"]
    samples = list(ds)
    assert samples[0].sentence == "the red box" and [s.sentence for s in samples[2:]] == ["red", "box"]
    for s in samples:
        assert iou(s.mask, mask) > 0.9, s.name
    assert np.array_equal(samples[2].mask, mask)
    assert samples[1].group == "val" and samples[0].group == "all"
    assert group_key({"dataset": "refcocog", "split_by": "umd", "split": "val"}) == "refcocog(umd)/val"

    (tmp_path / "refs.jsonl").write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n")
    assert len(RefDataset(tmp_path / "refs.jsonl")) == 2


def test_write_refs_round_trip(refs: RefDataset, tmp_path: Path) -> None:
    samples = [refs[i] for i in range(5)]
    path = write_refs(samples, tmp_path / "out")
    back = RefDataset(path)
    assert len(back) == 5 and len(list((tmp_path / "out" / "images").iterdir())) == len({s.source for s in samples})
    for a, b in zip(samples, back, strict=False):
        assert a.sentence == b.sentence and np.array_equal(a.mask, b.mask) and np.array_equal(a.image, b.image)
        assert b.name == a.name and b.group == a.group  # dataset, ref_id and sent_id travel along


@pytest.mark.parametrize("record, needle", [
    ({"image": "images/missing.png", "mask": "masks/a.png", "sentence": "x"}, "image file not found"),
    ({"image": "images/a.png", "mask": "masks/missing.png", "sentence": "x"}, "mask file not found"),
    ({"image": "images/a.png", "sentence": "x"}, "no target"),
    ({"image": "images/a.png", "mask": "masks/a.png"}, "no 'sentences'"),
    ({"image": "images/a.png", "mask": "masks/a.png", "sentences": []}, "non-empty list"),
    ({"image": "images/a.png", "mask": "masks/a.png", "sentences": ["ok", "  "]}, "sentence 1"),
    ({"image": "images/a.png", "polygon": [1, 2, 3, 4, 5], "sentence": "x"}, "bad 'polygon'"),
    ({"image": "images/a.png", "polygon": [[1, 2, 3, "a", 5, 6]], "sentence": "x"}, "not a list of numbers"),
    ({"mask": "masks/a.png", "sentence": "x"}, "no 'image'"),
    (["not", "an", "object"], "expected an object"),
])
def test_malformed_record_names_its_index(tmp_path: Path, record, needle: str) -> None:
    _scene(tmp_path)
    good = {"image": "images/a.png", "mask": "masks/a.png", "sentence": "the box"}
    (tmp_path / "refs.json").write_text(json.dumps([good, record]))
    with pytest.raises(DatasetError, match=r"record 1\b") as info:
        RefDataset(tmp_path / "refs.json")
    assert needle in str(info.value)
    with pytest.warns(DatasetWarning, match=needle):
        lenient = RefDataset(tmp_path / "refs.json", strict=False)
    assert len(lenient) == 1 and len(lenient.skipped) == 1


def test_file_level_errors(tmp_path: Path) -> None:
    _scene(tmp_path)
    with pytest.raises(DatasetError, match="refs file not found"):
        RefDataset(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read refs file"):
        RefDataset(tmp_path / "bad.json")
    (tmp_path / "dict.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="expected a JSON list"):
        RefDataset(tmp_path / "dict.json")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DatasetError, match="no refer samples"):
        RefDataset(tmp_path / "empty.json")
    record = {"image": "images/a.png", "mask": "masks/a.png", "sentence": "x"}
    (tmp_path / "png.json").write_text(json.dumps([record]))
    with pytest.raises(DatasetError, match="record 0.*need a polygon"):
        RefDataset(tmp_path / "png.json", mask_source="polygon")
    with pytest.raises(ValueError, match="mask_source"):
        RefDataset(tmp_path / "png.json", mask_source="rle")


def test_mask_of_another_size_fails_on_load(tmp_path: Path) -> None:
    _scene(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "small.png")
    (tmp_path / "refs.json").write_text(json.dumps([{"image": "images/a.png", "mask": "masks/small.png",
                                                     "sentence": "x"}]))
    ds = RefDataset(tmp_path / "refs.json")
    with pytest.raises(DatasetError, match="mask is 10x10 but the image is 60x40"), pytest.warns(DatasetWarning):
        ds[0]


# ------------------------------------------------------------------ the refer toolkit's refs(unc).p + instances.json


def test_refer_toolkit_files_read_as_the_json_subset(subset, tmp_path):
    path = toolkit_copy(subset, tmp_path / "refcoco+")
    toolkit = RefDataset(path, image_root=subset / "images")
    plain = RefDataset(subset / "refs.json", mask_source="polygon")
    assert len(toolkit) == len(plain) == 36
    for a, b in zip(toolkit, plain, strict=False):
        assert a.sentence == b.sentence and np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
        assert a.extra["ref_id"] == b.extra["ref_id"] and a.extra["category"] == b.extra["category"]
        assert a.extra["dataset"] == "refcoco+" and a.extra["split_by"] == "unc"
    from samkit.data.refer import open_refs

    assert len(open_refs(path.parent, image_root=subset / "images")) == 36  # the folder finds the .p file
    one = RefDataset(path, image_root=subset / "images", split=plain[0].extra["split"])
    assert len(one) > 0 and all(s.extra["split"] == plain[0].extra["split"] for s in one)
    with pytest.raises(DatasetError, match="no refs in split 'nosuch'"):
        RefDataset(path, image_root=subset / "images", split="nosuch")


def test_refer_toolkit_errors(subset, tmp_path):
    import pickle

    bad = toolkit_copy(subset, tmp_path / "a", extra_refs=[{"ref_id": 7, "ann_id": 99, "image_id": 605}])
    with pytest.raises(DatasetError, match="ref 7: ann_id 99 / image_id 605 not in instances.json"):
        RefDataset(bad, image_root=subset / "images")
    (tmp_path / "a" / "instances.json").unlink()
    with pytest.raises(DatasetError, match="needs its instances.json beside it"):
        RefDataset(bad, image_root=subset / "images")

    class Payload:  # a pickle that would build an object (or run code) is refused
        def __reduce__(self):
            return (eval, ("print('pwned')",))  # not print: importing Ray replaces builtins.print

    evil = tmp_path / "b" / "refs(unc).p"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps([Payload()]))
    with pytest.raises(DatasetError, match="refuses to build builtins.eval"):
        RefDataset(evil)
