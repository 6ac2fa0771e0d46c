"""Referring-expression segmentation data (RefCOCO / RefCOCO+ / RefCOCOg style): one sample per expression.

:class:`RefDataset` reads a JSON file (or JSON Lines, one record a line) whose records are either

* a *ref* (the layout of ``shared/data/refcoco_coco128_subset/refs.json``)::

    {"image": "images/000000000605.jpg", "mask": "masks/000000000605_ann864.png",
     "segmentation_polygon_px": [[x0, y0, x1, y1, ...], ...],          # optional with "mask"
     "sentences": [{"sent_id": 141420, "sent": "glass with water"}, ...],  # or a list of strings
     "dataset": "refcoco+", "split_by": "unc", "split": "testB", "ref_id": 49805, "image_id": 605,
     "category": "cup", "bbox_xywh": [x, y, w, h], ...}

* or a plain expression ``{"image": ..., "mask" | "polygon" | "segmentation": ..., "sentence": "..."}``.

The file may also be ``{"refs": [...]}``, or the refer toolkit's own pair (Yu et al. / Licheng Yu's
``refer`` repository): ``refs(unc).p`` (a pickle of plain lists and dicts, read with an unpickler that
builds nothing else) with ``instances.json`` beside it (COCO images, annotations and categories that
the refs point to by ``image_id`` / ``ann_id``); the images are then found under ``image_root``
(e.g. ``.../mscoco/images/train2014``) and ``split`` selects one split (``testA``, ``val``, ...). Paths are relative
to the file's folder (or ``image_root`` /
``mask_root``). The target mask is the PNG ``mask`` (> 0 is object) or the rasterised polygon
(``segmentation_polygon_px``, ``polygon``: flat or nested pixel lists; ``segmentation``: COCO polygons or
RLE), chosen by ``mask_source``. An empty target mask is allowed (no-target expressions, as in gRefCOCO).

Each sample is a :class:`RefSample`: a :class:`~samkit.data.sample.Sample` with ``masks`` (1, H, W), plus
``sentence``; ``extra`` holds the record's metadata (``dataset``, ``split_by``, ``split``, ``ref_id``,
``sent_id``, ``image_id``, ``category``, ``bbox_xywh``), ``record`` (its index in the file),
``sentence_index``, ``mask_path`` and ``mask_source``. Samples are ordered by image (in order of first
appearance in the file), then by file order, so the expressions of one image are consecutive.

Malformed records and missing files raise :class:`~samkit.data.readers.DatasetError` naming the file and
the record index at construction (``strict=False``: the record is skipped with a warning instead).
"""
from __future__ import annotations

import io
import json
import numbers
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samkit.data.masks import save_mask_png
from samkit.data.readers.base import (
    DatasetError,
    DatasetReader,
    check_size,
    fail,
    load_rgb,
    read_label_map,
    register_dataset,
)
from samkit.data.readers.coco import segmentation_to_mask
from samkit.data.sample import Sample
from samkit.io_utils import atomic_write_text

MASK_SOURCES = ("auto", "png", "polygon")
POLYGON_KEYS = ("segmentation_polygon_px", "polygon", "segmentation")  # first present one is used
META_KEYS = ("dataset", "split_by", "split", "ref_id", "image_id", "category", "bbox_xywh")


@dataclass
class RefSample(Sample):
    """One referring expression: ``image`` (H, W, 3) uint8, ``masks`` (1, H, W) bool its target,
    ``sentence`` the expression; ``extra`` the metadata (see the module docstring)."""

    sentence: str = ""

    @property
    def mask(self) -> np.ndarray:
        """The target mask (H, W) bool."""
        return self.masks[0]

    @property
    def group(self) -> str:
        """Breakdown key of the sample: :func:`group_key` of its metadata."""
        return group_key(self.extra)


def group_key(meta: dict) -> str:
    """``"refcocog(umd)/val"``-style key from ``dataset``, ``split_by`` and ``split`` (missing parts left out;
    ``"all"`` when there is neither dataset nor split)."""
    dataset, split_by, split = (meta.get(k) for k in ("dataset", "split_by", "split"))
    name = f"{dataset}({split_by})" if dataset and split_by else str(dataset or "")
    return "/".join(str(p) for p in (name, split) if p) or "all"


@dataclass(frozen=True)
class _Expression:
    """One expression found at construction: files to read and metadata (nothing decoded yet)."""

    image: Path
    sentence: str
    mask: Path | None  # PNG target (used when not None)
    polygon: Any  # polygon / COCO segmentation to rasterise when ``mask`` is None
    meta: dict


