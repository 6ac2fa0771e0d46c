"""Synthetic referring scenes: coloured shapes on real photos, each with one unambiguous expression.

A scene is a random square crop of a background photo (BSDS500; each split its own photos), resized to
``image_size``, with 3-6 flat-shaded shapes (``SHAPES``, colours from ``PALETTE``, sizes ``SIZES``)
blended in with :func:`samkit.data.synthetic.paste` (1-px feathered edge). Objects never overlap (their
boxes keep ``GAP`` px apart and stay inside the frame), so every object mask is the whole shape, masks
are disjoint, and nothing is occluded. Each scene draws its shapes from 2-3 colours and 2-3 shape kinds,
so objects share attributes and the expression has to disambiguate, with one of four kinds of query:

* ``attributes``: "the small red circle", "the green thing" (a subset of size / colour / shape);
* ``extreme``: "the leftmost triangle", "the lowest blue object" (by mask centroid);
* ``superlative``: "the largest object", "the smallest red shape" (by mask area);
* ``relation``: "the blue thing above the green star" (landmark named by its attributes).

Expressions are unambiguous by construction: a query is only used when :func:`referent` finds the target,
i.e. :func:`resolve` returns exactly the target both when it counts every object that *might* be meant
(centroids within ``EXTREME_MARGIN`` of the extreme, areas within ``AREA_RATIO`` of the largest, objects
neither clearly on nor clearly off the landmark's side) and when it counts only those certainly meant.
Scene ``i`` of a split depends only on (seed, split, i): splits use disjoint seed ranges (``scene_seed``)
and disjoint background photos (BSDS500 ``images/<split>/``; train and val backgrounds also leave out
the GrabCut / Berkeley benchmark photos, as :class:`BSDS500Dataset` does).

Samples are :class:`~samkit.data.refer.RefSample` s (``masks`` (1, H, W) the target, ``sentence``), so
:func:`samkit.eval.refer.evaluate` runs on them as on RefCOCO. ``extra`` holds ``query``, ``target`` (object
index), ``objects`` (:class:`SceneObject` s: shape, colour, size, box, centroid, area), ``object_masks`` (N, H, W) bool,
``background``, ``split``, ``scene_seed`` and ``dataset`` = "refer_scenes".
:class:`samkit.train.data.ReferTorchDataset` turns referring samples into training items.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from samkit.data.readers.base import IMAGE_EXTENSIONS, DatasetError, DatasetReader, load_rgb, register_dataset
from samkit.data.readers.bsds import BSDS_SPLITS, evaluation_image_ids
from samkit.data.refer import RefSample
from samkit.data.synthetic import paste, resize_array

SHAPES = ("circle", "square", "triangle", "star", "ellipse")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35), "green": (40, 165, 55), "blue": (35, 75, 225), "yellow": (245, 215, 40),
    "purple": (145, 55, 190), "orange": (245, 135, 25), "white": (245, 245, 245), "black": (20, 20, 20),
}
# Size classes: the shape's extent (circle diameter, triangle side, ...) as a fraction of the image side.
# The gaps between the ranges keep neighbouring classes at least 1.3x apart.
SIZES: dict[str, tuple[float, float]] = {"small": (0.11, 0.14), "medium": (0.19, 0.23), "large": (0.30, 0.34)}
QUERY_KINDS = ("attributes", "extreme", "superlative", "relation")
DEFAULT_WEIGHTS = {"attributes": 0.35, "extreme": 0.2, "superlative": 0.15, "relation": 0.3}
DIRECTIONS = ("left", "right", "top", "bottom")
RELATIONS = ("left of", "right of", "above", "below")
SPLIT_SEED_BASE = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}
MAX_LENGTH = 1_000_000_000  # scenes per split: keeps the splits' seed ranges disjoint
GAP = 4  # px between object boxes, and between a box and the frame edge
EXTREME_MARGIN = 0.06  # "leftmost": the runner-up's centroid is at least this fraction of the image further
AREA_RATIO = 1.5  # "largest" / "smallest": the runner-up's area differs by at least this factor
_MAX_SCENES = 20  # scene layouts tried per sample before giving up
_MAX_PLACEMENTS = 40  # positions tried per object

_SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium-sized", "medium"), "large": ("large", "big")}
_NOUNS = ("object", "thing", "shape")
_EXTREME_WORDS = {"left": ("the leftmost {}", "the {} on the far left"),
                  "right": ("the rightmost {}", "the {} on the far right"),
                  "top": ("the topmost {}", "the highest {}"), "bottom": ("the bottommost {}", "the lowest {}")}
_SUPERLATIVE_WORDS = {"largest": ("the largest {}", "the biggest {}"), "smallest": ("the smallest {}",)}
_RELATION_WORDS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
                   "above": ("above",), "below": ("below", "under")}
_ATTRS = ("size", "colour", "shape")


@dataclass
class SceneObject:
    """One shape in a scene: attributes, its mask's box (x0, y0, x1, y1; inclusive), centroid (x, y), area."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int

    def record(self) -> dict:
        """JSON-ready attributes."""
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "box": list(self.box),
                "centroid": [round(float(v), 2) for v in self.centroid], "area": int(self.area)}


