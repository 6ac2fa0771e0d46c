"""Batch "segment everything" over an image or a folder: resumable, one failing image never stops the run.

Output folder layout (``fmt``):

* ``sa1b``: ``<stem>.json`` per image (SA-1B: ``image`` + ``annotations`` with COCO RLE);
* ``coco``: the same per-image files under ``parts/``, and ``annotations.json`` (one COCO JSON for
  the whole folder, RLE or polygons) rebuilt from them at the end of every run;
* ``png``: ``<stem>/mask_000.png ...`` + ``<stem>/masks.json`` per image;
* ``yolo``: ``<stem>.txt`` (YOLO-seg polygons, class 0); ``labelme``: ``<stem>.json`` (LabelMe polygons);
  ``labelmap``: ``<stem>.png``, one 16-bit label map (0 background, i + 1 = mask i, small masks on top);
* ``--overlay``: ``<stem>.overlay.png`` beside them (translucent masks with outlines, at most 4096 px);
  ``errors.jsonl``: one line per failed image (path, reason), rewritten by every run; ``summary.json``:
  counts and timings of the last run; ``run.json``: the job's settings, written when a run starts.

An image is done when its result file/folder exists (written atomically), so a rerun skips it. A folder
holds one job: a run with other settings (format, model, thresholds, ...) is refused unless ``overwrite``,
which first deletes the earlier job's outputs. Memory: masks are decoded one at a time for every output.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from samkit._optional import require
from samkit.data.formats import (
    SEGMENTATION_KINDS,
    coco_document,
    labelme_document,
    sa1b_document,
    write_label_map,
    write_png_masks,
    yolo_seg_lines,
)
from samkit.data.image_io import load_image, require_min_size
from samkit.data.masks import overlay_masks, rle_to_mask
from samkit.data.readers import IMAGE_EXTENSIONS
from samkit.data.staging import require_writable, staged_outputs
from samkit.errors import SamkitError
from samkit.io_utils import atomic_path, atomic_write_text
from samkit.models.load import load_model
from samkit.predict.everything import (
    FILTERS,
    AutomaticMaskGenerator,
    EverythingSettings,
)

FORMATS = ("sa1b", "coco", "png", "yolo", "labelme", "labelmap")
OVERLAY_MAX_SIDE = 4096  # px: larger images get a downscaled overlay
# the job's identity: a folder written with other values is refused unless overwrite
RUN_KEYS = ("fmt", "model", "checkpoint", "generator", "overlay", "coco_segmentation")
FIXED_OUTPUTS = ("run.json", "summary.json", "errors.jsonl", "annotations.json", "parts")
# flag of each filter, for the message when an image keeps no mask
FILTER_FLAGS = {"pred_iou": "--pred-iou-thresh", "stability": "--stability-score-thresh (or a smaller "
                "--stability-score-offset)", "crop_edge": "--crop-n-layers", "duplicate": "--box-nms-thresh",
                "small_region": "--min-mask-region-area"}


@dataclass
class EverythingJob:
    """What to run: ``inputs`` (an image file or a folder, not recursive), ``out_dir``, output format,
    generator settings (:class:`~samkit.predict.everything.EverythingSettings` fields; thresholds left out
    or None: the model's recommendation, else SAM's) and the model (registry name or checkpoint path).
    ``overwrite``: replace the outputs of an earlier job with other settings (else such a folder is refused)."""

    inputs: Path
    out_dir: Path
    fmt: str = "sa1b"
    model: str = "samkit_tiny"
    checkpoint: str | None = None
    generator: dict[str, Any] = field(default_factory=dict)
    overlay: bool = False
    coco_segmentation: str = "rle"
    max_pixels: int | None = None  # images above this are refused (see samkit.data.image_io)
    overwrite: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.inputs, self.out_dir = Path(self.inputs), Path(self.out_dir)
        unknown = sorted(set(self.generator) - set(EverythingSettings.names()))
        if unknown:
            raise SamkitError(f"unknown everything setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(EverythingSettings.names())}")
        try:
            EverythingSettings(**self.generator)
        except ValueError as exc:
            raise SamkitError(str(exc)) from None
        if self.fmt not in FORMATS:
            raise SamkitError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.coco_segmentation not in SEGMENTATION_KINDS:
            raise SamkitError(f"COCO segmentation must be one of {SEGMENTATION_KINDS}, got {self.coco_segmentation!r}")

    # -- inputs and outputs ---------------------------------------------------------------------
    def images(self) -> list[Path]:
        """The images to process, sorted by name."""
        if self.inputs.is_file():
            return [self.inputs]
        if not self.inputs.is_dir():
            raise SamkitError(f"input not found: {self.inputs}")
        files = sorted(p for p in self.inputs.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise SamkitError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {self.inputs}")
        stems = [p.stem for p in files]
        clashes = sorted({s for s in stems if stems.count(s) > 1})
        if clashes:
            raise SamkitError(f"several images share a name in {self.inputs}: {', '.join(clashes)} "
                              "(outputs are named by file stem)")
        return files

    def result_path(self, image: Path) -> Path:
        """The file or folder whose existence marks ``image`` as done."""
        if self.fmt == "png":
            return self.out_dir / image.stem
        if self.fmt == "coco":
            return self.out_dir / "parts" / f"{image.stem}.json"
        suffix = {"yolo": ".txt", "labelmap": ".png"}.get(self.fmt, ".json")
        return self.out_dir / f"{image.stem}{suffix}"

    def identity(self) -> dict[str, Any]:
        """The settings that make two runs one job (:data:`RUN_KEYS`), JSON-ready."""
        return {k: getattr(self, k) for k in RUN_KEYS}

    def prepare(self) -> None:
        """Before a run: the output folder must be writable, and hold this job or nothing of samkit's
        (``overwrite``: the earlier job's outputs are deleted first); then record the job in ``run.json``."""
        out = self.out_dir
        require_writable(out)
        earlier = self._earlier_job()
        if earlier is not None and earlier != self.identity():
            if not self.overwrite:
                changed = sorted(k for k in RUN_KEYS if earlier.get(k) != self.identity()[k])
                raise SamkitError(f"{out} holds the outputs of an earlier run with other settings "
                                  f"({', '.join(changed) or 'unknown'}); pass --overwrite to replace them, or "
                                  "choose another folder")
            self._remove_outputs()
        if earlier != self.identity():
            atomic_write_text(out / "run.json", json.dumps(self.identity(), indent=1))

    def _earlier_job(self) -> dict[str, Any] | None:
        """The identity recorded by the last run in ``out_dir`` ({} for a folder of outputs without one)."""
        run = self.out_dir / "run.json"
        if run.is_file():
            try:
                return json.loads(run.read_text())
            except ValueError:
                return {}
        return {} if (self.out_dir / "summary.json").exists() else None

    def _remove_outputs(self) -> None:
        """Delete what an earlier job wrote here: per-image outputs named by this job's image stems, and
        the folder-level files (never other files)."""
        stems = {p.stem for p in self.images()}
        for path in self.out_dir.iterdir():
            name = path.name
            named = name in stems or any(name.startswith(f"{stem}.") for stem in stems)
            per_image = named and (path.is_file() or (path / "masks.json").is_file())
            if per_image or name in FIXED_OUTPUTS:
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def pending(self) -> tuple[list[Path], list[Path]]:
        """(images still to do, images already done)."""
        todo: list[Path] = []
        done: list[Path] = []
        for image in self.images():
            (done if self.result_path(image).exists() else todo).append(image)
        return todo, done

    def make_generator(self) -> AutomaticMaskGenerator:
        model = load_model(self.model, checkpoint=self.checkpoint, progress=False, device=self.device)
        return AutomaticMaskGenerator(model, output_mode="coco_rle", **self.generator)

    def process(self, generator: Any, image_path: Path) -> dict:
        """Segment one image and write its outputs; returns a result line (never raises)."""
        t0 = time.perf_counter()
        try:
            rgb = load_image(image_path, max_pixels=self.max_pixels)
            require_min_size(rgb, image_path)
            records = generator.generate(rgb)
            height, width = rgb.shape[:2]
            doc = sa1b_document(image_path.name, height, width, records)
            self._write(image_path, rgb, doc)
        except Exception as exc:  # noqa: BLE001 -- one bad image must not stop a batch: report it, go on
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return {"image": str(image_path), "ok": False, "reason": reason,
                    "detail": traceback.format_exc(limit=3), "seconds": time.perf_counter() - t0}
        thresholds = {k: getattr(generator, k, None) for k in
                      ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset")}
        return {"image": str(image_path), "ok": True, "masks": len(records), "seconds": time.perf_counter() - t0,
                "timings": dict(getattr(generator, "timings", {})),
                "filtered": dict(getattr(generator, "filtered", {})), "thresholds": thresholds}

    def _write(self, image_path: Path, rgb: np.ndarray, doc: dict) -> None:
        annotations = doc["annotations"]
        height, width = rgb.shape[:2]

        def masks() -> Iterator[np.ndarray]:  # one at a time: a large image never holds them all
            return (rle_to_mask(a["segmentation"]) for a in annotations)

        if self.overlay:
            with atomic_path(self.out_dir / f"{image_path.stem}.overlay.png") as tmp:
                Image.fromarray(overlay_masks(rgb, masks(), alpha=0.35, max_side=OVERLAY_MAX_SIDE)).save(
                    tmp, format="PNG")
        result = self.result_path(image_path)
        if self.fmt == "png":
            with staged_outputs(result) as staging:
                records = [{k: v for k, v in a.items() if k != "segmentation"} for a in annotations]
                write_png_masks(staging, masks(), records)
        elif self.fmt == "yolo":
            atomic_write_text(result, "".join(line + "\n" for line in yolo_seg_lines(masks())))
        elif self.fmt == "labelme":
            atomic_write_text(result, json.dumps(labelme_document(image_path.name, height, width, masks())))
        elif self.fmt == "labelmap":
            write_label_map(result, masks(), height, width)  # largest first (records' order): small on top
        else:
            atomic_write_text(result, json.dumps(doc))

    def finish(self, results: list[dict], skipped: int, seconds: float, engine: str) -> dict:
        """Write ``errors.jsonl``, the folder COCO file (format coco) and ``summary.json``; return the summary."""
        failed = [r for r in results if not r["ok"]]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "errors.jsonl", "".join(
            json.dumps({"image": r["image"], "reason": r["reason"]}) + "\n" for r in failed))
        if self.fmt == "coco":
            parts = [self.result_path(p) for p in self.images() if self.result_path(p).exists()]
            docs = (json.loads(p.read_text()) for p in parts)
            atomic_write_text(self.out_dir / "annotations.json",
                              json.dumps(coco_document(docs, self.coco_segmentation)))
        done = [r for r in results if r["ok"]]
        summary = {"engine": engine, "processed": len(done), "failed": len(failed), "skipped_done": skipped,
                   "masks": sum(r["masks"] for r in done), "seconds": seconds,
                   "without_masks": [{"image": r["image"], "why": explain_empty(r)} for r in done if not r["masks"]],
                   "images_per_s": len(done) / seconds if seconds > 0 and done else 0.0,
                   "failures": [{"image": r["image"], "reason": r["reason"]} for r in failed],
                   "job": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}}
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=1))
        return summary


