"""Training the SAM-REF refiner (:mod:`samkit.refine`) behind a frozen SAM: simulated click sessions as in
the evaluation protocol, boundary-weighted focal + dice losses, resumable checkpoints, a JSONL log and an
fp16 refiner file at the end.

Each step draws ``batch_size`` objects in a square ``item_size`` frame (the refiner's "full resolution";
:class:`~samkit.train.data.StepBatches`, augmented). SAM (frozen) sees the frame resized to its input size
and answers ``clicks`` clicks: the first uniform inside the object, each next one from the refined mask's
error (the RITM rule of :func:`samkit.eval.clicks.next_click` with probability ``ritm_click_prob``, else
uniform in the error, :func:`samkit.train.prompts.correction_click`); SAM gets its own previous low-res
logits back, as at inference. Per click the global stage refines SAM's logits (loss at ``item_size``), and
the local stage refines a crop around the largest connected region of remaining error (loss in the crop).

    samkit train-refiner configs/samkit_tiny_ref.json

Output folder: ``config.json``, ``train_log.jsonl``, ``checkpoints/step_NNNNNNN.pt``,
``refiner.fp16.safetensors`` (:func:`samkit.load_refiner` reads it).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from samkit.data.sample import Sample
from samkit.eval.clicks import next_click
from samkit.models.load import load_model
from samkit.predict.transforms import postprocess_logits
from samkit.refine.click_maps import scale_points
from samkit.refine.config import RUN_TIME_FIELDS, RefinerConfig
from samkit.refine.crops import crop_box, crop_resize, paste
from samkit.refine.file import load_refiner, save_refiner
from samkit.refine.global_refiner import blend_up
from samkit.refine.layers import blend
from samkit.refine.refiner import SamRefiner, local_inputs, prompt_maps
from samkit.train.checkpoints import CheckpointedRun
from samkit.train.config import (
    AugmentConfig,
    DatasetSpec,
    _reject_unknown,
    check_config,
    data_settings,
    read_config_file,
)
from samkit.train.data import SampleMix, StepBatches, as_sequences, build_dataset
from samkit.train.device import resolve_device
from samkit.train.losses import mask_iou
from samkit.train.optim import OptimConfig, build_optimizer, build_schedule, clip_gradients
from samkit.train.prompts import Prompts, correction_click, first_prompts
from samkit.train.refine_loss import refine_loss

REFINER_NAME = "refiner.fp16.safetensors"


@dataclass
class RefinerTrainConfig(OptimConfig):
    """One refiner training run; see ``configs/samkit_tiny_ref.json``. The optimiser fields are
    :class:`~samkit.train.optim.OptimConfig`'s (with the defaults below)."""

    out_dir: str = "runs/refiner"
    model: str = "samkit_tiny"  # the frozen SAM (registry name or model file)
    refiner: dict[str, Any] = field(default_factory=dict)  # RefinerConfig settings (the sam_* ones come from model)
    init_refiner: str | None = None  # start from this refiner's weights (bundled name or file; same settings)
    datasets: list[DatasetSpec] = field(default_factory=list)
    item_size: int = 512  # square training frame, the refiner's full resolution
    batch_size: int = 4
    steps: int = 2000
    clicks: int = 5  # clicks per simulated session that are trained on ...
    warm_clicks: int = 0  # ... after 0..warm_clicks clicks (drawn per batch) simulated without gradient
    ritm_click_prob: float = 0.5  # next click by the evaluation's rule, else uniform in the error
    focal_alpha: float = 0.5
    boundary_weight: float = 4.0  # extra focal weight in the object's boundary band
    boundary_width: int = 3  # band half-width, item_size pixels
    error_weight: float = 1.0  # error-map loss weight (relative to the mask's focal loss)
    local_weight: float = 1.0  # local stage loss weight (0: the local stage is not run, nor trained)
    lr: float = 1e-3
    weight_decay: float = 0.01
    min_lr_ratio: float = 0.05
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    min_area_frac: float = 0.01
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0
    save_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 1
    stop_at: int | None = None
    resume: bool = False
    progress: bool = True

    @property
    def img_size(self) -> int:
        """The item frame (what :class:`~samkit.train.data.StepBatches` calls ``img_size``)."""
        return self.item_size

    def validate(self) -> RefinerTrainConfig:
        check_config([
            *self.optim_checks(),
            (self.item_size >= 64, f"item_size must be at least 64, got {self.item_size}"),
            (self.batch_size >= 1 and self.steps >= 1 and self.clicks >= 1, "batch_size, steps, clicks must be >= 1"),
            (self.warm_clicks >= 0, f"warm_clicks must be >= 0, got {self.warm_clicks}"),
            (0.0 <= self.ritm_click_prob <= 1.0, "ritm_click_prob must be in [0, 1]"),
            (0.0 < self.focal_alpha < 1.0, "focal_alpha must be in (0, 1)"),
            (self.save_every >= 1 and self.log_every >= 1 and self.keep_checkpoints >= 1,
             "save_every, log_every, keep_checkpoints must be >= 1"),
        ], "refiner training config")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefinerTrainConfig:
        _reject_unknown(cls, data, "refiner config")
        return cls(**cls.coerce(data_settings(data))).validate()