def scene_seed(split: str, index: int) -> int:
    """Seed of scene ``index`` of ``split``: the splits' ranges [base, base + MAX_LENGTH) are disjoint."""
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_SEED_BASE)}")
    if not 0 <= index < MAX_LENGTH:
        raise ValueError(f"scene index must be in [0, {MAX_LENGTH}), got {index}")
    return SPLIT_SEED_BASE[split] + int(index)


# ------------------------------------------------------------------------------------------ queries


def matches(desc: dict, obj: SceneObject) -> bool:
    """Whether ``obj`` has every attribute ``desc`` names (None / missing: any)."""
    return all(desc.get(a) in (None, getattr(obj, a)) for a in _ATTRS)


def referent(query: dict, objects: Sequence[SceneObject], image_size: int) -> int | None:
    """The object an unambiguous ``query`` refers to: the only one it may refer to, which it also certainly
    refers to (``resolve(strict=True)`` and ``resolve()`` both give just that one); else None."""
    maybe = resolve(query, objects, image_size)
    return maybe[0] if len(maybe) == 1 and resolve(query, objects, image_size, strict=True) == maybe else None


def resolve(query: dict, objects: Sequence[SceneObject], image_size: int, strict: bool = False) -> list[int]:
    """Indices of the objects ``query`` may refer to (``strict``: certainly refers to).

    ``attributes``: the objects with the attributes. ``extreme`` (direction left/right/top/bottom) among
    the objects matching ``desc``: the extreme one and every other within EXTREME_MARGIN * image_size of
    it. ``superlative`` (largest/smallest): the extreme area and every other within a factor AREA_RATIO.
    ``relation`` (left of/right of/above/below) to the one ``landmark`` object (none or several: []): the
    ``desc`` objects other than the landmark whose box lies wholly on that side (GAP px clear), plus (unless
    ``strict``) those that are on neither side clearly (a centroid on the landmark centroid's other side is
    clearly off). ``strict`` only changes relations: the other kinds count doubtful objects in both modes.
    """
    kind = query["type"]
    candidates = [i for i, o in enumerate(objects) if matches(query.get("desc", {}), o)]
    if kind == "attributes":
        return candidates
    if kind == "extreme":
        axis, sign = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}[query["direction"]]
        values = {i: sign * objects[i].centroid[axis] for i in candidates}
        best = max(values.values(), default=0.0)
        return [i for i in candidates if best - values[i] < EXTREME_MARGIN * image_size]
    if kind == "superlative":
        sign = 1 if query["which"] == "largest" else -1
        logs = {i: sign * np.log(objects[i].area) for i in candidates}
        best = max(logs.values(), default=0.0)
        return [i for i in candidates if best - logs[i] < np.log(AREA_RATIO)]
    if kind == "relation":
        landmarks = [i for i, o in enumerate(objects) if matches(query["landmark"], o)]
        if len(landmarks) != 1:
            return []
        land = objects[landmarks[0]]
        return [i for i in candidates
                if i != landmarks[0] and _on_side(objects[i], land, query["relation"], strict)]
    raise ValueError(f"unknown query type {kind!r}")


