"""Recent database reads kept for a second: the token check and the clicked image's row skip the database on
a repeat, revocations by this server take effect at once, others' within the time to live."""
from __future__ import annotations

import time

from sqlalchemy import event

from samkit.engine import accounts
from samkit.engine.store.models import Token, User
from samkit.server.recent import RECENT_TTL_S, Recent
from tests.server.conftest import Served


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_the_oldest_go_first() -> None:
    clock = Clock()
    recent: Recent[int] = Recent(ttl=1.0, maxsize=2, timer=clock)
    recent.put("a", 1)
    clock.now = 0.5
    recent.put("b", 2)
    assert recent.get("a") == 1 and recent.get("b") == 2
    clock.now = 1.2  # a is older than 1 s, b is not
    assert recent.get("a") is None and recent.get("b") == 2
    recent.put("c", 3)
    recent.put("d", 4)  # at most 2: b goes
    assert recent.get("b") is None and len(recent) == 2
    recent.clear()
    assert len(recent) == 0 and recent.get("c") is None


class Statements:
    """SQL statements the server's engine runs while in the block."""

    def __init__(self, served: Served) -> None:
        self.engine, self.seen = served.state.engine, []

    def _record(self, conn, cursor, statement, *args) -> None:  # noqa: ANN001 (SQLAlchemy event signature)
        self.seen.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        event.remove(self.engine, "before_cursor_execute", self._record)


def test_a_repeated_click_reads_neither_the_token_nor_the_image(served: Served) -> None:
    image_id = served.get("/api/projects/1/images").json()[0]["id"]
    click = {"points": [[100, 100]], "labels": [1]}
    assert served.post(f"/api/projects/1/images/{image_id}/predict", json=click).status_code == 200
    with Statements(served) as seen:
        r = served.post(f"/api/projects/1/images/{image_id}/predict", json=click)
    assert r.status_code == 200 and r.json()["masks"]
    assert not [s for s in seen if "tokens" in s or "images" in s], seen


def test_a_revocation_by_another_process_takes_effect_within_the_time_to_live(served: Served) -> None:
    assert served.get("/api/me", "viewer").status_code == 200
    with served.state.sessions.begin() as s:  # as another process sharing the database would
        viewer = s.query(User).filter_by(username="viewer").one()
        assert accounts.revoke_tokens(s, viewer.id) == 1
    time.sleep(RECENT_TTL_S + 0.1)
    assert served.get("/api/me", "viewer").status_code == 401
    assert served.get("/api/me", "annotator").status_code == 200


def test_this_servers_deactivation_applies_at_once_to_a_token_read_a_moment_ago(served: Served) -> None:
    assert served.get("/api/me", "viewer").status_code == 200  # the viewer's token is now a recent read
    viewer_id = next(u["id"] for u in served.get("/api/users", "admin").json() if u["username"] == "viewer")
    assert served.post(f"/api/users/{viewer_id}/deactivate", "admin").status_code == 200
    assert served.get("/api/me", "viewer").status_code == 401


def test_an_expired_token_is_refused_even_when_recently_read(served: Served) -> None:
    assert served.get("/api/me").status_code == 200
    token = served.headers["annotator"]["Authorization"].split()[1]
    user, row = served.state.recent_tokens.get(token)
    row.expires_at = row.expires_at.replace(year=2000)  # the copy read a moment ago says: expired
    assert served.get("/api/me").status_code == 401
    with served.state.sessions() as s:
        assert s.query(Token).filter_by(user_id=user.id).one().revoked_at is None  # nothing written
