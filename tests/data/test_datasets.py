"""Dataset readers on the real shared data (small subsets) and on damaged copies in tmp_path."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.data.masks import mask_to_rle, mask_to_uncompressed_rle
from samkit.data.readers import (
    BerkeleyDataset,
    BSDS500Dataset,
    CocoDataset,
    DatasetError,
    DatasetWarning,
    DavisDataset,
    GrabCutDataset,
    Sa1bDataset,
    YoloSegDataset,
    evaluation_image_ids,
    open_dataset,
)
from samkit.data.readers import base as base_module
from samkit.data.readers import bsds as bsds_module
from samkit.data.readers import ritm as ritm_module
from samkit.data.sample import Sample

# Measured on shared/data: 96 Berkeley photos + 3 GrabCut-only photos (153093, 271008, 326038;
# GrabCut's 124080 is BSDS 124084) = 99 BSDS ids; 45 in train, 54 in val, none in test.
EVAL_OVERLAP = {"train": 45, "val": 54, "test": 0}


def _grabcut_fg(data_dir: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(data_dir / "GrabCut" / "boundary_GT" / f"{name}.bmp")) == 255


def _copy_pairs(src: Path, dst: Path, subdirs: tuple[str, str], names: list[str]) -> None:
    """Copy the files named ``<name>.*`` of both subfolders from ``src`` to ``dst``."""
    for sub in subdirs:
        (dst / sub).mkdir(parents=True)
        for name in names:
            for path in (src / sub).glob(f"{name}.*"):
                shutil.copy(path, dst / sub / path.name)


def _truncate(path: Path, keep: int = 600) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- RITM folders


def test_grabcut_masks_ignore_band_and_mixed_extensions(data_dir: Path) -> None:
    ds = GrabCutDataset(data_dir / "GrabCut")
    assert len(ds) == 50 and ds.skipped == []
    assert {"124080", "llama", "music", "banana1"} <= set(ds.names)
    for name in ("llama", "music", "banana1"):  # .bmp, .JPG, .bmp
        sample = ds[ds.names.index(name)]
        assert isinstance(sample, Sample) and sample.name == name
        assert sample.masks.shape == (1, *sample.image.shape[:2])
        assert np.array_equal(sample.masks[0], _grabcut_fg(data_dir, name))
        assert sample.ignore is not None and not (sample.ignore & sample.masks[0]).any()
    assert ds[ds.names.index("banana1")].ignore.any() and not ds[ds.names.index("llama")].ignore.any()


def test_construction_reads_no_pixels(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded at construction")

    monkeypatch.setattr(base_module, "load_image", boom)
    monkeypatch.setattr(ritm_module, "read_label_map", boom)
    monkeypatch.setattr(bsds_module, "read_bsds_mat", boom)
    assert len(GrabCutDataset(data_dir / "GrabCut")) == 50
    assert len(BSDS500Dataset(data_dir / "BSDS500", "test")) == 200
    assert len(YoloSegDataset(data_dir / "coco128-seg" / "images" / "train2017")) == 128


def test_berkeley_100_masks_on_96_photos(data_dir: Path, tmp_path: Path) -> None:
    ds = BerkeleyDataset(data_dir / "Berkeley")
    assert len(ds) == 100 and ds.skipped == []
    assert len({name.rstrip("ab") for name in ds.names}) == 96
    a, b = ds[ds.names.index("189011a")], ds[ds.names.index("189011b")]
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.masks, b.masks)
    assert a.masks.shape == (1, *a.image.shape[:2]) and a.ignore is None and a.masks.any()

    # Without the per-object image copies, 189011a/b fall back to images/189011.jpg.
    root = tmp_path / "Berkeley"
    (root / "images").mkdir(parents=True)
    shutil.copytree(data_dir / "Berkeley" / "masks", root / "masks", ignore=lambda d, f: [
        x for x in f if not x.startswith("189011")])
    shutil.copy(data_dir / "Berkeley" / "images" / "189011.jpg", root / "images")
    small = BerkeleyDataset(root)
    assert small.names == ["189011", "189011a", "189011b"] and small.skipped == []
    assert np.array_equal(small[1].masks, a.masks)


def test_davis_layout_on_grabcut_images(data_dir: Path, tmp_path: Path) -> None:
    """No DAVIS copy is available: a tiny img/ + gt/ folder (palette PNG masks) made from GrabCut."""
    root = tmp_path / "DAVIS"
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    names = ["sheep", "teddy"]
    for name in names:
        shutil.copy(data_dir / "GrabCut" / "data_GT" / f"{name}.jpg", root / "img")
        gt = Image.fromarray(_grabcut_fg(data_dir, name).astype(np.uint8), mode="P")
        gt.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # DAVIS palette: index 1 dark red
        gt.save(root / "gt" / f"{name}.png")
    ds = DavisDataset(root)
    assert ds.names == names
    for name, sample in zip(names, ds, strict=False):
        assert np.array_equal(sample.masks[0], _grabcut_fg(data_dir, name)) and sample.ignore is None


# --------------------------------------------------------------------------- BSDS500


def test_bsds_regions_cover_image_once_per_annotator(data_dir: Path) -> None:
    ds = BSDS500Dataset(data_dir / "BSDS500", "val")
    sample = ds[0]
    annotator = sample.extra["annotator"]
    n_annotators = sample.extra["num_annotators"]
    assert 4 <= n_annotators <= 9 and annotator.shape == (len(sample.masks),)
    for a in range(n_annotators):  # each annotator's regions partition the image
        coverage = sample.masks[annotator == a].sum(axis=0)
        assert (coverage == 1).all()
    edges = ds.boundaries(0)
    assert edges.shape == (n_annotators, *sample.image.shape[:2]) and edges.dtype == bool and edges.any()


def test_bsds_never_returns_grabcut_or_berkeley_photos(data_dir: Path) -> None:
    ids = evaluation_image_ids(data_dir)
    assert len(ids) == sum(EVAL_OVERLAP.values()) == 99
    assert "124084" in ids and "124080" not in ids  # GrabCut's renamed BSDS photo
    eval_md5 = {_md5(p) for folder in ("GrabCut/data_GT", "Berkeley/images")
                for p in (data_dir / folder).iterdir()}
    for split, overlap in EVAL_OVERLAP.items():
        ds = BSDS500Dataset(data_dir / "BSDS500", split)
        n_images = len(list((data_dir / "BSDS500" / "images" / split).glob("*.jpg")))
        assert len(ds.excluded) == overlap and len(ds) + overlap == n_images
        assert not set(ds.names) & ids
        # Independent check: every benchmark copy here is byte-identical to its BSDS photo.
        assert not eval_md5 & {_md5(data_dir / "BSDS500" / "images" / split / f"{n}.jpg") for n in ds.names}
    assert len(BSDS500Dataset(data_dir / "BSDS500", "train", exclude_eval_overlap=False)) == 200


def test_eval_overlap_finds_renamed_reencoded_copy(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "BSDS500").symlink_to(data_dir / "BSDS500")
    (tmp_path / "Berkeley" / "images").mkdir(parents=True)
    grabcut = tmp_path / "GrabCut" / "data_GT"
    grabcut.mkdir(parents=True)
    Image.open(data_dir / "BSDS500" / "images" / "train" / "100075.jpg").save(grabcut / "bears.jpg", quality=80)
    shutil.copy(data_dir / "GrabCut" / "data_GT" / "teddy.jpg", grabcut)  # not a BSDS photo
    assert evaluation_image_ids(tmp_path) == {"100075"}


def test_bsds_exclusion_needs_the_benchmarks(data_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "BSDS500"
    _copy_pairs(data_dir / "BSDS500", root, ("images/val", "groundTruth/val"), ["101085", "101087"])
    with pytest.raises(DatasetError, match="never-train-on-eval"):
        BSDS500Dataset(root, "val")
    assert len(BSDS500Dataset(root, "val", exclude_eval_overlap=False)) == 2
    with pytest.raises(DatasetError, match="no BSDS500 samples"):  # both are Berkeley photos
        BSDS500Dataset(root, "val", eval_data_root=data_dir)
    with pytest.raises(DatasetError, match="unknown BSDS500 split"):
        BSDS500Dataset(root, "training")


# --------------------------------------------------------------------------- COCO / YOLO / SA-1B


def test_coco_and_yolo_agree_on_coco128(data_dir: Path) -> None:
    root = data_dir / "coco128-seg"
    coco = CocoDataset(root / "annotations_coco_format.json")
    yolo = YoloSegDataset(root / "images" / "train2017")
    assert coco.names == yolo.names and len(coco) == 128 and coco.skipped == yolo.skipped == []
    assert yolo.unlabelled == ["000000000250", "000000000508"]
    coco_ids = sorted(coco.category_names)  # YOLO class k is the k-th COCO category id
    for name in ["000000000009", "000000000250", "000000000257", "000000000400", "000000000629"]:
        c, y = coco[coco.names.index(name)], yolo[yolo.names.index(name)]
        assert len(c.masks) == len(y.masks) and c.ignore is None
        assert c.categories == [coco_ids[k] for k in y.categories]
        for a, b in zip(c.masks, y.masks, strict=False):  # same polygons up to 2-decimal pixel rounding
            assert (a ^ b).sum() <= max(5, 0.05 * (a | b).sum())
    assert len(coco[coco.names.index("000000000250")].masks) == 0


def test_coco_labelme_example(data_dir: Path) -> None:
    folder = data_dir / "labelme_voc_instance_examples" / "data_dataset_coco"
    ds = open_dataset("coco", folder)
    samples = list(ds)
    assert [s.name for s in samples] == ["2011_000003", "2011_000006", "2011_000025"]
    assert sum(len(s.masks) for s in samples) == 12
    names = {ds.category_names[c] for s in samples for c in s.categories}
    assert names == {"bottle", "bus", "car", "chair", "person", "sofa"}
    areas = {a["id"]: a["area"] for a in json.loads((folder / "annotations.json").read_text())["annotations"]}
    for s in samples:
        for mask, ann_id in zip(s.masks, s.extra["annotation_ids"], strict=False):
            assert abs(mask.sum() - areas[ann_id]) <= 0.08 * areas[ann_id]


def test_coco_rle_forms_and_crowd(data_dir: Path, tmp_path: Path) -> None:
    shutil.copy(data_dir / "GrabCut" / "data_GT" / "sheep.jpg", tmp_path / "sheep.jpg")
    fg = _grabcut_fg(data_dir, "sheep")
    h, w = fg.shape
    box = np.zeros_like(fg)
    box[10:60, 20:100] = True
    crowd = np.zeros_like(fg)
    crowd[h - 40:h - 5, w - 90:w - 10] = True
    anns = [
        {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": mask_to_rle(fg)},
        {"id": 2, "image_id": 7, "category_id": 5, "iscrowd": 0, "segmentation": mask_to_uncompressed_rle(fg)},
        {"id": 3, "image_id": 7, "category_id": 5, "iscrowd": 0,
         "segmentation": [[20, 10, 100, 10, 100, 60, 20, 60]]},
        {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": mask_to_uncompressed_rle(crowd)},
    ]
    data = {"images": [{"id": 7, "file_name": "sheep.jpg", "height": h, "width": w}], "annotations": anns,
            "categories": [{"id": i, "name": f"c{i}"} for i in (1, 3, 5)]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    sample = CocoDataset(tmp_path / "instances.json")[0]
    assert sample.categories == [3, 5, 5] and sample.extra["annotation_ids"] == [1, 2, 3]
    assert np.array_equal(sample.masks[0], fg) and np.array_equal(sample.masks[1], fg)
    assert (sample.masks[2] ^ box).sum() <= 2 * (50 + 80)  # polygon edge convention: one border row/col
    assert np.array_equal(sample.ignore, crowd)


def test_sa1b_json_with_rle(data_dir: Path, tmp_path: Path) -> None:
    shutil.copy(data_dir / "GrabCut" / "data_GT" / "tennis.jpg", tmp_path / "sa_1.jpg")
    fg = _grabcut_fg(data_dir, "tennis")
    h, w = fg.shape
    anns = [{"id": i, "segmentation": mask_to_rle(m), "area": int(m.sum()), "predicted_iou": 0.9,
             "stability_score": 0.95, "bbox": [0, 0, w, h], "point_coords": [[10, 10]]}
            for i, m in enumerate([fg, ~fg])]
    image = {"image_id": 1, "width": w, "height": h, "file_name": "sa_1.jpg"}
    (tmp_path / "sa_1.json").write_text(json.dumps({"image": image, "annotations": anns}))
    ds = open_dataset("sa1b", tmp_path)
    assert isinstance(ds, Sa1bDataset) and ds.names == ["sa_1"]
    sample = ds[0]
    assert np.array_equal(sample.masks, np.stack([fg, ~fg]))
    assert sample.extra["annotations"][1]["predicted_iou"] == 0.9 and sample.extra["image_info"] == image


# --------------------------------------------------------------------------- damaged copies


def test_damaged_grabcut_copy(data_dir: Path, tmp_path: Path) -> None:
    names = ["flower", "sheep", "teddy", "tennis"]
    _copy_pairs(data_dir / "GrabCut", tmp_path, ("data_GT", "boundary_GT"), names)
    (tmp_path / "boundary_GT" / "teddy.bmp").unlink()
    _truncate(tmp_path / "data_GT" / "sheep.jpg")
    with pytest.warns(DatasetWarning, match="teddy"):
        ds = GrabCutDataset(tmp_path)
    assert ds.names == ["flower", "sheep", "tennis"]
    with pytest.warns(DatasetWarning, match="sheep"):
        loaded = [s.name for s in ds]
    assert loaded == ["flower", "tennis"]
    assert [p for p, _ in ds.skipped] == [str(tmp_path / "data_GT" / f"{n}.jpg") for n in ("teddy", "sheep")]
    assert "no mask" in ds.skipped[0][1]
    with pytest.raises(DatasetError, match="sheep"):
        ds[1]
    assert len(ds.skipped) == 2  # recorded once


def test_damaged_bsds_copy(data_dir: Path, tmp_path: Path) -> None:
    names = ["100075", "100080", "100098"]
    _copy_pairs(data_dir / "BSDS500", tmp_path, ("images/train", "groundTruth/train"), names)
    bad = tmp_path / "groundTruth" / "train" / "100080.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00garbage" * 20)
    ds = BSDS500Dataset(tmp_path, "train", exclude_eval_overlap=False)
    with pytest.warns(DatasetWarning, match="100080.mat"):
        assert [s.name for s in ds] == ["100075", "100098"]
    assert [p for p, _ in ds.skipped] == [str(bad)]
    with pytest.raises(DatasetError, match="100080.mat"):
        ds.boundaries(1)


def test_damaged_yolo_and_coco_copies(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "coco128-seg"
    names = ["000000000009", "000000000025", "000000000030"]
    images, labels = tmp_path / "images" / "train2017", tmp_path / "labels" / "train2017"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for name in names:
        shutil.copy(src / "images" / "train2017" / f"{name}.jpg", images)
        shutil.copy(src / "labels" / "train2017" / f"{name}.txt", labels)
    (labels / "000000000025.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff binary junk")
    (labels / "orphan.txt").write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    with pytest.warns(DatasetWarning, match="orphan"):
        yolo = open_dataset("yolo", tmp_path)
    with pytest.warns(DatasetWarning, match="000000000025.txt"):
        assert [s.name for s in yolo] == ["000000000009", "000000000030"]
    assert {p for p, _ in yolo.skipped} == {str(labels / "orphan.txt"), str(labels / "000000000025.txt")}

    coco = json.loads((src / "annotations_coco_format.json").read_text())
    ids = {int(n) for n in names}
    coco["images"] = [i for i in coco["images"] if i["id"] in ids]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    (images / "000000000030.jpg").unlink()
    _truncate(images / "000000000009.jpg")
    with pytest.warns(DatasetWarning, match="000000000030.jpg"):
        ds = CocoDataset(tmp_path / "instances.json")
    with pytest.warns(DatasetWarning, match="000000000009.jpg"):
        assert [s.name for s in ds] == ["000000000025"]
    assert {p for p, _ in ds.skipped} == {str(images / "000000000030.jpg"), str(images / "000000000009.jpg")}


def test_damaged_sa1b_json(data_dir: Path, tmp_path: Path) -> None:
    for stem in ("sa_1", "sa_2"):
        shutil.copy(data_dir / "GrabCut" / "data_GT" / "tennis.jpg", tmp_path / f"{stem}.jpg")
    fg = _grabcut_fg(data_dir, "tennis")
    good = {"image": {}, "annotations": [{"segmentation": mask_to_rle(fg)}]}
    (tmp_path / "sa_1.json").write_text(json.dumps(good))
    (tmp_path / "sa_2.json").write_text('{"image": {}, "annotations": [')
    ds = Sa1bDataset(tmp_path)
    with pytest.warns(DatasetWarning, match="sa_2.json"):
        assert [s.name for s in ds] == ["sa_1"]
    assert [p for p, _ in ds.skipped] == [str(tmp_path / "sa_2.json")]


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("kind", "folder", "kwargs", "cls", "count"),
    [
        ("grabcut", "GrabCut", {}, GrabCutDataset, 50),
        ("Berkeley", "Berkeley", {}, BerkeleyDataset, 100),
        ("bsds500", "BSDS500", {"split": "test"}, BSDS500Dataset, 200),
        ("coco", "coco128-seg", {}, CocoDataset, 128),
        ("yolo", "coco128-seg", {}, YoloSegDataset, 128),
    ],
)
def test_open_dataset_kinds(data_dir: Path, kind: str, folder: str, kwargs: dict, cls: type, count: int) -> None:
    ds = open_dataset(kind, data_dir / folder, **kwargs)
    assert type(ds) is cls and len(ds) == count


def test_open_dataset_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset kind 'voc'.*grabcut.*sa1b"):
        open_dataset("voc", data_dir / "GrabCut")
    with pytest.raises(DatasetError, match="does not look like a DAVIS folder: missing img/"):
        open_dataset("davis", data_dir / "GrabCut")
    with pytest.raises(DatasetError, match="does not look like a GrabCut folder"):
        open_dataset("grabcut", data_dir / "Berkeley")
    with pytest.raises(DatasetError, match="does not look like a BSDS500 folder"):
        open_dataset("bsds500", data_dir / "GrabCut")
    with pytest.raises(DatasetError, match="not found"):
        open_dataset("berkeley", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="does not look like a COCO folder"):
        open_dataset("coco", data_dir / "GrabCut")
    with pytest.raises(DatasetError, match="no SA-1B samples"), pytest.warns(DatasetWarning):
        open_dataset("sa1b", data_dir / "coco128-seg")