def _on_side(obj: SceneObject, land: SceneObject, relation: str, strict: bool) -> bool:
    """``obj`` is wholly on the ``relation`` side of ``land`` (boxes GAP px apart), or (not ``strict``) not
    clearly off it."""
    axis, sign = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[relation]
    near = obj.box[axis] if sign > 0 else -obj.box[axis + 2]
    land_edge = land.box[axis + 2] if sign > 0 else -land.box[axis]
    wholly = near >= land_edge + GAP
    clearly_off = sign * (obj.centroid[axis] - land.centroid[axis]) <= 0
    return wholly or not (strict or clearly_off)


def describe(query: dict, rng: np.random.Generator) -> str:
    """The English expression of ``query`` (wording varies with ``rng``)."""
    kind = query["type"]
    if kind == "attributes":
        return f"the {_noun_phrase(query['desc'], rng)}"
    phrase = _noun_phrase(query["desc"], rng)
    if kind == "extreme":
        return _pick(_EXTREME_WORDS[query["direction"]], rng).format(phrase)
    if kind == "superlative":
        return _pick(_SUPERLATIVE_WORDS[query["which"]], rng).format(phrase)
    relation = _pick(_RELATION_WORDS[query["relation"]], rng)
    return f"the {phrase} {relation} the {_noun_phrase(query['landmark'], rng)}"


def _noun_phrase(desc: dict, rng: np.random.Generator) -> str:
    words = []
    if desc.get("size"):
        words.append(_pick(_SIZE_WORDS[desc["size"]], rng))
    if desc.get("colour"):
        words.append(desc["colour"])
    words.append(desc.get("shape") or _pick(_NOUNS, rng))
    return " ".join(words)


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _descs(obj: SceneObject, attrs: Sequence[str] = _ATTRS) -> list[dict]:
    """Every description of ``obj`` by a subset of ``attrs`` (the empty one included), fewest attributes first."""
    return [{a: getattr(obj, a) for a in subset}
            for k in range(len(attrs) + 1) for subset in itertools.combinations(attrs, k)]


def candidate_queries(objects: Sequence[SceneObject], target: int, kind: str, image_size: int) -> list[dict]:
    """Every query of ``kind`` whose :func:`referent` is ``target`` (the ones that need a spatial or size
    word only where the words alone would match several objects)."""
    obj, out = objects[target], []
    unique = lambda q: referent(q, objects, image_size) == target  # noqa: E731
    several = lambda d: sum(matches(d, o) for o in objects) >= 2  # noqa: E731
    if kind == "attributes":
        found = [{"type": kind, "desc": d} for d in _descs(obj)[1:] if unique({"type": kind, "desc": d})]
        fewest = min((len(q["desc"]) for q in found), default=0)
        return [q for q in found if len(q["desc"]) == fewest] or found
    if kind == "extreme":
        out = [{"type": kind, "desc": d, "direction": r} for d in _descs(obj) if several(d) for r in DIRECTIONS]
    elif kind == "superlative":
        out = [{"type": kind, "desc": d, "which": w} for d in _descs(obj, ("colour", "shape")) if several(d)
               for w in ("largest", "smallest")]
    elif kind == "relation":
        for li in range(len(objects)):
            if li == target:
                continue
            names = candidate_queries(objects, li, "attributes", image_size)
            if not names:
                continue
            for d in _descs(obj):
                if sum(matches(d, o) for i, o in enumerate(objects) if i != li) >= 2:
                    out += [{"type": kind, "desc": d, "relation": r, "landmark": names[0]["desc"]}
                            for r in RELATIONS]
    else:
        raise ValueError(f"unknown query type {kind!r}: expected one of {QUERY_KINDS}")
    return [q for q in out if unique(q)]