def load_refiner_config(source: RefinerTrainConfig | dict | str | os.PathLike) -> RefinerTrainConfig:
    """A RefinerTrainConfig from an object, a dict or a JSON/YAML file."""
    if isinstance(source, RefinerTrainConfig):
        return source.validate()
    return RefinerTrainConfig.from_dict(source if isinstance(source, dict) else read_config_file(source))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B,C,S,S) -> (B,C,size,size), bilinear, antialiased when shrinking."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


class RefinerTrainer(CheckpointedRun):
    """One refiner training run; ``samples`` (Samples, or several sequences) replaces ``cfg.datasets``."""

    resumable_changes = frozenset({"out_dir", "resume", "stop_at", "progress", "num_workers", "device", "save_every",
                                   "keep_checkpoints", "log_every"})

    def __init__(self, cfg: RefinerTrainConfig,
                 samples: list[Sample] | list[list[Sample]] | None = None) -> None:
        self.cfg = cfg.validate()
        self.use_out_dir(cfg.out_dir)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.sam = load_model(cfg.model, device=self.device).eval().requires_grad_(False)
        settings = {**cfg.refiner, "sam_arch": self.sam.arch, "embed_dim": self.sam.prompt_encoder.embed_dim,
                    "sam_img_size": self.sam.img_size}
        self.refiner = SamRefiner(RefinerConfig.from_dict(settings)).to(self.device)
        if cfg.init_refiner is not None:
            start = load_refiner(cfg.init_refiner)
            if not start.cfg.same_weights(self.refiner.cfg):  # a new work frame or crop size is allowed
                raise ValueError(f"init_refiner {cfg.init_refiner}: its settings {start.cfg} differ from this run's "
                                 f"{self.refiner.cfg} beyond the run-time ones {RUN_TIME_FIELDS}")
            self.refiner.load_state_dict(start.state_dict())
        self.params = list(self.refiner.parameters())
        self.optimizer = build_optimizer(self.params, cfg)
        self.scheduler = build_schedule(self.optimizer, cfg, cfg.steps)
        self.step = 0
        if samples is not None:
            self.samples = SampleMix(as_sequences(samples))
        elif cfg.datasets:
            self.samples = SampleMix([build_dataset(d) for d in cfg.datasets], [d.repeat for d in cfg.datasets])
        else:
            raise ValueError("the refiner config lists no datasets and no samples were given")

    @property
    def end_step(self) -> int:
        return self.cfg.steps if self.cfg.stop_at is None else min(self.cfg.stop_at, self.cfg.steps)

    def run(self) -> Path:
        """Train (or continue) up to ``end_step``; returns the exported refiner file."""
        self.prepare_out_dir()
        loader = torch.utils.data.DataLoader(StepBatches(self.samples, self.cfg), batch_size=None,
                                             sampler=range(self.step, self.end_step), num_workers=self.cfg.num_workers)
        self.refiner.train()
        self.train_loop(loader, "refiner", self.end_step)
        return self.export()

    def export(self) -> Path:
        """Write ``refiner.fp16.safetensors`` (recipe and step in its metadata)."""
        self.refiner.eval()
        return save_refiner(self.refiner, self.out_dir / REFINER_NAME,
                            {"train_config": json.dumps(self.cfg.to_dict()), "train_steps": str(self.step)})

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict[str, float | None]:
        """One optimiser step on a batch of simulated sessions; returns the mean losses."""
        self.optimizer.zero_grad(set_to_none=True)
        rng = np.random.default_rng([self.cfg.seed, self.step, 1])
        terms = self.session_losses(batch["images"].to(self.device), batch["targets"].to(self.device),
                                    batch["valid"].to(self.device), rng)
        terms["loss"].backward()
        grad_norm = clip_gradients(self.params, self.cfg)
        self.optimizer.step()
        self.scheduler.step()
        return {**{k: float(v.detach()) for k, v in terms.items()}, "grad_norm": grad_norm}

    def session_losses(self, images: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                       rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Losses of one simulated session per object, averaged over the trained clicks (the last ``clicks``
        of a session that starts with 0..``warm_clicks`` clicks simulated without gradient): images (B,3,S,S)
        normalised, targets / valid (B,S,S) bool in the item frame. ``loss`` is differentiable; ``sam_iou``
        / ``refined_iou`` are the last click's mean IoUs (no gradient)."""
        cfg, rc = self.cfg, self.refiner.cfg
        size = images.shape[-1]
        with torch.no_grad():
            embedding = self.sam.encode_image(_resize(images, rc.sam_img_size))
        features = self.refiner.global_refiner.image_branch(_resize(images, rc.work_size), embedding)
        targets_np, valid_np = targets.cpu().numpy(), valid.cpu().numpy()
        prompts = first_prompts(targets_np, rng, box_prob=0.0, valid=valid_np)
        mask_input, rounds = None, []
        preds: np.ndarray | None = None
        warm = int(rng.integers(0, cfg.warm_clicks + 1))
        for k in range(warm + cfg.clicks):
            if k:
                assert preds is not None  # set by the previous click
                prompts = prompts.add_clicks(self._next_clicks(preds, targets_np, valid_np, prompts, rng))
            points = torch.from_numpy(prompts.points).to(self.device)
            labels = torch.from_numpy(prompts.labels).to(self.device)
            sam_logits, mask_input = self._sam(embedding, points * (rc.sam_img_size / size), labels, mask_input)
            with torch.set_grad_enabled(k >= warm and torch.is_grad_enabled()):
                work_logits = self._work_logits(sam_logits, mask_input)
                maps = prompt_maps(scale_points(points, (size, size), (rc.work_size,) * 2), labels, work_logits,
                                   rc.click_radius)
                own, err = self.refiner.global_refiner.fusion(features, maps)
                if rc.blend_frame == "work":  # as SamRefiner.refine: blended in the work frame, upsampled once
                    refined = _resize(blend(work_logits, own, err), size)
                else:
                    refined = blend_up(sam_logits, own, err)
                if cfg.local_weight > 0:
                    local, final = self._local(images, refined.detach(), targets, valid, points, labels)
                else:  # a global-only refiner (selector "never"): the next clicks come from the global answer
                    local, final = refined.new_zeros(()), refined.detach()[:, 0]
                preds = (final > 0).cpu().numpy()
                if k < warm:
                    continue
                err_up = F.interpolate(err, size=(size, size), mode="bilinear", align_corners=False)
                terms = refine_loss(refined, err_up, sam_logits, targets, valid, cfg.focal_alpha,
                                    cfg.boundary_weight, cfg.boundary_width, cfg.error_weight)
            terms["local"] = local
            terms["total"] = terms["total"] + cfg.local_weight * local
            rounds.append({**terms, "sam_iou": mask_iou(sam_logits, targets, valid).mean(),
                           "refined_iou": mask_iou(final[:, None], targets, valid).mean()})
        mean = {k: torch.stack([r[k] for r in rounds]).mean() for k in ("total", "focal", "dice", "error", "local")}
        return {"loss": mean.pop("total"), **mean, "sam_iou": rounds[-1]["sam_iou"],
                "refined_iou": rounds[-1]["refined_iou"]}

    @torch.no_grad()
    def _sam(self, embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
             mask_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen SAM's answer in the item frame (B,1,S,S) and its low-res logits to feed back (B,1,s,s);
        the first click (no mask input) takes the best of 3 masks by predicted IoU, as the evaluation."""
        low, iou = self.sam.decode(embedding, points=(points, labels), mask_input=mask_input,
                                   multimask_output=mask_input is None)
        best = iou.argmax(dim=1)
        low = low[torch.arange(low.shape[0]), best][:, None].float()
        return F.interpolate(low, size=self.cfg.item_size, mode="bilinear", align_corners=False), low

    def _work_logits(self, sam_logits: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """SAM's answer (B,1,w,w) in the work frame, as :meth:`SamRefiner.refine` makes it: from the item-frame
        logits (``blend_frame`` "image"), or through SAM's upsampling chain from its low-res logits ("work")."""
        rc = self.refiner.cfg
        if rc.blend_frame == "work":
            return postprocess_logits(low, (rc.work_size,) * 2, (rc.sam_img_size,) * 2, rc.sam_img_size)
        return F.interpolate(sam_logits, size=(rc.work_size,) * 2, mode="bilinear", align_corners=False)

    def _local(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
               points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The local stage on each object's largest remaining error region: its loss (scalar) and the
        logits after pasting (B,S,S), no gradient."""
        rc, cfg = self.refiner.cfg, self.cfg
        size = images.shape[-1]
        losses, final = [], logits[:, 0].clone()
        for b in range(images.shape[0]):
            error = ((logits[b, 0] > 0) != targets[b]) & valid[b]
            last = (float(points[b, -1, 0]), float(points[b, -1, 1]))
            box = crop_box(error.cpu().numpy(), (size, size), last, rc.min_crop, rc.crop_margin)
            if box is None:
                continue
            keep = labels[b] >= 0
            image, maps, base = local_inputs(images[b:b + 1], logits[b, 0], box, points[b:b + 1, keep],
                                       labels[b:b + 1, keep], rc)
            ref, err = self.refiner.local_refiner(image, maps)
            t = crop_resize(targets[b:b + 1, None].float(), box, rc.crop_size)[:, 0] >= 0.5
            v = crop_resize(valid[b:b + 1, None].float(), box, rc.crop_size)[:, 0] >= 0.5
            answer = blend(base, ref, err)
            terms = refine_loss(answer, err, base, t, v, cfg.focal_alpha, cfg.boundary_weight,
                                cfg.boundary_width, cfg.error_weight)
            losses.append(terms["total"])
            final[b] = paste(final[b], (answer - base)[0, 0].detach(), box, rc.feather)
        loss = torch.stack(losses).mean() if losses else logits.new_zeros(())
        return loss, final

    def _next_clicks(self, preds: np.ndarray, targets: np.ndarray, valid: np.ndarray, prompts: Prompts,
                     rng: np.random.Generator) -> list[tuple[int, int, int] | None]:
        """One click per object from the current refined mask's error: the RITM rule or uniform."""
        clicks: list[tuple[int, int, int] | None] = []
        assert prompts.points is not None and prompts.labels is not None  # sessions are clicks only (no boxes)
        for b in range(preds.shape[0]):
            if rng.random() < self.cfg.ritm_click_prob:
                done = [(int(y), int(x))
                        for (x, y), lab in zip(prompts.points[b], prompts.labels[b], strict=False) if lab >= 0]
                c = next_click(preds[b], targets[b], ~valid[b], clicked=done)
                clicks.append(None if c is None else (c.x, c.y, int(c.is_positive)))
            else:
                clicks.append(correction_click(preds[b], targets[b], valid[b], rng))
        return clicks

    # -- checkpoints (CheckpointedRun) --------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        return {"refiner": self.refiner.state_dict()}

    def restore_state(self, state: dict) -> None:
        self.refiner.load_state_dict(state["refiner"])


def train_refiner(config: RefinerTrainConfig | dict | str | os.PathLike,
                  samples: list[Sample] | list[list[Sample]] | None = None) -> Path:
    """Run (or with ``resume`` continue) a refiner training; returns the refiner file."""
    return RefinerTrainer(load_refiner_config(config), samples).run()
