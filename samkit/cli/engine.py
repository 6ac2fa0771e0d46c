"""``samkit engine SUBCOMMAND PROJECT_DIR``: the data engine's offline tools on a project of ``samkit serve``
(its folder and database; needs ``pip install 'samkit[server]'``).

A subcommand is a function ``add_<name>(subcommands)`` listed in :data:`SUBCOMMANDS`: it adds its parser
(with :func:`add_project_options` for PROJECT_DIR / --db) and sets ``func``. ``stats``: the paper's metrics.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samkit._optional import install_hint
from samkit.cli.args import Parser
from samkit.errors import SamkitError

try:  # the optional extra: without it, `samkit engine` says what to install
    from sqlalchemy import select

    from samkit.engine import stats
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


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_stats]