def run_local(job: EverythingJob, progress: bool = True,
              on_result: Callable[[dict], None] | None = None) -> dict:
    """Run ``job`` in this process, one image at a time; returns the summary. ``on_result`` gets each
    image's result line as soon as it is done (the CLI logs them when stderr is not a terminal)."""
    t0 = time.perf_counter()
    job.prepare()
    todo, done = job.pending()
    results = []
    if todo:
        generator = job.make_generator()
        for image in tqdm(todo, desc="everything", unit="img", disable=not progress):
            result = job.process(generator, image)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return job.finish(results, len(done), time.perf_counter() - t0, "local")


# ---------------------------------------------------------------------------------------------- Ray


def run_ray(job: EverythingJob, workers: int = 2, address: str | None = None, progress: bool = True,
            threads_per_worker: int | None = None, max_retries: int = 2,
            on_result: Callable[[dict], None] | None = None) -> dict:
    """Run ``job`` on Ray (:func:`ray_map`): ``workers`` actors, each loading the model once, each writing
    an image's outputs as soon as it is done. ``address``: an existing cluster (outputs must be on storage
    all nodes share); None starts a local one. An image whose worker died more often than Ray retries
    (``max_retries``) is reported like any failing image; finished images are never redone."""
    t0 = time.perf_counter()
    job.prepare()
    todo, done = job.pending()
    results: list[dict] = []
    with tqdm(total=len(todo), desc="everything (ray)", unit="img", disable=not progress or not todo) as bar:

        def collect(image: Path, result: dict | None, error: str | None) -> None:
            if result is None:
                result = {"image": str(image), "ok": False, "seconds": 0.0, "reason": f"worker failed: {error}"}
            results.append(result)
            if on_result is not None:
                on_result(result)
            bar.update(1)

        ray_map(_RayWorker, (job,), todo, collect, workers, address, threads_per_worker, max_retries)
    return job.finish(results, len(done), time.perf_counter() - t0, "ray")


