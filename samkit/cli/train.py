"""``samkit train`` (promptable models, SAM's recipe), ``samkit train-text`` (text prompters),
``samkit train-refiner`` (SAM-REF refiners) and ``samkit calibrate`` (IoU head and everything thresholds of
a model to ship)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samkit.cli.args import non_negative_int, positive_int
from samkit.cli.common import check_writable
from samkit.data.readers import open_dataset
from samkit.errors import SamkitError
from samkit.io_utils import atomic_write_text
from samkit.models.load import load_model
from samkit.models.model_file import read_model_info
from samkit.models.sam import Sam
from samkit.train import load_config, train
from samkit.train.calibrate import AMG_OFFSETS, calibrate_model, split_validation, write_calibrated
from samkit.train.refiner import load_refiner_config, train_refiner
from samkit.train.text import load_text_config, train_text

TRAIN_DESCRIPTION = ("Train or fine-tune a promptable model from a JSON config (see configs/): SAM's recipe "
                     "(focal + dice 20:1, IoU head, simulated clicks). Resumable; writes a JSONL log, a loss "
                     "curve, checkpoints and the exported model into the config's out_dir.")
CALIBRATE_DESCRIPTION = ("Calibrate a trained model for shipping, on a validation split of its training data "
                         "(never an evaluation set): fit its IoU head (affine, folded into the head) on "
                         "single-point masks of --points objects, and the everything-mode thresholds and crops (each "
                         "--offsets stability offset with each --crop-layers count and --crop-downscales factor) "
                         "on --images images; writes the model file with them in its metadata and a JSON report "
                         "beside it.")
REFINER_DESCRIPTION = ("Train a SAM-REF refiner (samkit.refine) behind a frozen SAM from a JSON config "
                       "(configs/samkit_tiny_ref.json): simulated click sessions, boundary-weighted focal + dice. "
                       "Resumable; writes a JSONL log, checkpoints and refiner.fp16.safetensors into the config's "
                       "out_dir (docs/refiner.md).")
TEXT_DESCRIPTION = ("Train a text prompter (BEiT-3 + projector) on a frozen SAM from a JSON config "
                    "(configs/samkit_tiny_text_*.json); prints test cIoU/gIoU at the end.")


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Register ``train``, ``train-text`` or ``calibrate``."""
    if name == "calibrate":
        p = commands.add_parser(name, help=help, description=CALIBRATE_DESCRIPTION)
        p.add_argument("model", metavar="MODEL", help="model file (or registry name) to calibrate")
        p.add_argument("--val-kind", default="berkeley", help="validation dataset layout (default berkeley: "
                       "images/ + masks/)")
        p.add_argument("--val-root", required=True, metavar="DIR", help="validation dataset folder")
        p.add_argument("--points", type=positive_int, default=150, metavar="N", help="objects for the IoU head")
        p.add_argument("--images", type=positive_int, default=12, metavar="N", help="images for the thresholds")
        p.add_argument("--points-per-side", type=positive_int, default=32, help="everything-mode grid")
        p.add_argument("--crop-layers", type=non_negative_int, nargs="+", default=[0], metavar="N",
                       help="crop layers to try (default 0; e.g. 0 1: the cheaper wins when it does as well)")
        p.add_argument("--crop-downscales", type=positive_int, nargs="+", default=[1], metavar="F",
                       help="with crops, points downscale factors to try (default 1; e.g. 1 2: 2 halves the crops' "
                       "decoder work and wins when it does as well)")
        p.add_argument("--offsets", type=float, nargs="+", default=list(AMG_OFFSETS), metavar="X",
                       help=f"stability offsets to try (default {' '.join(map(str, AMG_OFFSETS))})")
        p.add_argument("--thresholds-only", action="store_true",
                       help="keep the IoU head (and the file's calibration record): fit only the everything settings")
        p.add_argument("--out", required=True, type=Path, metavar="FILE", help="calibrated .safetensors to write")
        p.set_defaults(func=run_calibrate)
        return p
    if name == "train-text":
        p = commands.add_parser(name, help=help, description=TEXT_DESCRIPTION)
        p.add_argument("config", metavar="CONFIG", help="text training config (configs/samkit_tiny_text_*.json)")
        p.add_argument("--out-dir", metavar="DIR", help="override the config's out_dir")
        p.add_argument("--steps", type=positive_int, metavar="N", help="override the config's number of steps")
        p.add_argument("--threads", type=positive_int, metavar="N",
                       help="torch CPU threads (e.g. 1 per run for parallel runs)")
        p.set_defaults(func=run_train_text)
        return p
    refiner = name == "train-refiner"
    p = commands.add_parser(name, help=help, description=REFINER_DESCRIPTION if refiner else TRAIN_DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="training config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the config's out_dir")
    p.add_argument("--out-dir", metavar="DIR", help="override the config's out_dir")
    p.add_argument("--steps", type=positive_int, metavar="N", help="override the config's number of steps")
    p.add_argument("--stop-at", type=positive_int, metavar="N",
                   help="stop after step N (checkpoint and export); the schedule still spans all steps")
    p.set_defaults(func=run_train_refiner if refiner else run_train)
    return p


def _run_config(load: Callable[[str], Any], args: argparse.Namespace) -> Any:
    """The config file read by ``load``, with --resume / --out-dir / --steps / --stop-at applied and validated;
    a bad file is a SamkitError."""
    try:
        cfg = load(args.config)
        overrides = {k: v for k, v in (("out_dir", args.out_dir), ("steps", args.steps), ("stop_at", args.stop_at))
                     if v is not None}
        return dataclasses.replace(cfg, resume=args.resume or cfg.resume, **overrides).validate()
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SamkitError(str(exc)) from None


def run_train(args: argparse.Namespace) -> int:
    cfg = _run_config(load_config, args)
    result = train(cfg)
    print(f"trained {result.steps} steps, final loss {result.final_loss}; model: {result.model_path}")
    return 0


def run_train_refiner(args: argparse.Namespace) -> int:
    cfg = _run_config(load_refiner_config, args)
    path = train_refiner(cfg)
    print(f"trained the refiner to step {cfg.stop_at or cfg.steps}; refiner: {path}")
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


def run_calibrate(args: argparse.Namespace) -> int:
    if args.out.suffix != ".safetensors":
        raise SamkitError(f"--out must be a .safetensors file, got {args.out}")
    check_writable(args.out.parent, "--out's folder")
    model = load_model(args.model)
    if not isinstance(model, Sam):
        raise SamkitError(f"calibrate fits a SAM's IoU head and everything thresholds; {args.model} is a text model")
    points, images = split_validation(open_dataset(args.val_kind, args.val_root), args.points, args.images)
    report = calibrate_model(model, points, images, args.points_per_side, crop_layers=args.crop_layers,
                             offsets=args.offsets, crop_downscales=args.crop_downscales,
                             calibrate_head=not args.thresholds_only)
    source = read_model_info(model.weights) if os.path.isfile(model.weights) else None
    path = write_calibrated(model, report, args.out, source=source)
    report_path = path.with_suffix(".calibration.json")
    atomic_write_text(report_path, json.dumps(report.to_dict(), indent=1) + "\n")
    before, after = report.before, report.after
    print(f"IoU head: Spearman {before['spearman']} -> {after['spearman']}, calibration error "
          f"{before['calibration_error']:.3f} -> {after['calibration_error']:.3f}; everything thresholds "
          f"{report.thresholds} ({'qualified' if report.qualified else 'no setting met 10-60 masks per image'})")
    print(f"wrote {path}, {report_path}")
    return 0
