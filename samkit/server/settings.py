"""Settings of one annotation server."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from samkit.engine.store.db import default_url

ADMIN_PASSWORD_ENV = "SAMKIT_ADMIN_PASSWORD"


@dataclass
class Settings:
    """``project_dir`` holds the database (SQLite default), embeddings/ and exports/; images live under
    ``images_dir`` (default ``<project>/images``), uploads in its ``uploads/``."""

    project_dir: Path
    images_dir: Path = None  # type: ignore[assignment]  # None: <project>/images, set by __post_init__
    db_url: str = None  # type: ignore[assignment]  # None: the project's SQLite file, set by __post_init__
    model: str = "samkit_tiny"
    refiner: str | None = None  # a SAM-REF refiner (bundled name or file) behind the model for predictions
    admin_password: str | None = None  # None: $SAMKIT_ADMIN_PASSWORD, else generated and printed once
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    embedding_cache: int = 32  # images kept in memory
    prefetch: int = 2  # next images of the queue encoded in the background
    login_attempts: int = 5  # failed logins allowed per client and user name ...
    login_window_s: float = 60.0  # ... in this many seconds
    job_poll_s: float = 0.2
    engine: str = "local"  # where auto / semi jobs run the generator (a job's "engine" param overrides): local | ray
    workers: int = 2  # Ray actors of such a job
    ray_address: str | None = None  # an existing Ray cluster; None: a local one started per job

    def __post_init__(self) -> None:
        self.project_dir = Path(self.project_dir).resolve()
        self.images_dir = Path(self.images_dir).resolve() if self.images_dir else self.project_dir / "images"
        self.db_url = self.db_url or default_url(self.project_dir)
        if self.admin_password is None:
            self.admin_password = os.environ.get(ADMIN_PASSWORD_ENV) or None
