"""Background jobs of the annotation server, persisted in the ``jobs`` table and run one at a time by a
worker thread: pre-encode, fully automatic labelling (``auto``), semi-automatic pre-fill (``semi``,
stored pending review), export (COCO JSON, or a zip of SA-1B / YOLO-seg / PNG files: a downloadable
file), COCO import and retraining (:mod:`samkit.engine.retrain`; its result is the new model file).

``auto`` and ``semi`` run the generator in this process, or on Ray actors (``engine`` "ray": the job's
parameter, else the server's ``--engine``), each with a copy of the model.

Each image's results are written in one transaction, so a job stopped at any point leaves whole images
only; a restarted server re-queues interrupted resumable jobs (done images are skipped: their
annotations carry the job id) and marks an interrupted import or retrain failed (an import runs in one
transaction; a retrain registers its version only at its end).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from samkit.data.formats import SEGMENTATION_KINDS, coco_document, write_png_masks, write_sa1b, write_yolo_seg
from samkit.data.image_io import load_image
from samkit.data.masks import rle_to_mask
from samkit.data.readers.coco import segmentation_to_mask
from samkit.engine.embeddings import EmbeddingCache
from samkit.engine.everything import RayGenerator, ray_map
from samkit.engine.retrain import RetrainSettings, retrain_project
from samkit.engine.store import annotations as ann_ops
from samkit.engine.store.images import confined
from samkit.engine.store.models import Annotation, Image, Job, Label, utcnow
from samkit.errors import SamkitError
from samkit.io_utils import atomic_write_text
from samkit.predict.everything import AutomaticMaskGenerator, EverythingSettings

EXPORT_FORMATS = ("coco", "sa1b", "yolo", "png")
RESUMABLE = ("encode", "auto", "semi", "export")
GENERATOR_PARAMS = EverythingSettings.names()
ENGINES = ("local", "ray")
# auto / semi jobs: the generator's settings, and where it runs (default: the server's --engine / --workers)
LABEL_PARAMS = (*GENERATOR_PARAMS, "engine", "workers")
MAX_WORKERS = 256
# semi-automatic pre-fill keeps only confident masks: these floors apply on top of the model's thresholds
SEMI_FLOORS = {"pred_iou_thresh": 0.9, "stability_score_thresh": 0.95}


class Cancelled(Exception):
    """The job's cancel flag was set; it stops between two images."""


@dataclass
class JobContext:
    """What jobs work with: the image root, the project folder (exports), the model and its embeddings;
    ``sync`` (when set) brings model, version and embeddings up to the project's current model version: the
    runner calls it before each job and after a retrain."""

    root: Path
    project_dir: Path
    model: Any
    model_version_id: int
    embeddings: EmbeddingCache
    engine: str = "local"  # where auto / semi jobs run the generator unless their params say: local | ray
    workers: int = 2  # Ray actors
    ray_address: str | None = None  # an existing Ray cluster (None: a local one, started per job)
    sync: Callable[[], object] | None = None


def check_params(kind: str, params: dict) -> dict:
    """The job's parameters, checked when it is created (SamkitError on anything unknown or bad)."""
    allowed = {"encode": (), "auto": LABEL_PARAMS, "semi": LABEL_PARAMS,
               "export": ("format", "segmentation", "statuses"), "import_coco": ("file", "source"),
               "retrain": RetrainSettings.names()}
    if kind not in allowed:
        raise SamkitError(f"unknown job kind {kind!r}; one of {tuple(allowed)}")
    unknown = set(params) - set(allowed[kind])
    if unknown:
        raise SamkitError(f"{kind} job: unknown parameters {sorted(unknown)}; allowed {list(allowed[kind])}")
    if kind in ("auto", "semi"):
        try:
            EverythingSettings(**{k: v for k, v in params.items() if k in GENERATOR_PARAMS})
        except (ValueError, TypeError) as exc:
            raise SamkitError(f"{kind} job: {exc}") from None
        if params.get("engine", "local") not in ENGINES:
            raise SamkitError(f"{kind} job: engine must be one of {ENGINES}, got {params['engine']!r}")
        workers = params.get("workers", 1)
        if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
            raise SamkitError(f"{kind} job: workers must be an integer from 1 to {MAX_WORKERS}, got {workers!r}")
    if kind == "export" and params.get("segmentation", "rle") not in SEGMENTATION_KINDS:
        raise SamkitError(f"export: segmentation must be one of {SEGMENTATION_KINDS}")
    if kind == "export" and params.get("format", "coco") not in EXPORT_FORMATS:
        raise SamkitError(f"export: format must be one of {EXPORT_FORMATS}")
    if kind == "retrain":
        RetrainSettings.from_params(params)
    if kind == "import_coco" and "file" not in params:
        raise SamkitError("import_coco: needs 'file'")
    return params