# ------------------------------------------------------------------------------------------ drawing


def shape_mask(shape: str, extent: float, angle: float) -> np.ndarray:
    """(h, w) bool mask of ``shape`` whose extent (circle diameter, square / triangle side, star and
    ellipse outer diameter) is ``extent`` px, rotated by ``angle`` degrees, cropped to its box."""
    pad = int(np.ceil(extent)) + 4
    canvas = np.zeros((2 * pad, 2 * pad), dtype=np.uint8)
    r = extent / 2
    if shape == "circle":
        cv2.circle(canvas, (pad, pad), int(round(r)), 1, thickness=-1)
    elif shape == "ellipse":
        cv2.ellipse(canvas, (pad, pad), (int(round(r)), int(round(0.55 * r))), angle, 0, 360, 1, thickness=-1)
    else:
        if shape == "square":
            corners = np.deg2rad(45 + 90 * np.arange(4))
            radii = np.full(4, 0.9 * extent / np.sqrt(2))
        elif shape == "triangle":
            corners = np.deg2rad(-90 + 120 * np.arange(3))
            radii = np.full(3, extent / np.sqrt(3))
        elif shape == "star":
            corners = np.deg2rad(-90 + 36 * np.arange(10))
            radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        else:
            raise ValueError(f"unknown shape {shape!r}: expected one of {SHAPES}")
        theta = corners + np.deg2rad(angle)
        points = np.stack([pad + radii * np.cos(theta), pad + radii * np.sin(theta)], axis=1)
        cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], 1, shift=4)
    mask = canvas > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def shade(colour: tuple[int, int, int], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 pixels of ``colour`` with a soft linear light gradient and a little noise."""
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / max(w - 1, 1) - 0.5) * direction[0] + (yy / max(h - 1, 1) - 0.5) * direction[1]) * 30.0
    noise = rng.normal(0.0, 3.0, size=(h, w, 1)).astype(np.float32)
    return np.clip(np.asarray(colour, np.float32) + ramp[..., None] + noise, 0, 255).astype(np.float32)


def _object_record(shape: str, colour: str, size: str, mask: np.ndarray) -> SceneObject:
    ys, xs = np.nonzero(mask)
    return SceneObject(shape, colour, size, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
                       (float(xs.mean()), float(ys.mean())), int(ys.size))


# ------------------------------------------------------------------------------------------- scenes


class ReferScenes(DatasetReader):
    """Lazy sequence of synthetic referring scenes (:class:`RefSample`, one expression each).

    ``backgrounds``: image paths of this split (see :func:`open_refer_scenes` for the BSDS500 standard);
    None: procedural backgrounds (smooth random colour fields, for tests without data). ``objects_per_scene``
    is an inclusive range; ``kinds`` weights the query kinds (``DEFAULT_WEIGHTS``); ``palette`` / ``shapes``
    restrict the attributes (at least 2 colours and 2 shapes).
    """

    kind = "refer_scenes"
    layout = "background photos (any image files)"

    def __init__(self, backgrounds: Sequence[str | Path] | None, split: str = "train", length: int = 1000,
                 seed: int = 0, image_size: int = 256, objects_per_scene: tuple[int, int] = (3, 6),
                 kinds: dict[str, float] | None = None, palette: Sequence[str] | None = None,
                 shapes: Sequence[str] | None = None, root: str | Path = ".") -> None:
        super().__init__(root)
        lo, hi = (int(v) for v in objects_per_scene)
        weights = dict(DEFAULT_WEIGHTS if kinds is None else kinds)
        self.palette = tuple(palette or PALETTE)
        self.shapes = tuple(shapes or SHAPES)
        checks = [
            (split in SPLIT_SEED_BASE, f"split must be one of {', '.join(SPLIT_SEED_BASE)}, got {split!r}"),
            (0 <= length <= MAX_LENGTH and seed >= 0, f"need 0 <= length <= {MAX_LENGTH} and seed >= 0"),
            (image_size >= 64, f"image_size must be >= 64, got {image_size}"),
            (2 <= lo <= hi <= 8,
             f"objects_per_scene must be (lo, hi) with 2 <= lo <= hi <= 8, got {objects_per_scene}"),
            (set(weights) <= set(QUERY_KINDS) and sum(weights.values()) > 0 and min(weights.values()) >= 0,
             f"kinds must weight some of {QUERY_KINDS}, got {weights}"),
            (set(self.palette) <= set(PALETTE) and len(self.palette) >= 2, f"palette: 2+ of {tuple(PALETTE)}"),
            (set(self.shapes) <= set(SHAPES) and len(self.shapes) >= 2, f"shapes: 2+ of {SHAPES}"),
            (backgrounds is None or len(backgrounds) > 0, "backgrounds must not be empty (None: procedural)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ReferScenes: {message}")
        self.backgrounds = None if backgrounds is None else [Path(p) for p in backgrounds]
        self.split, self.seed, self.image_size = split, int(seed), int(image_size)
        self.objects_per_scene = (lo, hi)
        self.kinds = {k: float(v) for k, v in weights.items() if v > 0}
        self._items = [(f"refer_{split}_{self.seed}_{i}", i) for i in range(int(length))]

    def _load(self, name: str, index: int) -> RefSample:
        seed = scene_seed(self.split, index)
        rng = np.random.default_rng([self.seed, seed])
        for _ in range(_MAX_SCENES):
            background, canvas = self._background(rng)
            objects, masks = self._place_objects(canvas, rng)
            found = self._query(objects, rng)
            if found is not None:
                target, query = found
                extra = {"dataset": "refer_scenes", "split": self.split, "scene_seed": seed, "seed": self.seed,
                         "background": background, "query": query, "target": target,
                         "objects": objects, "object_masks": masks}
                return RefSample(name, canvas, masks[target][None].copy(), None, source=background, extra=extra,
                                 sentence=describe(query, rng))
        raise DatasetError(f"{name}: no scene with an unambiguous expression in {_MAX_SCENES} tries",
                           path=name, reason="no unambiguous expression")

    def _background(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(name, (S, S, 3) uint8): a random square crop (half to all of the shorter side), maybe flipped."""
        size = self.image_size
        if self.backgrounds is None:
            low = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.float32)
            return "procedural", np.clip(resize_array(low, size, size), 0, 255).astype(np.uint8)
        path = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        image = load_rgb(path)
        h, w = image.shape[:2]
        side = max(1, int(min(h, w) * rng.uniform(0.5, 1.0)))
        y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = image[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return str(path), np.ascontiguousarray(resize_array(np.ascontiguousarray(crop), size, size))

    def _place_objects(self, canvas: np.ndarray, rng: np.random.Generator) -> tuple[list[SceneObject], np.ndarray]:
        """Draw attributes (2-3 colours and shape kinds per scene), place shapes without overlap, paste them."""
        size = self.image_size
        colours = rng.choice(self.palette, size=min(len(self.palette), int(rng.integers(2, 4))), replace=False)
        shapes = rng.choice(self.shapes, size=min(len(self.shapes), int(rng.integers(2, 4))), replace=False)
        wanted = int(rng.integers(self.objects_per_scene[0], self.objects_per_scene[1] + 1))
        objects, masks = [], []
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(wanted):
            shape, colour = str(rng.choice(shapes)), str(rng.choice(colours))
            size_name = str(rng.choice(list(SIZES)))
            extent = rng.uniform(*SIZES[size_name]) * size
            mask = shape_mask(shape, extent, float(rng.uniform(-20, 20) if shape in ("square", "triangle")
                                                   else rng.uniform(0, 360)))
            spot = self._spot(mask.shape, boxes, rng)
            if spot is None:
                continue
            y0, x0 = spot
            pasted = paste(canvas, shade(PALETTE[colour], mask.shape[0], mask.shape[1], rng), mask, y0, x0)
            boxes.append((x0, y0, x0 + mask.shape[1] - 1, y0 + mask.shape[0] - 1))
            objects.append(_object_record(shape, colour, size_name, pasted))
            masks.append(pasted)
        return objects, np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool)

    def _spot(self, shape: tuple[int, int], boxes: list[tuple[int, int, int, int]],
              rng: np.random.Generator) -> tuple[int, int] | None:
        """Top-left (y0, x0) keeping the box GAP px inside the frame and from every earlier box, or None."""
        h, w = shape
        hi_y, hi_x = self.image_size - GAP - h, self.image_size - GAP - w
        if hi_y < GAP or hi_x < GAP:
            return None
        for _ in range(_MAX_PLACEMENTS):
            y0, x0 = int(rng.integers(GAP, hi_y + 1)), int(rng.integers(GAP, hi_x + 1))
            x1, y1 = x0 + w - 1, y0 + h - 1
            if all(x1 + GAP < bx0 or bx1 + GAP < x0 or y1 + GAP < by0 or by1 + GAP < y0
                   for bx0, by0, bx1, by1 in boxes):
                return y0, x0
        return None

    def _query(self, objects: list[SceneObject], rng: np.random.Generator) -> tuple[int, dict] | None:
        """(target, query): kinds in a random order (by weight), targets in random order, the first kind
        with an unambiguous query for some target; None when the scene has none (or < 2 objects)."""
        if len(objects) < 2:
            return None
        names, weights = list(self.kinds), np.array(list(self.kinds.values()))
        order = rng.choice(len(names), size=len(names), replace=False, p=weights / weights.sum())
        for k in order:
            for target in rng.permutation(len(objects)):
                queries = candidate_queries(objects, int(target), names[k], self.image_size)
                if queries:
                    return int(target), queries[int(rng.integers(len(queries)))]
        return None


