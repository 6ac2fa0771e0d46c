"""Resumable runs: the checkpoint folder of a training loop, shared by the trainers.

A run keeps ``out_dir/config.json``, ``out_dir/<log>.jsonl`` (one JSON record per step, with ``step``) and
``out_dir/checkpoints/step_NNNNNNN.pt`` (the newest ``keep_checkpoints``). :class:`CheckpointedRun` is
mixed into a trainer that sets ``cfg`` (with ``resume``, ``keep_checkpoints``, ``to_dict()``), its folders
(:meth:`~CheckpointedRun.use_out_dir`), ``step``, ``end_step``, ``optimizer`` and ``scheduler``, and says what else a
checkpoint holds
(:meth:`~CheckpointedRun.checkpoint_state` / :meth:`~CheckpointedRun.restore_state`).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from samkit.io_utils import atomic_write_text
from samkit.train.config import save_config
from samkit.train.device import peak_memory_mb
from samkit.train.model import atomic_save

LOG_NAME = "train_log.jsonl"
CKPT_DIR = "checkpoints"


def plain(value: object) -> object:
    """JSON-comparable form of a config value (tuples become lists, dataclasses dicts)."""
    return json.loads(json.dumps(value, default=lambda o: o.__dict__))


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint being resumed from)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


class CheckpointedRun:
    """Checkpoint handling of a training loop (see the module docstring for what the class must set)."""

    resumable_changes: frozenset[str] = frozenset()  # config keys that may change when resuming
    # Set by the trainer this class is mixed into:
    cfg: Any  # its config (resume, log_every, save_every, keep_checkpoints, to_dict())
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    step: int

    def train_step(self, batch: dict) -> dict[str, Any]:
        """One optimiser step on ``batch``; returns the step's stats (with ``loss``) for the log."""
        raise NotImplementedError

    def step_timing(self, seconds: float) -> dict[str, float]:
        """The timing field of a step's log record; ``seconds``: data + step, not logging or checkpoints."""
        return {"seconds": seconds}

    def train_loop(self, loader: Iterable[dict], desc: str, total: int) -> dict[str, Any] | None:
        """:meth:`train_step` on each batch of ``loader`` with a progress bar (``total`` steps); after each, a
        log record (step, the step's stats, lr, :meth:`step_timing`, peak memory) through :meth:`record_step`.
        Returns the last record (None when no step ran)."""
        last = None
        bar = tqdm(total=total, initial=self.step, unit="step", desc=desc, disable=not self.cfg.progress)
        with bar, open(self.log_path, "a") as log:
            tick = time.perf_counter()
            for batch in loader:
                lr = self.optimizer.param_groups[0]["lr"]
                stats = self.train_step(batch)
                self.step += 1
                last = {"step": self.step, **stats, "lr": lr, **self.step_timing(time.perf_counter() - tick),
                        "peak_mem_mb": peak_memory_mb(self.device)}
                self.record_step(last, log)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                tick = time.perf_counter()
        return last

    def use_out_dir(self, out_dir: str | os.PathLike) -> None:
        """Set ``out_dir``, its ``checkpoints/`` folder and its ``train_log.jsonl``."""
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / CKPT_DIR
        self.log_path = self.out_dir / LOG_NAME

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint holds besides optimiser, scheduler, step and config (the weights, ...)."""
        raise NotImplementedError

    @property
    def end_step(self) -> int:
        """The last step of the run (the trainer's)."""
        raise NotImplementedError

    def restore_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` saved."""
        raise NotImplementedError

    def prepare_out_dir(self) -> None:
        """Resume from the last checkpoint when asked; refuse to overwrite a run otherwise."""
        existing = self.checkpoints()
        if existing and not self.cfg.resume:
            raise FileExistsError(f"{self.out_dir} already holds checkpoints: set resume=true to continue that run "
                                  "or choose another out_dir")
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if existing:
            self.load_checkpoint(existing[-1])
        else:
            self.log_path.unlink(missing_ok=True)
        truncate_log(self.log_path, self.step)
        save_config(self.cfg, self.out_dir / "config.json")

    def record_step(self, record: dict[str, Any], log: TextIO) -> None:
        """After step ``self.step``: write ``record`` to the open log every ``log_every`` steps and checkpoint
        every ``save_every`` steps, both also at the run's last step (``end_step``)."""
        last = self.step == self.end_step
        if self.step % self.cfg.log_every == 0 or last:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if self.step % self.cfg.save_every == 0 or last:
            self.save_checkpoint()

    def checkpoints(self) -> list[Path]:
        """This run's checkpoint files, oldest first."""
        return sorted(self.ckpt_dir.glob("step_*.pt")) if self.ckpt_dir.is_dir() else []

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNNN.pt`` and drop the oldest beyond ``keep_checkpoints``."""
        path = self.ckpt_dir / f"step_{self.step:07d}.pt"
        atomic_save({**self.checkpoint_state(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "step": self.step, "config": self.cfg.to_dict()}, path)
        for old in self.checkpoints()[:-self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore the run from ``path``; warns about settings changed since it was written."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        changed = sorted(k for k, v in state.get("config", {}).items()
                         if k not in self.resumable_changes and plain(getattr(self.cfg, k, None)) != plain(v))
        if changed:
            warnings.warn(f"resuming {path} with changed settings: {', '.join(changed)}", stacklevel=2)
        self.restore_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