class RefDataset(DatasetReader):
    """Referring expressions from a refs JSON / JSONL file: one :class:`RefSample` per expression.

    ``mask_source``: "auto" (the PNG ``mask`` when the record has one, else its polygon), "png" or
    "polygon" (every record must then have that kind). See the module docstring for the format.
    """

    kind = "refer"
    layout = ("a JSON list of refs {image, mask | segmentation_polygon_px | polygon, sentences | sentence, "
              "dataset, split, ref_id, ...}")

    def __init__(self, refs: str | Path, image_root: str | Path | None = None, mask_root: str | Path | None = None,
                 mask_source: str = "auto", strict: bool = True, split: str | None = None) -> None:
        refs = Path(refs)
        super().__init__(image_root if image_root is not None else refs.parent)
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
        self.refs_path = refs
        self.mask_root = Path(mask_root) if mask_root is not None else refs.parent
        self.mask_source = mask_source
        self.strict = strict
        if not refs.is_file():
            raise DatasetError(f"refs file not found: {refs}", path=refs)
        expressions: list[_Expression] = []
        records = _read_records(refs)
        if split is not None:
            records = [r for r in records if isinstance(r, dict) and r.get("split") == split]
            if not records:
                raise DatasetError(f"{refs}: no refs in split {split!r}", path=refs)
        for index, record in enumerate(records):
            try:
                expressions.extend(self._parse(index, record))
            except DatasetError as exc:
                if strict:
                    raise
                self._skip(exc.path or refs, exc.reason)
        self._items = _by_image(_unique_names(expressions))
        self._cache: tuple[Path, np.ndarray] | None = None  # last decoded image: expressions share images
        self._require_items()

    @property
    def images(self) -> list[str]:
        """The distinct image paths, in sample order."""
        return list(dict.fromkeys(str(item.image) for _, item in self._items))

    def image_path(self, index: int) -> str:
        """Image path of sample ``index`` (without loading it)."""
        return str(self._items[index][1].image)

    # -- construction ---------------------------------------------------------------------------
    def _parse(self, index: int, record: Any) -> list[_Expression]:
        """The expressions of record ``index``; DatasetError naming the record when it is malformed."""
        where = f"{self.refs_path} (record {index})"

        def bad(reason: str) -> DatasetError:
            return DatasetError(f"{where}: {reason}", path=where, reason=reason)

        if not isinstance(record, dict):
            raise bad(f"expected an object, got {type(record).__name__}")
        image = record.get("image", record.get("file_name"))
        if not isinstance(image, str) or not image:
            raise bad("no 'image' path")
        image_path = self.root / image
        if not image_path.is_file():
            raise bad(f"image file not found: {image_path}")
        mask_path, polygon = self._target(record, bad)
        sentences = _sentences(record, bad)
        meta = {k: record[k] for k in META_KEYS if k in record}
        out = []
        for j, (sent_id, sentence) in enumerate(sentences):
            extra = {**meta, "sent_id": sent_id, "record": index, "sentence_index": j,
                     "mask_path": None if mask_path is None else str(mask_path),
                     "mask_source": "png" if mask_path is not None else "polygon"}
            out.append(_Expression(image_path, sentence, mask_path, polygon, extra))
        return out

    def _target(self, record: dict, bad) -> tuple[Path | None, Any]:
        """(mask PNG path, None) or (None, polygon) for the record, following ``mask_source``."""
        mask = record.get("mask")
        if mask is not None and (not isinstance(mask, str) or not mask):
            raise bad("'mask' must be a PNG path")
        polygon_key = next((k for k in POLYGON_KEYS if record.get(k) is not None), None)
        use_png = self.mask_source == "png" or (self.mask_source == "auto" and mask is not None)
        if use_png:
            if mask is None:
                raise bad("no 'mask' PNG path (mask_source='png')")
            path = self.mask_root / mask
            if not path.is_file():
                raise bad(f"mask file not found: {path}")
            return path, None
        if polygon_key is None:
            wanted = "'mask' or a polygon" if self.mask_source == "auto" else "a polygon"
            raise bad(f"no target: need {wanted} ({', '.join(POLYGON_KEYS)})")
        try:
            polygon = _check_polygon(record[polygon_key], coco=polygon_key == "segmentation")
        except (TypeError, ValueError) as exc:
            raise bad(f"bad '{polygon_key}': {exc}") from None
        return None, polygon

    # -- loading --------------------------------------------------------------------------------
    def _load(self, name: str, item: _Expression) -> RefSample:
        image = self._image(item.image)
        h, w = image.shape[:2]
        if item.mask is not None:
            values = read_label_map(item.mask)
            check_size(values, image, item.mask, "mask")
            mask = values > 0
        else:
            try:
                mask = segmentation_to_mask(item.polygon, h, w)
            except (TypeError, ValueError, KeyError) as exc:
                fail(f"{self.refs_path} (record {item.meta['record']})", f"bad segmentation: {exc}")
        return RefSample(name, image, mask[None], None, source=str(item.image), extra=dict(item.meta),
                         sentence=item.sentence)

    def _image(self, path: Path) -> np.ndarray:
        """Decoded image (a copy: callers may change it); the last one is kept for the next expression."""
        if self._cache is None or self._cache[0] != path:
            self._cache = (path, load_rgb(path))
        return self._cache[1].copy()


