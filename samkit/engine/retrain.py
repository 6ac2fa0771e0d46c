"""The retraining loop of the data engine: fine-tune a project's current model on its accepted masks, measure
it on held-out images before and after, register the new version and switch to it only when it is better.

1. Images with live accepted annotations are split by image, deterministically: an image is held out when
   ``int(sha256[:16], 16) / 16**16 < held_out`` (the same image always lands on the same side, whatever
   else the project holds); when no image falls below, the one with the smallest value is held out.
2. The held-out objects (those the trainer learns from: at least ``min_area_frac`` of the input frame,
   :func:`samkit.train.data.eligible_objects`) are evaluated with the interactive protocol
   (:func:`samkit.eval.interactive.evaluate`, 20 clicks): NoC@90 and mIoU@1 of the current model.
3. :class:`samkit.train.trainer.Trainer` fine-tunes a fresh copy of it on the training images with
   :data:`RECIPE` (samkit_tiny v2's phase-2 settings) for ``steps`` steps, in a temporary folder under
   ``<project>/models/``; the result is written as an fp16 model file and evaluated again from that file.
4. The new version (file ``models/v<id>.fp16.safetensors``, parent, metrics) is registered in one
   transaction with the switch, which happens only when :func:`is_better` and the project still predicts
   with the parent. A failure or a cancel before that leaves no file and no row.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from samkit.data.image_io import load_image
from samkit.data.masks import rle_to_mask
from samkit.data.sample import Sample
from samkit.engine.store.images import confined
from samkit.engine.store.models import Annotation, Image, ModelVersion, Project
from samkit.engine.versions import MODELS_DIR, current_version, load_version, version_file
from samkit.errors import SamkitError
from samkit.eval.interactive import evaluate
from samkit.eval.metrics import noc
from samkit.models.load import load_model
from samkit.models.model_file import ModelFileInfo, write_model_file
from samkit.models.sam import Sam
from samkit.predict.predictor import Predictor
from samkit.train.config import TrainConfig
from samkit.train.data import eligible_objects
from samkit.train.model import PRETRAINED
from samkit.train.trainer import Trainer

# samkit_tiny v2's phase-2 recipe (configs/samkit_tiny_v2_phase2.json) without its data, length, lr and mode
RECIPE: dict[str, Any] = {
    "weight_decay": 0.05, "betas": (0.9, 0.999), "schedule": "cosine", "min_lr_ratio": 0.05, "grad_clip": 1.0,
    "click_rounds": 5, "mask_only_rounds": 1, "box_prob": 0.5, "loss_size": "low", "min_area_frac": 0.02,
    "focal_alpha": 0.5, "protocol_click_prob": 0.5, "bf16": False,
}
NOC_THRESHOLD = 0.90
RULE = ("better: NoC@90 lower, or NoC@90 equal and mIoU@1 higher, on the held-out objects; NoC@90 counts as "
        "equal when its change is within one standard error of the per-object changes")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RetrainSettings:
    """A retrain run: ``steps`` optimiser steps of ``batch_size`` objects at peak learning rate ``lr``
    (warm-up ``steps // 10`` up to 20, cosine decay); ``mode`` "finetune" trains prompt encoder and mask
    decoder (image encoder frozen), "scratch" everything; ``held_out`` the fraction of images kept for
    evaluation; ``max_clicks`` of the interactive protocol; ``seed`` of batches and prompts."""

    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 8
    mode: str = "finetune"
    held_out: float = 0.2
    max_clicks: int = 20
    seed: int = 0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RetrainSettings:
        """Settings from job parameters / CLI options; SamkitError on an unknown name or a bad value."""
        unknown = sorted(set(params) - set(cls.names()))
        if unknown:
            raise SamkitError(f"retrain: unknown parameters {unknown}; allowed {list(cls.names())}")
        types = get_type_hints(cls)  # the fields' own annotations: int, float or str
        for name, value in params.items():
            ok = isinstance(value, types[name]) or (types[name] is float and isinstance(value, int))
            if not ok or isinstance(value, bool):
                raise SamkitError(f"retrain: {name} must be {types[name].__name__}, got {value!r}")
        return cls(**params).check()

    def check(self) -> RetrainSettings:
        checks = [(self.steps >= 1, "steps must be >= 1"), (self.lr > 0, "lr must be > 0"),
                  (self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.mode in ("finetune", "scratch"), "mode must be 'finetune' or 'scratch'"),
                  (0 < self.held_out < 1, "held_out must be in (0, 1)"),
                  (self.max_clicks >= 1, "max_clicks must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise SamkitError(f"retrain: {message}")
        return self


@dataclass(frozen=True)
class AnnotatedImage:
    """An image of the project with its live accepted masks (COCO RLE)."""

    image_id: int
    path: Path
    sha256: str
    rles: tuple[dict, ...]

    def sample(self) -> Sample:
        image = load_image(self.path)
        masks = np.stack([rle_to_mask(r) for r in self.rles])
        return Sample(name=f"image{self.image_id}", image=image, masks=masks, source=str(self.path))


class ImageSamples(Sequence[Sample]):
    """Annotated images as Samples, read when indexed (the trainer draws from them at random)."""

    def __init__(self, images: Sequence[AnnotatedImage]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]  # no slices
        return self.images[index].sample()


@dataclass(frozen=True)
class RetrainResult:
    """The registered version (its file relative to the project), the metrics before / after, the switch."""

    version_id: int
    file: str
    before: dict[str, float]
    after: dict[str, float]
    switched: bool
    parent_id: int


def split_key(sha256: str) -> float:
    """An image's place in [0, 1) for the split (from its content hash)."""
    return int(sha256[:16], 16) / 16 ** 16


def split_images(images: Sequence[AnnotatedImage], held_out: float
                 ) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """(train, held-out) by image: see the module docstring. SamkitError unless both sides get an image."""
    if len(images) < 2:
        raise SamkitError(f"retrain needs accepted annotations on at least 2 images (train and held-out), "
                          f"the project has them on {len(images)}")
    held = [i for i in images if split_key(i.sha256) < held_out] or [min(images, key=lambda i: split_key(i.sha256))]
    held_ids = {i.image_id for i in held}
    train = [i for i in images if i.image_id not in held_ids]
    if not train:
        raise SamkitError(f"retrain: held_out={held_out} keeps every annotated image out of training")
    return train, held


def annotated_images(session: Session, root: Path, project_id: int) -> list[AnnotatedImage]:
    """The project's images with at least one live accepted annotation, by image id."""
    rows = session.execute(select(Image.id, Image.path, Image.sha256, Annotation.rle).join(
        Annotation, Annotation.image_id == Image.id).where(
        Image.project_id == project_id, Annotation.status == "accepted", Annotation.deleted_at.is_(None)
    ).order_by(Image.id, Annotation.id)).all()
    rles: dict[int, list[dict]] = defaultdict(list)
    info: dict[int, tuple[str, str]] = {}
    for image_id, path, sha, rle in rows:
        rles[image_id].append(rle)
        info[image_id] = (path, sha)
    return [AnnotatedImage(i, confined(root, info[i][0]), info[i][1], tuple(rles[i])) for i in sorted(rles)]


def eval_samples(images: Sequence[AnnotatedImage], min_area_frac: float) -> list[Sample]:
    """Held-out Samples keeping the objects of at least ``min_area_frac`` of the frame (images with none left
    out); SamkitError when no object is left."""
    out = []
    for image in images:
        sample = image.sample()
        keep = eligible_objects(sample, min_area_frac)
        if keep.size:
            out.append(dataclasses.replace(sample, masks=sample.masks[keep]))
    if not out:
        raise SamkitError(f"retrain: no held-out object covers {min_area_frac:.0%} of the frame: annotate more "
                          "images (or larger objects)")
    return out


def evaluate_held_out(model: Sam, samples: Sequence[Sample], max_clicks: int,
                      tick: Callable[[], None] = lambda: None) -> dict[str, float]:
    """NoC@90 and mIoU@1 (interactive protocol) of ``model`` on ``samples``; ``tick`` before each image."""
    def feed() -> Iterator[Sample]:
        for sample in samples:
            tick()
            yield sample

    report = evaluate(Predictor(model), feed(), max_clicks=max_clicks, iou_thresholds=(NOC_THRESHOLD,))
    ious = np.array([o["ious"] for o in report["objects"]], dtype=np.float64).reshape(-1, max_clicks)
    return {"noc90": float(report["noc"]["90"]), "miou1": float(report["miou_at_k"][0]),
            "objects": report["num_objects"], "images": report["num_images"],
            "noc90_per_object": [int(n) for n in noc(ious, NOC_THRESHOLD)]}


def noc_change(after: dict[str, Any], before: dict[str, Any]) -> tuple[float, float]:
    """NoC@90 after - before (the mean of the per-object changes) and its standard error (0 for one object)."""
    diff = np.asarray(after["noc90_per_object"], dtype=np.float64) - np.asarray(before["noc90_per_object"])
    if diff.size == 0:
        raise SamkitError("retrain: no held-out object was evaluated")
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), se


