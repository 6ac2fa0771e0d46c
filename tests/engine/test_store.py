"""The data engine's store: Alembic migrations at open, SQLite in WAL mode, two processes writing one
project database, accounts (argon2, limiter) and the annotation undo chain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text

from samkit.engine import accounts
from samkit.engine.store import annotations as ops
from samkit.engine.store.db import default_url, open_engine, open_store
from samkit.engine.store.models import Annotation, Base
from samkit.errors import SamkitError
from tests.engine.store_helpers import WRITES, setup_store, write_from_two_processes


def test_migrations_create_every_table_in_wal_mode(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    engine, _ = open_store(url)
    open_store(url)  # a second open is a no-op upgrade
    assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    assert (tmp_path / "samkit.db").is_file()


def test_bad_database_urls_are_refused() -> None:
    with pytest.raises(SamkitError, match="not a database URL"):
        open_engine("not a url")
    with pytest.raises(SamkitError, match="unsupported database"):
        open_engine("mysql://u@h/db")


def test_two_processes_write_one_sqlite_project(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    write_from_two_processes(url)
    engine, sessions = open_store(url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    with sessions() as s:
        assert s.scalar(select(func.count(Annotation.id))) == 2 * WRITES
        assert all(a.area == 8 and a.version == 1 for a in s.scalars(select(Annotation)))


def test_undo_chain_restores_every_state(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    setup_store(url)
    _, sessions = open_store(url)
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    a[:2], b[:5] = True, True
    with sessions.begin() as s:
        ann = ops.create(s, 1, a, None)
        ops.update(s, ann, 1, None, b, status="pending")
        with pytest.raises(ops.VersionConflict):
            ops.update(s, ann, 1, None, a)
        ops.delete(s, ann, 2, None)
        assert ann.deleted_at is not None and ann.version == 3
        assert ops.undo(s, 1, None).action == "delete"
        assert ann.deleted_at is None and ann.area == 40 and ann.status == "pending"
        assert ops.undo(s, 1, None).action == "update"
        assert ann.area == 16 and ann.status == "accepted" and ann.bbox == [0.0, 0.0, 8.0, 2.0]
        assert ops.undo(s, 1, None).action == "create" and ann.deleted_at is not None
        assert ops.undo(s, 1, None) is None
        with pytest.raises(SamkitError, match="cannot be changed"):
            ops.update(s, ann, ann.version, None, None, author_id=5)


def test_accounts(tmp_path: Path) -> None:
    _, sessions = open_store(default_url(tmp_path))
    with sessions.begin() as s:
        generated = accounts.ensure_admin(s, None)
        assert generated and len(generated) >= 12
        assert accounts.ensure_admin(s, None) is None  # only at the first start
        with pytest.raises(SamkitError, match="exists"):
            accounts.create_user(s, "admin", "long-enough", "viewer")
        with pytest.raises(SamkitError, match="role"):
            accounts.create_user(s, "bob", "long-enough", "root")
        bob = accounts.create_user(s, "bob", "long-enough", "viewer")
        assert accounts.verify_password(bob.password_hash, "long-enough")
        assert not accounts.verify_password(bob.password_hash, "long-enougH")
        token = accounts.issue_token(s, bob)
        s.flush()
        assert accounts.user_for_token(s, token)[0].username == "bob"
        assert accounts.revoke_tokens(s, bob.id) == 1
        assert accounts.user_for_token(s, token) is None


def test_login_limiter_counts_failures_per_key() -> None:
    limiter = accounts.LoginLimiter(attempts=2, window=3600)
    limiter.failed("ip|bob")
    assert not limiter.blocked("ip|bob")
    limiter.failed("ip|bob")
    assert limiter.blocked("ip|bob") and not limiter.blocked("ip|alice")
    limiter.succeeded("ip|bob")
    assert not limiter.blocked("ip|bob")
