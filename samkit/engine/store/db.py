"""Opening a project database: SQLite (WAL, busy timeout, foreign keys) or PostgreSQL, migrated to the
latest schema with Alembic before first use."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from samkit.errors import SamkitError

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_MS = 10_000


def default_url(project_dir: str | Path) -> str:
    """The default database of a project folder: ``<project>/samkit.db`` (SQLite)."""
    return f"sqlite:///{Path(project_dir).resolve() / 'samkit.db'}"


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///...`` or ``postgresql://...``); SQLite connections use WAL so
    readers never block the writer, and wait (not fail) while another process writes."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SamkitError(f"--db: not a database URL: {url!r} (sqlite:///PATH or postgresql://...)") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise SamkitError(f"--db: unsupported database {parsed.get_backend_name()!r} (sqlite or postgresql)")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername == "postgresql":  # the plain scheme means psycopg 3 here (SQLAlchemy's default is psycopg2)
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 (DB-API objects)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is there already)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_store(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and session factory for ``url``, migrated."""
    engine = open_engine(url)
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