def ray_map(actor: type, args: tuple, items: list[Any], on_result: Callable[[Any, Any, str | None], None],
            workers: int = 2, address: str | None = None, threads_per_worker: int | None = None,
            max_retries: int = 2) -> None:
    """Stream ``items`` to Ray actors ``actor(*args, threads)`` (``workers`` of them, ``threads`` torch
    threads each, two items in flight per actor) calling ``actor.process(item)``; ``on_result(item, value,
    error)`` gets each answer as it comes, in the order they finish (``error``: one line, ``value`` None,
    when the actor died more often than Ray restarts it, ``max_retries``). Starts a local Ray unless one
    is running or ``address`` names a cluster; the actors, and a Ray started here, are stopped at the end,
    also when ``on_result`` raises (a cancelled job)."""
    require("ray", "ray", "the Ray engine")
    import ray

    if not items:
        return
    started_here = not ray.is_initialized()
    if started_here:
        local = {"num_cpus": max(workers, os.cpu_count() or 1)}
        kwargs: dict[str, Any] = {"address": address} if address else local
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, **kwargs)
    actors: list[Any] = []
    try:
        threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        actor_cls: Any = ray.remote(num_cpus=1, max_restarts=max_retries, max_task_retries=max_retries)(actor)
        held = [ray.put(a) for a in args]  # put once, held here: a restarted actor gets them again
        actors = [actor_cls.remote(*held, threads) for _ in range(max(1, min(workers, len(items))))]
        queue = list(reversed(items))
        in_flight: dict[Any, tuple[Any, int]] = {}

        def submit(i: int) -> None:
            item = queue.pop()
            in_flight[actors[i].process.remote(item)] = (item, i)

        for i in range(len(actors)):
            for _ in range(2):
                if queue:
                    submit(i)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            item, i = in_flight.pop(ready[0])
            try:
                value, error = ray.get(ready[0]), None
            except Exception as exc:  # noqa: BLE001 -- the worker died more often than Ray retries
                value, error = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
            on_result(item, value, error)
            if queue:
                submit(i)
    finally:
        for handle in actors:
            ray.kill(handle)
        if started_here:
            ray.shutdown()