class JobRunner:
    """Runs queued jobs one at a time in a daemon thread (:meth:`start` / :meth:`stop`)."""

    def __init__(self, sessions: sessionmaker[Session], ctx: JobContext, poll: float = 0.2) -> None:
        self.sessions, self.ctx, self.poll = sessions, ctx, poll
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def recover(self) -> None:
        """After a restart: interrupted resumable jobs are queued again, others marked failed."""
        with self.sessions.begin() as s:
            for job in s.scalars(select(Job).where(Job.state == "running")):
                if job.kind in RESUMABLE:
                    job.state = "queued"
                else:
                    job.state, job.error, job.finished_at = "failed", "interrupted by a server restart", utcnow()

    def start(self) -> None:
        self._stop.clear()
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="samkit-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job_id = self._claim()
            if job_id is None:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            self._run(job_id)

    def _claim(self) -> int | None:
        with self.sessions.begin() as s:
            job = s.scalar(select(Job).where(Job.state == "queued").order_by(Job.id).limit(1))
            if job is None:
                return None
            job.state, job.started_at = "running", job.started_at or utcnow()
            return job.id

    def _run(self, job_id: int) -> None:
        with self.sessions() as s:
            job = s.get_one(Job, job_id)
            kind, params, project_id = job.kind, dict(job.params), job.project_id
        state, error, result = "done", None, None
        try:
            if self.ctx.sync is not None:
                self.ctx.sync()
            result = HANDLERS[kind](self, job_id, project_id, params)
        except Cancelled:
            state = "cancelled"
        except InterruptedError:  # the server is stopping: left "running", recovered at the next start
            return
        except Exception as exc:  # noqa: BLE001 -- any failure is recorded on the job, the worker goes on
            state, error = "failed", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        with self.sessions.begin() as s:
            job = s.get_one(Job, job_id)
            job.state, job.error, job.result, job.finished_at = state, error, result, utcnow()

    # -- helpers for handlers ----------------------------------------------------------------
    def progress(self, job_id: int, done: int, total: int) -> None:
        """Record progress; raises Cancelled when the job's cancel flag is set (or the server stops)."""
        with self.sessions.begin() as s:
            job = s.get_one(Job, job_id)
            job.done, job.total = done, total
            if job.cancel_requested:
                raise Cancelled
        if self._stop.is_set():
            raise InterruptedError("server stopping")  # left "running": re-queued or failed at the next start

    def images(self, project_id: int) -> list[tuple[int, Path, str]]:
        with self.sessions() as s:
            rows = s.execute(select(Image.id, Image.path, Image.sha256).where(Image.project_id == project_id)
                             .order_by(Image.id)).all()
        return [(i, confined(self.ctx.root, p), sha) for i, p, sha in rows]


def _encode(runner: JobRunner, job_id: int, project_id: int, params: dict) -> None:
    images = runner.images(project_id)
    for n, (_, path, sha) in enumerate(images):
        runner.progress(job_id, n, len(images))
        runner.ctx.embeddings.get(path, sha)
    runner.progress(job_id, len(images), len(images))


def _generator_kwargs(runner: JobRunner, kind: str, params: dict) -> dict:
    """The generator settings of an auto job (the model's thresholds unless given), or of a semi job
    (thresholds not given are raised to at least :data:`SEMI_FLOORS`), as keyword arguments."""
    settings = EverythingSettings(**{k: v for k, v in params.items() if k in GENERATOR_PARAMS})
    if kind == "semi":
        resolved = settings.resolve(runner.ctx.model)
        settings = replace(resolved, **{name: max(getattr(resolved, name), floor)
                                        for name, floor in SEMI_FLOORS.items() if params.get(name) is None})
    return settings.kwargs()


