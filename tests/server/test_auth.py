"""Authentication and roles: every endpoint but login and health needs a token; roles are enforced;
passwords are argon2 hashes; failed logins are rate-limited; tokens are revocable."""
from __future__ import annotations

import re

from sqlalchemy import select

from samkit.engine.store.models import Token, User
from tests.server.conftest import ADMIN_PASSWORD, Served

PUBLIC = {"/api/health", "/api/auth/login"}


def test_health_is_public(served: Served) -> None:
    assert served.client.get("/api/health").json() == {"ok": True}


def test_every_other_endpoint_needs_a_token(served: Served) -> None:
    paths = served.app.openapi()["paths"]
    assert len(paths) > 15
    for path, operations in paths.items():
        if path in PUBLIC:
            continue
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            r = served.client.request(method, url)
            assert r.status_code == 401, (method, url, r.status_code)
            r = served.client.request(method, url, headers={"Authorization": "Bearer not-a-token"})
            assert r.status_code == 401, (method, url, r.status_code)


def test_wrong_password_is_refused_and_rate_limited(served: Served) -> None:
    for _ in range(served.settings.login_attempts):
        r = served.client.post("/api/auth/login", json={"username": "admin", "password": "wrong-password"})
        assert r.status_code == 401
    # the limit now holds even for the right password, for this client and user name
    r = served.client.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 429
    assert served.client.post("/api/auth/login", json={"username": "annotator",
                                                       "password": "annotator-pass"}).status_code == 200


def test_passwords_and_tokens_are_stored_hashed(served: Served) -> None:
    with served.state.sessions() as s:
        admin = s.scalar(select(User).where(User.username == "admin"))
        assert admin.password_hash.startswith("$argon2id$") and ADMIN_PASSWORD not in admin.password_hash
        token = served.headers["admin"]["Authorization"].split()[1]
        hashes = s.scalars(select(Token.token_hash)).all()
    assert token not in hashes and all(len(h) == 64 for h in hashes)


def test_logout_revokes_the_token(served: Served) -> None:
    assert served.get("/api/me").json()["username"] == "annotator"
    assert served.post("/api/auth/logout").status_code == 200
    assert served.get("/api/me").status_code == 401


def test_deactivating_a_user_revokes_their_tokens(served: Served) -> None:
    viewer_id = next(u["id"] for u in served.get("/api/users", "admin").json() if u["username"] == "viewer")
    r = served.post(f"/api/users/{viewer_id}/deactivate", "admin")
    assert r.status_code == 200 and r.json()["revoked_tokens"] == 1
    assert served.get("/api/me", "viewer").status_code == 401
    r = served.client.post("/api/auth/login", json={"username": "viewer", "password": "viewer-pass"})
    assert r.status_code == 401


def test_annotator_cannot_manage_users(served: Served) -> None:
    assert served.get("/api/users").status_code == 403
    r = served.post("/api/users", json={"username": "mallory", "password": "long-enough", "role": "admin"})
    assert r.status_code == 403
    assert served.post("/api/users/1/deactivate").status_code == 403


def test_viewer_reads_but_cannot_write(served: Served) -> None:
    assert served.get("/api/projects/1/images", "viewer").status_code == 200
    image = served.get("/api/projects/1/images", "viewer").json()[0]
    size = [image["height"], image["width"]]
    forbidden = [
        ("post", "/api/projects/1/images/1/predict", {"points": [[10, 10]], "labels": [1]}),
        ("post", "/api/projects/1/images/1/annotations", {"rle": {"size": size, "counts": [size[0] * size[1]]}}),
        ("post", "/api/projects/1/images/1/undo", None),
        ("post", "/api/projects/1/jobs", {"kind": "encode"}),
        ("post", "/api/projects/1/labels", {"name": "cat"}),
    ]
    for method, url, body in forbidden:
        r = getattr(served, method)(url, "viewer", json=body)
        assert r.status_code == 403, (url, r.status_code, r.text)
    assert served.client.put("/api/projects/1/images/1/status", json={"status": "done"},
                             headers=served.headers["viewer"]).status_code == 403


def test_new_user_validation(served: Served) -> None:
    r = served.post("/api/users", "admin", json={"username": "x", "password": "short", "role": "viewer"})
    assert r.status_code == 422
    r = served.post("/api/users", "admin", json={"username": "x", "password": "long-enough", "role": "root"})
    assert r.status_code == 422
    r = served.post("/api/users", "admin", json={"username": "viewer", "password": "long-enough", "role": "viewer"})
    assert r.status_code == 409