class _RayWorker:
    """A Ray actor's state: the job and its generator (one model per actor)."""

    def __init__(self, job: EverythingJob, threads: int) -> None:
        torch.set_num_threads(threads)
        self.job = job
        self.generator = job.make_generator()

    def process(self, image: Path) -> dict:
        return self.job.process(self.generator, Path(image))


class RayGenerator:
    """A Ray actor of the annotation server's automatic labelling (:func:`ray_map` with ``args`` = (model,
    generator keyword arguments)): an image path -> :class:`AutomaticMaskGenerator` records (COCO RLE)."""

    def __init__(self, model: Any, generator: dict[str, Any], threads: int) -> None:
        torch.set_num_threads(threads)
        self.generator = AutomaticMaskGenerator(model, output_mode="coco_rle", **generator)

    def process(self, image: Path) -> list[dict[str, Any]]:
        return self.generator.generate(load_image(image))


def explain_empty(result: dict) -> str:
    """Why an image kept no mask: how many candidates each filter removed, and the flags to relax."""
    filtered = result.get("filtered") or {}
    if not filtered.get("candidates"):
        return "kept no mask: no candidate was decoded"
    t = result.get("thresholds") or {}
    limits = {"pred_iou": f"predicted IoU <= {t.get('pred_iou_thresh')}",
              "stability": f"stability < {t.get('stability_score_thresh')} (offset {t.get('stability_score_offset')})",
              "crop_edge": "touching a crop edge", "duplicate": "duplicates (NMS)", "small_region": "small regions"}
    removed = [(name, filtered.get(name, 0)) for name in FILTERS if filtered.get(name, 0)]
    parts = ", ".join(f"{limits[name]} removed {n}" for name, n in removed)
    flags = " or ".join(FILTER_FLAGS[name] for name, n in removed if name in ("pred_iou", "stability"))
    hint = f"; relax {flags} (this model's scores may run lower than SAM's)" if flags else ""
    return f"kept no mask of {filtered['candidates']} candidates: {parts}{hint}"
