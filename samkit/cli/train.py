"""``samkit train`` (promptable models, SAM's recipe) and ``samkit train-text`` (text prompters)."""
from __future__ import annotations

import argparse
import dataclasses

from samkit.cli.args import positive_int
from samkit.errors import SamkitError
from samkit.train import load_config, train
from samkit.train.text import load_text_config, train_text

TRAIN_DESCRIPTION = ("Train or fine-tune a promptable model from a JSON config (see configs/): SAM's recipe "
                     "(focal + dice 20:1, IoU head, simulated clicks). Resumable; writes a JSONL log, a loss "
                     "curve, checkpoints and the exported model into the config's out_dir.")
TEXT_DESCRIPTION = ("Train a text prompter (BEiT-3 + projector) on a frozen SAM from a JSON config "
                    "(configs/samkit_tiny_text_*.json); prints test cIoU/gIoU at the end.")


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Register ``train`` or ``train-text``."""
    if name == "train-text":
        p = commands.add_parser(name, help=help, description=TEXT_DESCRIPTION)
        p.add_argument("config", metavar="CONFIG", help="text training config (configs/samkit_tiny_text_*.json)")
        p.add_argument("--out-dir", metavar="DIR", help="override the config's out_dir")
        p.add_argument("--steps", type=positive_int, metavar="N", help="override the config's number of steps")
        p.add_argument("--threads", type=positive_int, metavar="N",
                       help="torch CPU threads (e.g. 1 per run for parallel runs)")
        p.set_defaults(func=run_train_text)
        return p
    p = commands.add_parser(name, help=help, description=TRAIN_DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="training config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the config's out_dir")
    p.add_argument("--out-dir", metavar="DIR", help="override the config's out_dir")
    p.add_argument("--steps", type=positive_int, metavar="N", help="override the config's number of steps")
    p.add_argument("--stop-at", type=positive_int, metavar="N",
                   help="stop after step N (checkpoint and export); the schedule still spans all steps")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        overrides = {k: v for k, v in (("out_dir", args.out_dir), ("steps", args.steps), ("stop_at", args.stop_at))
                     if v is not None}
        cfg = dataclasses.replace(cfg, resume=args.resume or cfg.resume, **overrides).validate()
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SamkitError(str(exc)) from None
    result = train(cfg)
    print(f"trained {result.steps} steps, final loss {result.final_loss}; model: {result.model_path}")
    return 0


def run_train_text(args: argparse.Namespace) -> int:
    try:
        cfg = load_text_config(args.config)
        overrides = {k: v for k, v in (("out_dir", args.out_dir), ("steps", args.steps), ("threads", args.threads))
                     if v is not None}
        cfg = dataclasses.replace(cfg, **overrides).validate()
    except (ValueError, FileNotFoundError) as exc:
        raise SamkitError(str(exc)) from None
    summary = train_text(cfg)
    test = summary.get("test") or {}
    print(f"trained {cfg.variant} {summary['steps']} steps in {summary['train_s']:.0f} s "
          f"({summary['images_per_s']:.1f} images/s); test cIoU {test.get('ciou')} gIoU {test.get('giou')}; "
          f"out: {cfg.out_dir}")
    return 0
