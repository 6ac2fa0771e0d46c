"""The training loop: simulated interactive sessions, AdamW with warm-up + decay, bf16 autocast,
resumable checkpoints, a JSONL log, a loss-curve PNG and a plain state-dict export.

Output folder layout::

    out_dir/config.json              the config this run used
    out_dir/train_log.jsonl          one line per logged step
    out_dir/checkpoints/step_NNNNNNN.pt  model + optimiser + scheduler + step + RNG states
    out_dir/model.pt                 final weights, registry layout (samkit.load_model(path))
    out_dir/model.fp16.safetensors   with export_fp16
    out_dir/loss_curve.png
"""
from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samkit.data.sample import Sample
from samkit.models.model_file import ModelFileInfo, write_model_file
from samkit.models.sam import Sam
from samkit.train.checkpoints import CheckpointedRun
from samkit.train.config import TrainConfig
from samkit.train.data import SampleMix, StepBatches, as_sequences, build_dataset, low_res_targets
from samkit.train.device import autocast, bf16_supported, resolve_device
from samkit.train.losses import LossTerms, sam_loss
from samkit.train.model import build_model, export_state_dict, set_train_mode, trainable_parameters
from samkit.train.optim import build_optimizer, build_schedule, clip_gradients
from samkit.train.prompts import Prompts, correction_clicks, first_prompts, round_schedule
from samkit.train.warmup import geometry_warmup

WARMUP_LOG_NAME = "warmup_log.jsonl"
# Config fields that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = {"out_dir", "resume", "stop_at", "progress", "num_workers", "device", "save_every",
                      "keep_checkpoints", "log_every", "export_fp16"}


@dataclass
class TrainResult:
    """What a run produced."""

    out_dir: Path
    model_path: Path
    log_path: Path
    steps: int
    final_loss: float | None


# ----------------------------------------------------------------------------------- interaction


def upsample_logits(low: torch.Tensor, size: int) -> torch.Tensor:
    """(B,M,s,s) low-res logits -> (B,M,size,size) float32, bilinear (as SAM's post-processing)."""
    return F.interpolate(low.float(), size=(size, size), mode="bilinear", align_corners=False)