def _label_masks(runner: JobRunner, job_id: int, project_id: int, params: dict, kind: str) -> None:
    """auto: accepted ``auto`` masks; semi: ``semi`` masks pending review. Done images are skipped. The
    generator runs here, or on Ray actors (``engine`` "ray", ``workers`` of them, each with a copy of the
    model), images stored as they finish."""
    kwargs = _generator_kwargs(runner, kind, params)
    images = runner.images(project_id)
    with runner.sessions() as s:
        done = set(s.scalars(select(Annotation.image_id).where(Annotation.job_id == job_id)).all())
    status = "accepted" if kind == "auto" else "pending"
    todo = [(image_id, path) for image_id, path, _ in images if image_id not in done]
    finished = len(images) - len(todo)

    def store(image_id: int, records: list[dict]) -> None:
        nonlocal finished
        with runner.sessions.begin() as s:  # one image, one transaction
            for r in records:
                ann_ops.create(s, image_id, rle_to_mask(r["segmentation"]), None, source=kind, status=status,
                               score=float(r["predicted_iou"]), model_version_id=runner.ctx.model_version_id,
                               job_id=job_id)
        finished += 1
        runner.progress(job_id, finished, len(images))

    runner.progress(job_id, finished, len(images))
    if params.get("engine", runner.ctx.engine) == "ray":
        ids = {path: image_id for image_id, path in todo}

        def on_result(path: Path, records: list[dict] | None, error: str | None) -> None:
            if records is None:
                raise SamkitError(f"{path.name}: the Ray worker failed: {error}")
            store(ids[path], records)

        ray_map(RayGenerator, (runner.ctx.model, kwargs), [path for _, path in todo], on_result,
                params.get("workers", runner.ctx.workers), runner.ctx.ray_address)
    else:
        generator = AutomaticMaskGenerator(runner.ctx.model, output_mode="coco_rle", **kwargs)
        for image_id, path in todo:
            store(image_id, generator.generate(load_image(path)))


def _export_documents(runner: JobRunner, project_id: int, statuses: list[str]) -> tuple[list[dict], list[dict]]:
    """SA-1B-style ``{"image", "annotations"}`` per image (live annotations with ``statuses``) and the
    categories (0: "object" for masks without a label, then the project's labels)."""
    with runner.sessions() as s:
        labels = s.scalars(select(Label).where(Label.project_id == project_id).order_by(Label.id)).all()
        docs = []
        for image in s.scalars(select(Image).where(Image.project_id == project_id).order_by(Image.id)):
            anns = s.scalars(select(Annotation).where(Annotation.image_id == image.id,
                                                      Annotation.deleted_at.is_(None),
                                                      Annotation.status.in_(statuses)).order_by(Annotation.id))
            docs.append({"image": {"file_name": image.path, "height": image.height, "width": image.width},
                         "annotations": [{"segmentation": a.rle, "bbox": a.bbox, "area": a.area,
                                          "category_id": a.label_id or 0, "source": a.source,
                                          **({"score": a.score} if a.score is not None else {})} for a in anns]})
    return docs, [{"id": 0, "name": "object"}] + [{"id": lab.id, "name": lab.name} for lab in labels]


def _write_per_image(folder: Path, fmt: str, docs: list[dict], categories: list[dict]) -> None:
    """sa1b: ``<stem>.json``; yolo: ``<stem>.txt`` (class = index in ``classes.txt``); png: ``<stem>/``
    (``mask_NNN.png`` + ``masks.json``). ``stem``: the image path with ``/`` as ``__``, no suffix."""
    classes = {c["id"]: i for i, c in enumerate(categories)}
    atomic_write_text(folder / "classes.txt", "".join(f"{c['name']}\n" for c in categories))
    for doc in docs:
        info, anns = doc["image"], doc["annotations"]
        stem = str(Path(info["file_name"]).with_suffix("")).replace("/", "__")
        if fmt == "sa1b":
            write_sa1b(folder / f"{stem}.json", info["file_name"], info["height"], info["width"], anns)
            continue
        masks = [rle_to_mask(a["segmentation"]) for a in anns]
        if fmt == "yolo":
            write_yolo_seg(folder / f"{stem}.txt", masks, [classes[a["category_id"]] for a in anns])
        else:
            write_png_masks(folder / stem, masks, anns)


