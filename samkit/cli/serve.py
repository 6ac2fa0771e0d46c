"""``samkit serve``: the annotation server (FastAPI + uvicorn; needs ``pip install 'samkit[server]'``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samkit._optional import install_hint, require
from samkit.cli.args import positive_int
from samkit.cli.common import DEFAULT_MODEL
from samkit.errors import SamkitError

try:  # the optional extra: without it, `samkit serve` says what to install
    import uvicorn

    from samkit.server.app import create_app
    from samkit.server.settings import Settings
    _MISSING: ImportError | None = None
except ImportError as exc:
    _MISSING = exc

DESCRIPTION = (
    "Serve the data engine's HTTP API for PROJECT_DIR: images (under --images, default PROJECT_DIR/images), "
    "users, annotations, predictions and jobs. The database is PROJECT_DIR/samkit.db (SQLite, WAL) unless "
    "--db postgresql://...; it is migrated at start. The first start creates the user 'admin' with the "
    "password in $SAMKIT_ADMIN_PASSWORD, or a generated one printed once.")


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = commands.add_parser(name, help=help, description=DESCRIPTION)
    p.add_argument("project", metavar="PROJECT_DIR", type=Path, help="the project folder (made when missing)")
    p.add_argument("--images", type=Path, metavar="DIR", help="image root (default PROJECT_DIR/images)")
    p.add_argument("--db", metavar="URL", help="database URL (default sqlite:///PROJECT_DIR/samkit.db)")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                   help="model of a new project (an existing one predicts with its current model version, "
                        "which `samkit engine retrain` may switch)")
    p.add_argument("--refiner", metavar="NAME_OR_PATH",
                   help="a SAM-REF refiner (bundled name or file, docs/refiner.md) refining the predictions")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where automatic labelling jobs run the generator: this process, or Ray actors "
                        "(pip install 'samkit[ray]'); a job's 'engine' parameter overrides it")
    p.add_argument("--workers", type=positive_int, default=2, metavar="N", help="ray: actors per job")
    p.add_argument("--ray-address", metavar="ADDR", help="ray: an existing cluster (default: a local one per job)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=positive_int, default=8000, help="port to listen on")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if _MISSING is not None:
        raise SamkitError(f"samkit serve needs the server extra: {install_hint('server')} ({_MISSING})")
    if args.engine == "ray":
        require("ray", "ray", "--engine ray")
    if args.images is not None and not args.images.is_dir():
        raise SamkitError(f"--images: not a folder: {args.images}")
    app = create_app(Settings(args.project, images_dir=args.images, db_url=args.db, model=args.model,
                              refiner=args.refiner, engine=args.engine, workers=args.workers,
                              ray_address=args.ray_address))
    state = app.state.samkit
    if state.generated_password:
        print(f"samkit: created user 'admin' with password {state.generated_password} (shown only now)",
              file=sys.stderr)
    for message in state.refused:
        print(f"samkit: warning: image refused: {message}", file=sys.stderr)
    print(f"samkit: {state.scanned} images under {state.settings.images_dir}; http://{args.host}:{args.port}/docs",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