@register_dataset("refer")
def open_refs(root: str | Path, **options: Any) -> RefDataset:
    """``open_dataset("refer", ...)``: ``root`` is the refs file, or a folder holding ``refs.json`` or one
    refer-toolkit ``refs(*).p`` (with ``instances.json``)."""
    root = Path(root)
    if root.is_dir():
        pickles = sorted(root.glob("refs(*).p"))
        if not (root / "refs.json").exists() and len(pickles) > 1:
            raise DatasetError(f"{root} holds several refer-toolkit files ({', '.join(p.name for p in pickles)}): "
                               "pass the one to use", path=root)
        root = pickles[0] if not (root / "refs.json").exists() and pickles else root / "refs.json"
    return RefDataset(root, **options)


def write_refs(samples: Iterable[RefSample], folder: str | Path, name: str = "refs.json") -> Path:
    """Write referring samples as a folder :class:`RefDataset` reads back: ``images/NNNNNN.png`` (one per
    run of consecutive samples with the same image), ``masks/NNNNNN.png`` (0 / 255) and ``<name>``, one plain
    record per expression ({image, mask, sentence} + the JSON-ready metadata of ``META_KEYS`` and
    ``sent_id``; ``ref_id`` defaults to the sample name). Returns the refs file's path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    records, previous, image_file = [], None, ""
    for k, sample in enumerate(samples):
        if previous is None or previous.shape != sample.image.shape or not np.array_equal(previous, sample.image):
            previous, image_file = sample.image, f"images/{k:06d}.png"
            Image.fromarray(sample.image).save(folder / image_file)
        mask_file = f"masks/{k:06d}.png"
        save_mask_png(folder / mask_file, sample.masks[0])
        meta = {key: sample.extra[key] for key in (*META_KEYS, "sent_id") if sample.extra.get(key) is not None}
        records.append({"image": image_file, "mask": mask_file, "sentence": sample.sentence,
                        "ref_id": sample.name, **meta})
    return atomic_write_text(folder / name, json.dumps(records, indent=1) + "\n")


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles lists, dicts, strings and numbers only: a refs file never needs to build an object."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses to build {module}.{name}: a refer-toolkit refs file holds "
                                     "only lists, dicts, strings and numbers")


def _read_toolkit_refs(path: Path) -> list:
    """A refer-toolkit ``refs(<split_by>).p`` + the ``instances.json`` beside it -> records of the ref layout."""
    try:
        refs = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        fail(path, f"cannot read refer-toolkit refs file: {exc}")
    instances = path.parent / "instances.json"
    try:
        coco = json.loads(instances.read_text(encoding="utf-8"))
        anns = {a["id"]: a for a in coco["annotations"]}
        files = {im["id"]: im["file_name"] for im in coco["images"]}
        names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    except OSError as exc:
        fail(instances, f"a refer-toolkit refs file needs its instances.json beside it: {exc}")
    except (ValueError, KeyError, TypeError) as exc:
        fail(instances, f"not a COCO instances file: {exc}")
    if not isinstance(refs, list):
        fail(path, "not a refer-toolkit refs file: expected a list of refs")
    split_by = path.stem[len("refs("):-1] if path.stem.startswith("refs(") else None
    records: list = []
    for ref in refs:
        if not isinstance(ref, dict):
            fail(path, f"a ref must be a dict, got {type(ref).__name__}")
        if ref.get("ann_id") not in anns or ref.get("image_id") not in files:
            fail(path, f"ref {ref.get('ref_id')}: ann_id {ref.get('ann_id')} / image_id {ref.get('image_id')} "
                        f"not in {instances.name}")
        ann = anns[ref["ann_id"]]
        sentences = [{"sent_id": s.get("sent_id"), "sent": s.get("sent", s.get("raw"))}
                     for s in ref.get("sentences", []) if isinstance(s, dict)]
        records.append({
            "image": files[ref["image_id"]], "segmentation": ann.get("segmentation"), "sentences": sentences,
            "dataset": path.parent.name, "split_by": split_by, "split": ref.get("split"), "ref_id": ref.get("ref_id"),
            "image_id": ref["image_id"], "category": names.get(ref.get("category_id", ann.get("category_id"))),
            "bbox_xywh": ann.get("bbox"),
        })
    return records


def _read_records(path: Path) -> list:
    """The records of a refs file: a JSON list, ``{"refs": [...]}``, JSON Lines (``.jsonl``), or a
    refer-toolkit ``refs(*).p`` with its ``instances.json``."""
    if path.suffix.lower() == ".p":
        return _read_toolkit_refs(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(path, f"cannot read refs file: {exc}")
    if isinstance(data, dict) and isinstance(data.get("refs"), list):
        return data["refs"]
    if not isinstance(data, list):
        fail(path, "not a refs file: expected a JSON list of records (or {\"refs\": [...]})")
    return data


def _sentences(record: dict, bad) -> list[tuple[Any, str]]:
    """(sent_id or None, text) of every expression of a record."""
    if "sentences" in record:
        entries = record["sentences"]
        if not isinstance(entries, list) or not entries:
            raise bad("'sentences' must be a non-empty list")
    elif "sentence" in record:
        entries = [{"sent": record["sentence"], "sent_id": record.get("sent_id")}]
    else:
        raise bad("no 'sentences' list or 'sentence'")
    out = []
    for j, entry in enumerate(entries):
        sent_id = None
        if isinstance(entry, dict):
            sent_id = entry.get("sent_id")
            entry = entry.get("sent", entry.get("raw"))
        if not isinstance(entry, str) or not entry.strip():
            raise bad(f"sentence {j} is not a non-empty string (or {{'sent': ...}})")
        out.append((sent_id, " ".join(entry.split())))
    return out


def _check_polygon(value: Any, coco: bool) -> Any:
    """Validate a polygon target: nested ``[[x, y, ...], ...]`` or flat ``[x, y, ...]`` pixel lists (flat is
    wrapped); with ``coco`` also a COCO RLE dict. Returns the value to rasterise."""
    if coco and isinstance(value, dict):
        if "size" not in value or "counts" not in value:
            raise ValueError("an RLE needs 'size' and 'counts'")
        return value
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of polygons")
    polygons = [value] if all(isinstance(v, numbers.Real) for v in value) else value
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(isinstance(v, numbers.Real) for v in polygon):
            raise ValueError(f"polygon {k} is not a list of numbers")
        if len(polygon) % 2 or len(polygon) < 6:
            raise ValueError(f"polygon {k} needs an even number (>= 6) of coordinates, got {len(polygon)}")
        if not np.isfinite(np.asarray(polygon, dtype=np.float64)).all():
            raise ValueError(f"polygon {k} has non-finite coordinates")
    return polygons


def _unique_names(expressions: Sequence[_Expression]) -> list[tuple[str, _Expression]]:
    """``<dataset>_<ref_id>_<sent_id>`` names (record / sentence index where an id is missing), made unique."""
    named, seen = [], set()
    for e in expressions:
        m = e.meta
        ref = m.get("ref_id", f"r{m['record']}")
        sent = m["sent_id"] if m.get("sent_id") is not None else f"s{m['sentence_index']}"
        name = f"{m.get('dataset', 'refs')}_{ref}_{sent}"
        if name in seen:
            name = f"{name}~{m['record']}.{m['sentence_index']}"
        seen.add(name)
        named.append((name, e))
    return named


def _by_image(items: list[tuple[str, _Expression]]) -> list[tuple[str, _Expression]]:
    """Items grouped by image (groups in order of first appearance), file order within a group."""
    first: dict[Path, int] = {}
    for i, (_, e) in enumerate(items):
        first.setdefault(e.image, i)
    return sorted(items, key=lambda item: first[item[1].image])