def _export(runner: JobRunner, job_id: int, project_id: int, params: dict) -> str:
    """COCO JSON (RLE or polygons), or a zip of SA-1B / YOLO-seg / PNG files, of the live annotations with
    the given statuses (default accepted) -> ``exports/``; returns its path in the project folder."""
    docs, categories = _export_documents(runner, project_id, params.get("statuses", ["accepted"]))
    fmt = params.get("format", "coco")
    exports = runner.ctx.project_dir / "exports"
    if fmt == "coco":
        doc = coco_document(docs, segmentation=params.get("segmentation", "rle"), categories=categories)
        relative = f"exports/job_{job_id}_coco.json"
        atomic_write_text(runner.ctx.project_dir / relative, json.dumps(doc))
    else:
        exports.mkdir(parents=True, exist_ok=True)
        relative = f"exports/job_{job_id}_{fmt}.zip"
        with tempfile.TemporaryDirectory(dir=exports, prefix=".export-") as tmp:
            _write_per_image(Path(tmp) / "files", fmt, docs, categories)
            archive = shutil.make_archive(str(Path(tmp) / "archive"), "zip", Path(tmp) / "files")
            os.replace(archive, runner.ctx.project_dir / relative)
    runner.progress(job_id, 1, 1)
    return relative


def _import_coco(runner: JobRunner, job_id: int, project_id: int, params: dict) -> None:
    """Annotations of a COCO JSON onto the project's images (matched by path, else by file name), in one
    transaction: an import that fails adds nothing."""
    doc = json.loads(confined(runner.ctx.project_dir, params["file"]).read_text())
    source = params.get("source", "manual")
    with runner.sessions.begin() as s:
        images = s.scalars(select(Image).where(Image.project_id == project_id)).all()
        by_path = {i.path: i for i in images} | {Path(i.path).name: i for i in images if Path(i.path).name}
        labels = {}
        for cat in doc.get("categories", []):
            label = s.scalar(select(Label).where(Label.project_id == project_id, Label.name == cat["name"]))
            if label is None:
                label = Label(project_id=project_id, name=cat["name"])
                s.add(label)
                s.flush()
            labels[cat["id"]] = label.id
        targets = {}
        for info in doc.get("images", []):
            image = by_path.get(info["file_name"]) or by_path.get(Path(info["file_name"]).name)
            if image is None:
                raise SamkitError(f"import: image {info['file_name']!r} is not in the project")
            targets[info["id"]] = image
        anns = doc.get("annotations", [])
        for ann in anns:  # no progress rows meanwhile: this transaction holds SQLite's write lock
            image = targets[ann["image_id"]]
            mask = segmentation_to_mask(ann["segmentation"], image.height, image.width)
            ann_ops.create(s, image.id, mask, None, label_id=labels.get(ann.get("category_id")), source=source,
                           status="accepted", score=ann.get("score"), job_id=job_id)
    runner.progress(job_id, len(anns), len(anns))


def _retrain(runner: JobRunner, job_id: int, project_id: int, params: dict) -> str:
    """Fine-tune, evaluate, register (and maybe switch to) a new model version; returns its file."""
    settings = RetrainSettings.from_params(params)
    result = retrain_project(runner.sessions, runner.ctx.root, runner.ctx.project_dir, project_id, settings,
                             lambda done, total: runner.progress(job_id, done, total))
    if runner.ctx.sync is not None:
        runner.ctx.sync()  # predict with the new version from now on when the project switched to it
    return result.file


HANDLERS: dict[str, Callable[[JobRunner, int, int, dict], str | None]] = {
    "encode": _encode,
    "auto": lambda r, j, p, params: _label_masks(r, j, p, params, "auto"),
    "semi": lambda r, j, p, params: _label_masks(r, j, p, params, "semi"),
    "export": _export,
    "import_coco": _import_coco,
    "retrain": _retrain,
}