@register_dataset("refer_scenes")
def open_refer_scenes(root: str | Path, split: str = "train", length: int = 1000, seed: int = 0,
                      exclude_eval_overlap: bool | None = None, **options: Any) -> ReferScenes:
    """Referring scenes on the BSDS500 photos of ``split`` in a ``shared/data``-like ``root``
    (``root/BSDS500/images/<split>/``): the splits' backgrounds are disjoint. ``exclude_eval_overlap``
    (default: train and val) leaves out the GrabCut / Berkeley benchmark photos (looked up in ``root``).
    ``options`` go to :class:`ReferScenes`."""
    root = Path(root)
    if split not in BSDS_SPLITS:
        raise DatasetError(f"unknown split {split!r}: expected one of {', '.join(BSDS_SPLITS)}")
    folder = root / "BSDS500" / "images" / split
    if not folder.is_dir():
        raise DatasetError(f"no background photos: {folder} is not a folder (expected a shared/data-like root "
                           "with BSDS500/images/<split>/)")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if exclude_eval_overlap is None:
        exclude_eval_overlap = split != "test"
    if exclude_eval_overlap:
        excluded = evaluation_image_ids(root, bsds_root=root / "BSDS500")
        photos = [p for p in photos if p.stem not in excluded]
    if not photos:
        raise DatasetError(f"no background photos left in {folder}")
    ranges = {k: tuple(v) for k, v in options.items() if k == "objects_per_scene"}
    return ReferScenes(photos, split, length, seed, root=root, **{**options, **ranges})
