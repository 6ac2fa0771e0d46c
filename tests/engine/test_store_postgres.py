"""The store on a real PostgreSQL server (tests/postgres.py starts one; missing PostgreSQL fails)."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text

from samkit.engine.store import annotations as ops
from samkit.engine.store.db import open_store
from samkit.engine.store.models import Annotation, Base
from tests.engine.store_helpers import WRITES, write_from_two_processes
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # real server processes / jobs / PostgreSQL: seconds to a minute each


def test_migrations_on_postgres(postgres_url: str) -> None:  # noqa: F811
    engine, _ = open_store(postgres_url)
    open_store(postgres_url)
    assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    engine.dispose()


def test_two_processes_and_version_conflicts_on_postgres(postgres_url: str) -> None:  # noqa: F811
    write_from_two_processes(postgres_url)
    engine, sessions = open_store(postgres_url)
    with sessions() as s:
        assert s.scalar(select(func.count(Annotation.id))) == 2 * WRITES
    # two sessions read version 1; the second writer's UPDATE finds the row changed
    mask = np.ones((8, 8), bool)
    with sessions() as a, sessions() as b:
        first, second = a.get(Annotation, 1), b.get(Annotation, 1)
        ops.update(a, first, 1, None, mask)
        a.commit()
        with pytest.raises(Exception, match="expected to update 1 row"):
            ops.update(b, second, 1, None, mask)
    engine.dispose()
