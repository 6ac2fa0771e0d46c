"""``samkit engine SUBCOMMAND PROJECT_DIR``: the data engine's offline tools on a project of ``samkit serve``
(its folder and database; needs ``pip install 'samkit[server]'``).

A subcommand is a function ``add_<name>(subcommands)`` listed in :data:`SUBCOMMANDS`: it adds its parser
(with :func:`add_project_options` for PROJECT_DIR / --db) and sets ``func``. ``stats``: the paper's metrics;
``retrain``: fine-tune the project's model on its accepted masks (:mod:`samkit.engine.retrain`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from samkit._optional import install_hint
from samkit.cli.args import Parser, positive_int
from samkit.cli.common import logs_lines
from samkit.errors import SamkitError

try:  # the optional extra: without it, `samkit engine` says what to install
    from sqlalchemy import select

    from samkit.engine import retrain, stats
    from samkit.engine.store.db import default_url, open_store
    from samkit.engine.store.models import Project
    _MISSING: ImportError | None = None
except ImportError as exc:
    _MISSING = exc

DESCRIPTION = "The data engine's tools on a `samkit serve` project (PROJECT_DIR and its database)."


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = commands.add_parser(name, help=help, description=DESCRIPTION)
    subcommands = p.add_subparsers(dest="engine_command", required=True, metavar="SUBCOMMAND", parser_class=Parser)
    for add in SUBCOMMANDS:
        add(subcommands)
    return p


def add_project_options(p: argparse.ArgumentParser) -> None:
    """PROJECT_DIR and --db, as ``samkit serve`` takes them."""
    p.add_argument("project", metavar="PROJECT_DIR", type=Path, help="the project folder of `samkit serve`")
    p.add_argument("--db", metavar="URL", help="database URL (default sqlite:///PROJECT_DIR/samkit.db)")


def open_project(args: argparse.Namespace) -> tuple[Any, int]:
    """(session factory, project id) of PROJECT_DIR's project (named after the folder, as `samkit serve`
    makes it); SamkitError when the database or the project is missing."""
    if _MISSING is not None:
        raise SamkitError(f"samkit engine needs the server extra: {install_hint('server')} ({_MISSING})")
    if not args.project.is_dir():
        raise SamkitError(f"PROJECT_DIR: not a folder: {args.project}")
    if args.db is None and not (args.project / "samkit.db").is_file():
        raise SamkitError(f"no database in {args.project} (samkit.db): run `samkit serve {args.project}` first, "
                          "or pass --db URL")
    _, sessions = open_store(args.db or default_url(args.project))
    name = args.project.resolve().name or "project"
    with sessions() as s:
        project_id = s.scalar(select(Project.id).where(Project.name == name))
        if project_id is None:
            known = ", ".join(s.scalars(select(Project.name).order_by(Project.id))) or "none"
            raise SamkitError(f"no project {name!r} in the database (projects: {known})")
    return sessions, project_id


# ----------------------------------------------------------------------------------------------- stats


def add_stats(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser(
        "stats", help="annotation statistics: seconds, clicks and masks per image, per stage / annotator / day",
        description="The SAM paper's data-engine metrics of PROJECT_DIR: seconds per mask, clicks per mask and "
                    "masks per image, per stage (manual / semi / auto), per annotator and per day (UTC). "
                    "Prints a table, or the JSON of GET /api/projects/{id}/stats with --json.")
    add_project_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", type=Path, metavar="PNG", help="also write a plot of the metrics per day (matplotlib)")
    p.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    if args.plot is not None and not args.plot.parent.is_dir():
        raise SamkitError(f"--plot: no folder {args.plot.parent}")
    sessions, project_id = open_project(args)
    with sessions() as s:
        report = stats.project_stats(s, project_id)
    print(json.dumps(report, indent=2) if args.json else stats.format_table(report))
    if args.plot is not None:
        stats.plot_days(report, args.plot)
    return 0


# --------------------------------------------------------------------------------------------- retrain


def add_retrain(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser(
        "retrain", help="fine-tune the project's model on its accepted masks; switch to it only if it is better",
        description="Fine-tune PROJECT_DIR's current model on its accepted annotations with samkit's trainer and "
                    "recipe, holding images out (by content hash) to measure NoC@90 and mIoU@1 before and after "
                    "(interactive protocol). The new version is registered (PROJECT_DIR/models/vN.fp16.safetensors) "
                    "and the project switches to it only when it is better: NoC@90 lower, or equal (within its "
                    "standard error over the held-out objects) and mIoU@1 higher. A running server predicts "
                    "with it from its next request on (docs/retrain.md).")
    add_project_options(p)
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="image root, as given to `samkit serve` (default PROJECT_DIR/images)")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default 100)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=positive_int, help="objects per step (default 8)")
    p.add_argument("--mode", choices=("finetune", "scratch"),
                   help="finetune (default): image encoder frozen; scratch: every weight trained")
    p.add_argument("--held-out", type=float, metavar="FRACTION",
                   help="fraction of the annotated images kept for evaluation (default 0.2)")
    p.add_argument("--seed", type=int, help="seed of batches and prompts (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_retrain)


def run_retrain(args: argparse.Namespace) -> int:
    if args.images is not None and not args.images.is_dir():
        raise SamkitError(f"--images: not a folder: {args.images}")
    options = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "mode": args.mode,
               "held_out": args.held_out, "seed": args.seed}
    settings = retrain.RetrainSettings.from_params({k: v for k, v in options.items() if v is not None})
    sessions, project_id = open_project(args)
    root = (args.images or args.project / "images").resolve()
    with tqdm(total=0, unit="step", desc="retrain", disable=logs_lines()) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = retrain.retrain_project(sessions, root, args.project.resolve(), project_id, settings, progress)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
        return 0
    print(f"{'':8}{'NoC@90':>8}{'mIoU@1':>8}")
    for name, m in (("before", result.before), ("after", result.after)):
        print(f"{name:8}{m['noc90']:8.2f}{m['miou1']:8.3f}")
    change, se = retrain.noc_change(result.after, result.before)
    print(f"NoC@90 change {change:+.2f} (standard error {se:.2f}) on {result.after['objects']} held-out objects "
          f"({result.after['images']} images); version {result.version_id} registered: {result.file}")
    print(f"switched to version {result.version_id}" if result.switched else
          f"kept version {result.parent_id}: the new one is not better ({retrain.RULE})")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_stats, add_retrain]
