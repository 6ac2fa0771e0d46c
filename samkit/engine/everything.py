"""Batch "segment everything" over an image or a folder: resumable, one failing image never stops the run.

Output folder layout (``fmt``):

* ``sa1b``: ``<stem>.json`` per image (SA-1B: ``image`` + ``annotations`` with COCO RLE);
* ``coco``: the same per-image files under ``parts/``, and ``annotations.json`` (one COCO JSON for
  the whole folder, RLE or polygons) rebuilt from them at the end of every run;
* ``png``: ``<stem>/mask_000.png ...`` + ``<stem>/masks.json`` per image;
* ``--overlay``: ``<stem>.overlay.png`` beside them; ``errors.jsonl``: one line per failed image
  (path, reason), rewritten by every run; ``summary.json``: counts and timings of the last run.

An image is done when its result file/folder exists (written atomically), so a rerun skips it.
"""
from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.data.readers import IMAGE_EXTENSIONS
from samkit.data.formats import SEGMENTATION_KINDS, atomic_write_text, coco_document, sa1b_document, write_png_masks
from samkit.data.image_io import load_image
from samkit.data.masks import overlay_masks, rle_to_mask
from samkit.data.staging import staged_outputs
from samkit.errors import SamkitError

FORMATS = ("sa1b", "coco", "png")


@dataclass
class EverythingJob:
    """What to run: ``inputs`` (an image file or a folder, not recursive), ``out_dir``, output format,
    generator settings (:class:`samkit.predict.everything.AutomaticMaskGenerator` keyword arguments)
    and the model (registry name or checkpoint path)."""

    inputs: Path
    out_dir: Path
    fmt: str = "sa1b"
    model: str = "samkit_tiny"
    checkpoint: str | None = None
    generator: dict[str, Any] = field(default_factory=dict)
    overlay: bool = False
    coco_segmentation: str = "rle"
    max_pixels: int | None = None  # images above this are refused (see samkit.data.image_io)

    def __post_init__(self) -> None:
        self.inputs, self.out_dir = Path(self.inputs), Path(self.out_dir)
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
        return self.out_dir / f"{image.stem}.json"

    def pending(self) -> tuple[list[Path], list[Path]]:
        """(images still to do, images already done)."""
        todo, done = [], []
        for image in self.images():
            (done if self.result_path(image).exists() else todo).append(image)
        return todo, done

    def make_generator(self) -> Any:
        import samkit
        from samkit.predict.everything import AutomaticMaskGenerator

        model = samkit.load_model(self.model, checkpoint=self.checkpoint, progress=False)
        return AutomaticMaskGenerator(model, output_mode="coco_rle", **self.generator)

    def process(self, generator: Any, image_path: Path) -> dict:
        """Segment one image and write its outputs; returns a result line (never raises)."""
        t0 = time.perf_counter()
        try:
            rgb = load_image(image_path, max_pixels=self.max_pixels)
            records = generator.generate(rgb)
            height, width = rgb.shape[:2]
            doc = sa1b_document(image_path.name, height, width, records)
            self._write(image_path, rgb, doc)
        except Exception as exc:  # one bad image must not stop a batch: report it and go on
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return {"image": str(image_path), "ok": False, "reason": reason,
                    "detail": traceback.format_exc(limit=3), "seconds": time.perf_counter() - t0}
        return {"image": str(image_path), "ok": True, "masks": len(records), "seconds": time.perf_counter() - t0,
                "timings": dict(getattr(generator, "timings", {}))}

    def _write(self, image_path: Path, rgb: np.ndarray, doc: dict) -> None:
        annotations = doc["annotations"]
        if self.overlay:  # the overlay needs every mask at once; the other outputs stream them
            from PIL import Image

            out = self.out_dir / f"{image_path.stem}.overlay.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            stack = np.zeros((len(annotations), *rgb.shape[:2]), dtype=bool)
            for i, a in enumerate(annotations):
                stack[i] = rle_to_mask(a["segmentation"])
            tmp = out.with_name(f".{out.name}.tmp")
            Image.fromarray(overlay_masks(rgb, stack)).save(tmp, format="PNG")
            tmp.replace(out)
        if self.fmt == "png":
            with staged_outputs(self.result_path(image_path)) as staging:
                records = [{k: v for k, v in a.items() if k != "segmentation"} for a in annotations]
                write_png_masks(staging, (rle_to_mask(a["segmentation"]) for a in annotations), records)
        else:
            atomic_write_text(self.result_path(image_path), json.dumps(doc))

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
                   "images_per_s": len(done) / seconds if seconds > 0 and done else 0.0,
                   "failures": [{"image": r["image"], "reason": r["reason"]} for r in failed],
                   "job": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}}
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=1))
        return summary


def run_local(job: EverythingJob, progress: bool = True,
              on_result: Callable[[dict], None] | None = None) -> dict:
    """Run ``job`` in this process, one image at a time; returns the summary."""
    from tqdm import tqdm

    t0 = time.perf_counter()
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
    """Run ``job`` on Ray: ``workers`` actors, each loading the model once; images are streamed to them
    (two in flight per actor) and each writes its outputs as soon as an image is done. ``address``:
    an existing cluster (outputs must be on storage all nodes share); None starts a local one.

    A worker that dies is restarted by Ray and its image retried (``max_retries`` times); an image
    that still fails is reported like any failing image, and finished images are never redone.
    """
    try:
        import ray
    except ImportError:
        raise SamkitError("the Ray engine needs Ray: pip install 'samkit[ray]'") from None
    import os

    from tqdm import tqdm

    t0 = time.perf_counter()
    todo, done = job.pending()
    results: list[dict] = []
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": max(workers, os.cpu_count() or 1)}
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
        try:
            threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
            actor_cls = ray.remote(num_cpus=1, max_restarts=max_retries, max_task_retries=max_retries)(_RayWorker)
            actors = [actor_cls.remote(job, threads) for _ in range(max(1, min(workers, len(todo))))]
            queue = list(reversed(todo))
            in_flight: dict[Any, tuple[Path, int]] = {}

            def submit(i: int) -> None:
                image = queue.pop()
                in_flight[actors[i].process.remote(str(image))] = (image, i)

            for i in range(len(actors)):
                for _ in range(2):
                    if queue:
                        submit(i)
            with tqdm(total=len(todo), desc="everything (ray)", unit="img", disable=not progress) as bar:
                while in_flight:
                    ready, _ = ray.wait(list(in_flight), num_returns=1)
                    image, actor = in_flight.pop(ready[0])
                    try:
                        result = ray.get(ready[0])
                    except Exception as exc:  # the worker died more often than Ray retries
                        result = {"image": str(image), "ok": False, "seconds": 0.0,
                                  "reason": f"worker failed: {type(exc).__name__}: {exc}".splitlines()[0]}
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
                    bar.update(1)
                    if queue:
                        submit(actor)
        finally:
            if started_here:
                ray.shutdown()
    return job.finish(results, len(done), time.perf_counter() - t0, "ray")


class _RayWorker:
    """A Ray actor's state: the job and its generator (one model per actor)."""

    def __init__(self, job: EverythingJob, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.job = job
        self.generator = job.make_generator()

    def process(self, image: str) -> dict:
        return self.job.process(self.generator, Path(image))