def is_better(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """:data:`RULE`; ``after`` and ``before`` as :func:`evaluate_held_out` returns them (same objects)."""
    change, se = noc_change(after, before)
    if abs(change) > se:
        return change < 0
    return after["miou1"] > before["miou1"]


class _ProjectTrainer(Trainer):
    """The trainer, calling ``on_step(step)`` after each step (progress; it may raise to cancel)."""

    def __init__(self, cfg: TrainConfig, samples: Sequence[Sample], on_step: Callable[[int], None]) -> None:
        super().__init__(cfg, samples)
        self.on_step = on_step

    def record_step(self, record: dict[str, Any], log: Any) -> None:
        super().record_step(record, log)
        self.on_step(self.step)


def train_config(parent: Sam, init_checkpoint: str, settings: RetrainSettings, out_dir: Path) -> TrainConfig:
    """The trainer's config: :data:`RECIPE` with ``settings``, starting from ``init_checkpoint``."""
    cfg = TrainConfig(out_dir=str(out_dir), model=parent.arch, init_checkpoint=init_checkpoint, mode=settings.mode,
                       img_size=parent.img_size, batch_size=settings.batch_size, steps=settings.steps,
                       lr=settings.lr, warmup_steps=min(20, settings.steps // 10), seed=settings.seed,
                       save_every=settings.steps, keep_checkpoints=1, progress=False, **RECIPE)
    try:
        return cfg.validate()
    except ValueError as exc:
        raise SamkitError(f"retrain: {exc}") from None


def retrain_project(sessions: sessionmaker[Session], root: Path, project_dir: Path, project_id: int,
                    settings: RetrainSettings, progress: Progress = lambda done, total: None) -> RetrainResult:
    """Run the loop of the module docstring on project ``project_id`` (images under ``root``, model files under
    ``project_dir``); ``progress(done, total)`` after each held-out image and training step (it may raise to
    stop: nothing is registered then). Returns what was registered."""
    with sessions() as s:
        parent = current_version(s, project_id)
        images = annotated_images(s, root, project_id)
    if not images:
        raise SamkitError("retrain: the project has no accepted annotations to train on")
    train, held = split_images(images, settings.held_out)
    model = load_version(project_dir, parent)
    if not isinstance(model, Sam):
        raise SamkitError(f"retrain: model version {parent.id} ({parent.name}) is a text model; retrain fine-tunes "
                          "SAM-family models")
    samples = eval_samples(held, RECIPE["min_area_frac"])
    total = 2 * len(samples) + settings.steps
    done = 0

    def tick() -> None:
        nonlocal done
        progress(done, total)
        done += 1

    before = evaluate_held_out(model, samples, settings.max_clicks, tick)
    init = PRETRAINED if parent.file is None else str(confined(project_dir, parent.file))
    models = project_dir / MODELS_DIR
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models, prefix=".retrain-") as tmp:
        cfg = train_config(model, init, settings, Path(tmp) / "run")
        trainer = _ProjectTrainer(cfg, ImageSamples(train), lambda step: progress(len(samples) + step, total))
        trainer.run()
        staged = Path(tmp) / "model.fp16.safetensors"
        extra = {k: f"{v:.4f}" for k, v in getattr(model, "recommended_amg", {}).items()}
        write_model_file(trainer.model, staged, ModelFileInfo(arch=cfg.model, img_size=cfg.img_size, extra=extra))
        done = len(samples) + settings.steps
        after = evaluate_held_out(_load_sam(staged), samples, settings.max_clicks, tick)
        progress(total, total)  # the last chance to cancel: nothing is registered yet
        metrics = {"before": before, "after": after, "rule": RULE, "train_images": len(train),
                   "held_out_images": len(held), "held_out_image_ids": [i.image_id for i in held],
                   "settings": dataclasses.asdict(settings)}
        return register(sessions, project_dir, project_id, parent, staged, metrics, is_better(after, before))


def _load_sam(path: Path) -> Sam:
    """The model of a file this module wrote (a SAM), as the server will load it."""
    model = load_model(path)
    assert isinstance(model, Sam)
    return model


def register(sessions: sessionmaker[Session], project_dir: Path, project_id: int, parent: ModelVersion,
             staged: Path, metrics: dict[str, Any], better: bool) -> RetrainResult:
    """Move ``staged`` to ``models/v<id>.fp16.safetensors`` and add its version row in one transaction; switch
    the project when ``better`` and it still predicts with ``parent``. A failed commit removes the file."""
    final: Path | None = None
    try:
        with sessions.begin() as s:
            project = s.get_one(Project, project_id)
            switched = better and project.model_version_id == parent.id
            version = ModelVersion(name=parent.name, parent_id=parent.id, metrics={**metrics, "switched": switched})
            s.add(version)
            s.flush()
            version.file = version_file(version.id)
            if switched:
                project.model_version_id = version.id
            final = project_dir / version.file
            os.replace(staged, final)
            result = RetrainResult(version.id, version.file, metrics["before"], metrics["after"], switched, parent.id)
    except BaseException:
        if final is not None:
            final.unlink(missing_ok=True)
        raise
    return result
