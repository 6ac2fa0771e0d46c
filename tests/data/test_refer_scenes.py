"""Synthetic referring scenes: determinism, unambiguous expressions (re-checked from the masks, not from the
generator's own bookkeeping), disjoint non-empty masks, disjoint splits, evaluation."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from samkit.data.readers import evaluation_image_ids, open_dataset
from samkit.data.refer_scenes import (
    AREA_RATIO,
    EXTREME_MARGIN,
    GAP,
    MAX_LENGTH,
    PALETTE,
    SIZES,
    ReferScenes,
    SceneObject,
    open_refer_scenes,
    referent,
    resolve,
    scene_seed,
)
from samkit.eval import evaluate_refer

SIZE = 192


@pytest.fixture(scope="module")
def val(data_dir: Path) -> ReferScenes:
    return open_refer_scenes(data_dir, "val", length=60, seed=3, image_size=SIZE)


@pytest.fixture(scope="module")
def val_samples(val: ReferScenes) -> list:
    return list(val)


def test_deterministic_by_seed_split_and_index(val: ReferScenes, val_samples: list, data_dir: Path) -> None:
    again = open_refer_scenes(data_dir, "val", length=60, seed=3, image_size=SIZE)[7]
    a = val_samples[7]
    assert a.name == again.name == "refer_val_3_7" and a.sentence == again.sentence
    assert np.array_equal(a.image, again.image) and np.array_equal(a.masks, again.masks)
    assert a.extra["query"] == again.extra["query"] and a.extra["objects"] == again.extra["objects"]
    other_seed = open_refer_scenes(data_dir, "val", length=60, seed=4, image_size=SIZE)[7]
    assert not np.array_equal(other_seed.image, a.image)
    assert len({s.sentence for s in val_samples}) > 30 and len({s.extra["background"] for s in val_samples}) > 20


def test_scene_contents(val_samples: list) -> None:
    kinds = set()
    for s in val_samples:
        objects, masks = s.extra["objects"], s.extra["object_masks"]
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert masks.shape == (len(objects), SIZE, SIZE) and 2 <= len(objects) <= 6
        assert np.array_equal(s.mask, masks[s.extra["target"]]) and s.masks.shape == (1, SIZE, SIZE)
        assert masks.sum(axis=(1, 2)).min() > 30  # non-empty
        assert masks.sum(axis=0).max() == 1  # objects never overlap: no occlusion, disjoint masks
        assert not (masks[:, :GAP].any() or masks[:, -GAP:].any() or masks[:, :, :GAP].any()
                    or masks[:, :, -GAP:].any())  # whole shapes inside the frame
        for obj, mask in zip(objects, masks, strict=False):
            inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            colour = np.median(s.image[inner], axis=0)
            assert np.abs(colour - PALETTE[obj.colour]).max() < 30, (s.name, obj)
            ys, xs = np.nonzero(mask)
            extent = max(np.ptp(xs), np.ptp(ys)) + 1
            lo, hi = SIZES[obj.size]
            assert 0.5 * lo * SIZE <= extent <= 1.3 * hi * SIZE, (s.name, obj, extent)  # squares turn <= 20 deg
        kinds.add(s.extra["query"]["type"])
        assert s.group == "refer_scenes/val"
    assert kinds == {"attributes", "extreme", "superlative", "relation"}


def _geometry(s) -> list[dict]:
    """Box / centroid / area of every object recomputed from its mask, with its attributes."""
    out = []
    for obj, mask in zip(s.extra["objects"], s.extra["object_masks"], strict=False):
        ys, xs = np.nonzero(mask)
        out.append({**obj.record(), "x0": xs.min(), "y0": ys.min(), "x1": xs.max(), "y1": ys.max(),
                    "cx": xs.mean(), "cy": ys.mean(), "area": xs.size})
    return out


def _match(desc: dict, objects: list[dict]) -> list[int]:
    return [i for i, o in enumerate(objects) if all(o[k] == v for k, v in desc.items())]


def test_every_expression_has_exactly_one_referent(val_samples: list) -> None:
    """Re-check each query against geometry measured on the masks, with the stated margins."""
    for s in val_samples:
        q, target, objs = s.extra["query"], s.extra["target"], _geometry(s)
        words = set(s.sentence.split())
        for desc in (q["desc"], q.get("landmark", {})):
            assert {desc[k] for k in ("colour", "shape") if k in desc} <= words, s.sentence
        others = [i for i in _match(q["desc"], objs) if i != target]
        assert target in _match(q["desc"], objs), s.sentence
        t = objs[target]
        if q["type"] == "attributes":
            assert not others, s.sentence
        elif q["type"] == "extreme":
            key = {"left": lambda o: o["cx"], "right": lambda o: -o["cx"], "top": lambda o: o["cy"],
                   "bottom": lambda o: -o["cy"]}[q["direction"]]
            assert others and all(key(objs[i]) - key(t) >= EXTREME_MARGIN * SIZE for i in others), s.sentence
        elif q["type"] == "superlative":
            sign = 1 if q["which"] == "largest" else -1
            assert others and all(sign * np.log(t["area"] / objs[i]["area"]) >= np.log(AREA_RATIO) for i in others)
        else:
            (land,) = _match(q["landmark"], objs)  # the landmark is named unambiguously
            others = [i for i in others if i != land]
            lm = objs[land]
            side = {"left of": (t["x1"] + GAP <= lm["x0"], lambda o, lm=lm: o["cx"] >= lm["cx"]),
                    "right of": (t["x0"] >= lm["x1"] + GAP, lambda o, lm=lm: o["cx"] <= lm["cx"]),
                    "above": (t["y1"] + GAP <= lm["y0"], lambda o, lm=lm: o["cy"] >= lm["cy"]),
                    "below": (t["y0"] >= lm["y1"] + GAP, lambda o, lm=lm: o["cy"] <= lm["cy"])}[q["relation"]]
            assert side[0] and others and all(side[1](objs[i]) for i in others), s.sentence


def _obj(shape: str, colour: str, size: str, x: float, y: float, half: int = 10) -> SceneObject:
    box = (int(x - half), int(y - half), int(x + half), int(y + half))
    area = (2 * half + 1) ** 2 * {"small": 1, "medium": 2, "large": 4}[size]
    return SceneObject(shape, colour, size, box, (x, y), area)


def test_resolve_counts_doubtful_objects_as_matches() -> None:
    scene = [_obj("circle", "red", "small", 30, 30), _obj("circle", "red", "large", 100, 60),
             _obj("square", "blue", "medium", 60, 100), _obj("circle", "red", "small", 35, 150)]
    attr = {"type": "attributes", "desc": {"colour": "red", "shape": "circle"}}
    assert resolve(attr, scene, 200) == [0, 1, 3]
    assert resolve({**attr, "desc": {**attr["desc"], "size": "large"}}, scene, 200) == [1]
    # the two small red circles' centroids are 5 px apart horizontally: "leftmost" is ambiguous
    assert resolve({"type": "extreme", "desc": attr["desc"], "direction": "left"}, scene, 200) == [0, 3]
    assert resolve({"type": "extreme", "desc": attr["desc"], "direction": "top"}, scene, 200) == [0]
    assert resolve({"type": "superlative", "desc": {}, "which": "largest"}, scene, 200) == [1]
    assert resolve({"type": "superlative", "desc": {}, "which": "smallest"}, scene, 200) == [0, 3]
    rel = {"type": "relation", "desc": attr["desc"], "landmark": {"shape": "square"}}
    assert resolve({**rel, "relation": "below"}, scene, 200) == [3]
    assert resolve({**rel, "relation": "above"}, scene, 200) == [0, 1]
    assert resolve({**rel, "landmark": {"colour": "red"}, "relation": "above"}, scene, 200) == []  # no unique landmark
    assert referent({**rel, "relation": "below"}, scene, 200) == 3 and referent(attr, scene, 200) is None
    # a box that reaches past the landmark's edge is only maybe "left of" it: never the referent
    near = [_obj("circle", "red", "small", 45, 100), _obj("square", "blue", "medium", 60, 100),
            _obj("circle", "red", "small", 150, 100)]
    left = {**rel, "relation": "left of"}
    assert resolve(left, near, 200) == [0] and resolve(left, near, 200, strict=True) == []
    assert referent(left, near, 200) is None


def test_splits_use_disjoint_seeds_and_backgrounds(data_dir: Path) -> None:
    assert scene_seed("train", MAX_LENGTH - 1) < scene_seed("val", 0) < scene_seed("val", MAX_LENGTH - 1) < \
        scene_seed("test", 0)
    with pytest.raises(ValueError):
        scene_seed("val", MAX_LENGTH)
    photos = {split: {p.stem for p in open_refer_scenes(data_dir, split, length=1).backgrounds}
              for split in ("train", "val", "test")}
    assert not (photos["train"] & photos["val"] or photos["train"] & photos["test"] or photos["val"] & photos["test"])
    assert len(photos["test"]) == 200 and len(photos["train"]) > 100 and len(photos["val"]) > 40
    benchmark = evaluation_image_ids(data_dir)  # GrabCut / Berkeley photos: never in train or val
    assert not (photos["train"] | photos["val"]) & benchmark
    test = open_dataset("refer_scenes", data_dir, split="test", length=3, seed=3, image_size=SIZE)
    for i in range(3):
        assert Path(test[i].extra["background"]).stem in photos["test"]
        assert test[i].extra["scene_seed"] == scene_seed("test", i)


def test_procedural_backgrounds_and_bad_options() -> None:
    ds = ReferScenes(None, "train", length=4, image_size=128, objects_per_scene=(2, 3), kinds={"relation": 1})
    samples = list(ds)
    assert [s.extra["query"]["type"] for s in samples] == ["relation"] * 4
    assert all(s.extra["background"] == "procedural" and s.image.shape == (128, 128, 3) for s in samples)
    for bad in ({"split": "dev"}, {"image_size": 32}, {"objects_per_scene": (1, 3)}, {"kinds": {"colourful": 1}},
                {"palette": ["red"]}, {"shapes": ["hexagon", "circle"]}):
        with pytest.raises(ValueError):
            ReferScenes(None, **bad)


def test_oracle_evaluation_on_scenes(val_samples: list) -> None:
    targets = {s.sentence + s.name: s.mask for s in val_samples}
    names = iter(s.name for s in val_samples)
    out = evaluate_refer(lambda image, text: targets[text + next(names)], val_samples)
    assert out["ciou"] == out["giou"] == 1.0 and out["num_images"] == len(val_samples)
    assert list(out["by_group"]) == ["refer_scenes/val"]
