"""A private PostgreSQL server for the tests: ``$SAMKIT_TEST_POSTGRES`` (a URL) when set, else a
throw-away cluster started here (initdb + pg_ctl from the Debian ``postgresql`` package, trust auth on
a free loopback port; as root, run as the ``postgres`` user). Missing PostgreSQL fails, never skips."""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from samkit.server.threaded import free_port

ENV = "SAMKIT_TEST_POSTGRES"


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail(f"PostgreSQL is not installed ({name} not found): apt-get install postgresql, "
                    f"or set {ENV} to a server URL")
    return found[-1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's ``postgres`` database, for the whole session."""
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    folder = Path(tempfile.mkdtemp(prefix="samkit-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    run = dict(check=True, capture_output=True, text=True)
    subprocess.run(_as_postgres_user([_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]), **run)
    subprocess.run(_as_postgres_user([_binary("pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
                                      f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"]), **run)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres_user([_binary("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the server (dropped afterwards)."""
    name = f"samkit_{secrets.token_hex(4)}"
    admin = create_engine(postgres_server.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