def pick_masks(low: torch.Tensor, iou_pred: torch.Tensor) -> torch.Tensor:
    """Index (B,) of the mask to continue with: the highest predicted IoU (SAM's rule)."""
    if low.shape[1] == 1:
        return torch.zeros(low.shape[0], dtype=torch.long, device=low.device)
    return iou_pred.detach().argmax(dim=1)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B,M,...) indexed by (B,) -> (B,...)."""
    return x[torch.arange(x.shape[0], device=x.device), idx]


class Trainer(CheckpointedRun):
    """One training run of ``cfg``; ``samples`` (one or several sequences of Samples) replaces
    ``cfg.datasets`` when given."""

    resumable_changes = frozenset(_RESUMABLE_CHANGES)

    def __init__(self, cfg: TrainConfig,
                 samples: Sequence[Sample] | Sequence[Sequence[Sample]] | None = None) -> None:
        self.cfg = cfg.validate()
        self.use_out_dir(cfg.out_dir)
        self.device = resolve_device(cfg.device)
        self.use_bf16 = cfg.bf16 and bf16_supported(self.device)
        torch.manual_seed(cfg.seed)
        self.model: Sam = build_model(cfg.model, cfg.img_size, cfg.init_checkpoint).to(self.device)
        self.params = trainable_parameters(self.model, cfg.mode)
        self.optimizer = build_optimizer(self.params, cfg)
        self.scheduler = build_schedule(self.optimizer, cfg, cfg.steps)
        self.step = 0
        self.samples = self._samples(samples)

    def _samples(self, samples: Sequence[Sample] | Sequence[Sequence[Sample]] | None) -> SampleMix:
        if samples is not None:
            return SampleMix(as_sequences(samples))
        if not self.cfg.datasets:
            raise ValueError("the config lists no datasets and no samples were given")
        return SampleMix([build_dataset(d) for d in self.cfg.datasets], [d.repeat for d in self.cfg.datasets])

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train (or continue) up to ``cfg.steps``; export and plot at the end."""
        self.prepare_out_dir()
        loader = torch.utils.data.DataLoader(
            StepBatches(self.samples, self.cfg), batch_size=None, sampler=range(self.step, self.end_step),
            num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda")
        set_train_mode(self.model, self.cfg.mode)
        if self.step == 0 and not self.checkpoints():
            self.decoder_warmup()
        last = self.train_loop(loader, "train", self.cfg.steps)
        return self._finish(last)

    def step_timing(self, seconds: float) -> dict[str, float]:
        """Images per second of a step (data + step, not logging or checkpoints)."""
        return {"images_per_s": self.cfg.batch_size / max(seconds, 1e-9)}

    @property
    def end_step(self) -> int:
        """Where this run stops: ``steps``, or ``stop_at`` when set (the schedule still spans ``steps``)."""
        return self.cfg.steps if self.cfg.stop_at is None else min(self.cfg.stop_at, self.cfg.steps)

    def decoder_warmup(self) -> float | None:
        """The geometry warm-up of :mod:`samkit.train.warmup` (``decoder_warmup_steps``, logged to
        ``warmup_log.jsonl``), run once before step 1 of a fresh run."""
        cfg = self.cfg
        if cfg.decoder_warmup_steps <= 0:
            return None
        with open(self.out_dir / WARMUP_LOG_NAME, "w") as log:
            def write(record: dict) -> None:
                log.write(json.dumps(record) + "\n")
                log.flush()

            return geometry_warmup(self.model, cfg.decoder_warmup_steps, cfg.img_size, cfg.batch_size,
                                   cfg.decoder_warmup_lr, cfg.seed, self.device, write)

    def train_step(self, batch: dict) -> dict[str, float | None]:
        """One optimiser step on a batch: encode, simulate the interactive rounds, clip, step."""
        images = batch["images"].to(self.device, non_blocking=True)
        targets = batch["targets"].to(self.device, non_blocking=True)
        valid = batch["valid"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        scratch = self.cfg.mode == "scratch"
        with autocast(self.device, self.use_bf16), torch.set_grad_enabled(scratch):
            embeddings = self.model.encode_image(images)
        # Rounds backpropagate one at a time into a detached copy of the embeddings (bounded memory);
        # in scratch mode the accumulated gradient then goes through the encoder once.
        features = embeddings.detach().requires_grad_(scratch)
        rng = np.random.default_rng([self.cfg.seed, self.step, 1])
        stats = self.simulate(features, targets, valid, rng)
        if scratch:
            embeddings.backward(features.grad)
        grad_norm = clip_gradients(self.params, self.cfg)
        self.optimizer.step()
        self.scheduler.step()
        return {**stats, "grad_norm": grad_norm}

    def simulate(self, features: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                 rng: np.random.Generator) -> dict[str, float]:
        """Round 0 plus the correction rounds; backpropagates the rounds' losses as one weighted mean
        (round 0 weighs ``first_round_weight``, every correction round 1).

        features (B,256,g,g); targets, valid (B,S,S) bool. Returns the losses averaged over rounds
        without weights (``loss``, ``focal``, ``dice``, ``iou_loss``), and ``loss_first`` / ``loss_last``.
        """
        cfg = self.cfg
        size = cfg.img_size
        targets_np, valid_np = targets.cpu().numpy(), valid.cpu().numpy()
        loss_targets, loss_valid = (targets, valid) if cfg.loss_size == "full" else low_res_targets(targets, valid)
        schedule = round_schedule(cfg.click_rounds, cfg.mask_only_rounds, rng)
        prompts = first_prompts(targets_np, rng, cfg.box_prob, valid_np, protocol_prob=cfg.protocol_click_prob)
        mask_input: torch.Tensor | None = None
        preds: np.ndarray | None = None
        per_round: list[dict[str, float]] = []
        total_weight = cfg.first_round_weight + len(schedule)
        for new_click in [False, *schedule]:
            if new_click:
                assert preds is not None  # round 0 never adds a click
                prompts = prompts.add_clicks(correction_clicks(preds, targets_np, valid_np, rng,
                                                              cfg.protocol_click_prob))
            terms, low, iou_pred, logits = self._round(features, prompts, mask_input, loss_targets, loss_valid)
            weight = cfg.first_round_weight if preds is None else 1.0
            (terms.total * weight / total_weight).backward()
            per_round.append(terms.as_floats())
            best = pick_masks(low, iou_pred)
            mask_input = _gather(low.detach().float(), best)[:, None]
            full = logits.detach() if logits.shape[-1] == size else upsample_logits(low.detach(), size)
            preds = (_gather(full, best) > 0).cpu().numpy()
        mean = {k: float(np.mean([r[k] for r in per_round])) for k in per_round[0]}
        return {"loss": mean["total"], "focal": mean["focal"], "dice": mean["dice"], "iou_loss": mean["iou"],
                "loss_first": per_round[0]["total"], "loss_last": per_round[-1]["total"]}

    def _round(self, features: torch.Tensor, prompts: Prompts, mask_input: torch.Tensor | None,
               targets: torch.Tensor, valid: torch.Tensor
               ) -> tuple[LossTerms, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode one prompt set; loss at the targets' resolution.

        Returns the loss terms, low-res logits (B,M,S/4,S/4), IoU predictions (B,M) and the logits
        the loss saw (B,M,t,t) float32, t the targets' size.
        """
        multimask = prompts.ambiguous and mask_input is None
        with autocast(self.device, self.use_bf16):
            low, iou_pred = self.model.decode(features, **prompts.to_torch(self.device), mask_input=mask_input,
                                              multimask_output=multimask)
        logits = upsample_logits(low, targets.shape[-1]) if targets.shape[-1] != low.shape[-1] else low.float()
        loss = sam_loss(logits, iou_pred, targets, valid, min_over_outputs=multimask, focal_alpha=self.cfg.focal_alpha,
                         iou_weight=self.cfg.iou_loss_weight, choice_weight=self.cfg.choice_loss_weight)
        return loss, low, iou_pred, logits

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint_state(self) -> dict:
        """Model weights and RNG states (with the optimiser, scheduler, step and config: see CheckpointedRun)."""
        return {"model": self.model.state_dict(), "rng": _rng_state()}

    def restore_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        _set_rng_state(state["rng"])

    # -- end of run ------------------------------------------------------------------------------

    def _finish(self, last: dict | None) -> TrainResult:
        model_path = export_state_dict(self.model, self.out_dir / "model.pt")
        if self.cfg.export_fp16:
            write_model_file(self.model, self.out_dir / "model.fp16.safetensors",
                             ModelFileInfo(arch=self.cfg.model, img_size=self.cfg.img_size))
        plot_losses(self.log_path, self.out_dir / "loss_curve.png")
        if last is None and self.log_path.is_file():  # resumed a finished run: nothing new was trained
            last = next(reversed(read_log(self.log_path)), None)
        return TrainResult(self.out_dir, model_path, self.log_path, self.step,
                           None if last is None else last["loss"])


def _rng_state() -> dict:
    """torch (CPU and CUDA), numpy-global and Python RNG states, as tensors and plain values.

    Batches and prompts do not use them (they are seeded by (seed, step)); they matter for any
    randomness inside the model (dropout, drop-path) and for user code.
    """
    np_state = np.random.get_state(legacy=True)  # the default; numpy's stubs type the default as legacy=False
    assert isinstance(np_state, tuple)  # the legacy MT19937 state
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a ``train_log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(log_path: Path, png_path: Path) -> Path | None:
    """Loss curve (total, focal x20, dice, IoU MSE) and learning rate vs step; None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed: no loss-curve PNG", stacklevel=2)
        return None
    records = read_log(log_path) if log_path.is_file() else []
    if not records:
        return None
    steps = [r["step"] for r in records]
    fig = Figure(figsize=(8, 6), tight_layout=True)
    ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key, label in [("loss", "total"), ("focal", "focal"), ("dice", "dice"), ("iou_loss", "IoU MSE")]:
        values = [20 * r[key] if key == "focal" else r[key] for r in records]
        ax.plot(steps, values, label=label + (" (x20)" if key == "focal" else ""), lw=1)
    ax.set_ylabel("loss (mean over rounds)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax_lr.plot(steps, [r["lr"] for r in records], color="k", lw=1)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    fig.savefig(png_path, dpi=100)
    return png_path
