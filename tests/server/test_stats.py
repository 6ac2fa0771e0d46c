"""Annotation statistics (seconds / clicks per mask, masks per image; per stage, annotator and day) from
masks and events saved through the HTTP API: GET /api/projects/{id}/stats and ``samkit engine stats``."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import update

from samkit.cli import main
from samkit.data.masks import mask_to_rle
from samkit.engine.store.models import Annotation
from tests.server.conftest import Served

IMAGES = "/api/projects/1/images"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def _rle(served: Served, image_id: int, k: int) -> dict:
    """A small square mask (k-th position) of the image's size."""
    info = served.get(f"{IMAGES}/{image_id}").json()
    mask = np.zeros((info["height"], info["width"]), bool)
    mask[10 * k: 10 * k + 8, 10: 20] = True
    return mask_to_rle(mask)


def _event(seconds: float, clicks: int, start: datetime = T0) -> dict:
    return {"started_at": start.isoformat(), "ended_at": (start + timedelta(seconds=seconds)).isoformat(),
            "clicks": clicks, "prompt_kinds": ["point"]}


def _save(served: Served, image_id: int, k: int, role: str = "annotator", **extra) -> dict:  # noqa: ANN003
    r = served.post(f"{IMAGES}/{image_id}/annotations", role, json={"rle": _rle(served, image_id, k), **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _annotate(served: Served) -> None:
    """manual: annotator 3 timed masks on image 1, admin 1 timed + 1 untimed on image 2, a deleted one;
    semi: 3 pre-filled by the admin on image 3, the annotator accepts one (fixing it), rejects one, one
    stays pending; auto: 2 on image 3 (no events)."""
    for k, (s, c) in enumerate([(10, 2), (20, 4), (30, 3)]):
        _save(served, 1, k, event=_event(s, c))
    _save(served, 2, 0, "admin", event=_event(6, 1))
    _save(served, 2, 1, "admin")
    gone = _save(served, 1, 5, event=_event(100, 50))
    assert served.delete(f"/api/projects/1/annotations/{gone['id']}", params={"version": gone["version"]}) \
        .status_code == 200
    semi = [_save(served, 3, k, "admin", source="semi", score=0.95) for k in range(3)]
    for ann, status in ((semi[0], "pending"), (semi[1], "pending"), (semi[2], "pending")):
        r = served.patch(f"/api/projects/1/annotations/{ann['id']}", "admin",
                         json={"version": ann["version"], "status": status})
        assert r.status_code == 200, r.text
    accept = served.patch(f"/api/projects/1/annotations/{semi[0]['id']}",
                          json={"version": 2, "status": "accepted", "rle": _rle(served, 3, 7),
                                "event": _event(4, 1)})
    reject = served.patch(f"/api/projects/1/annotations/{semi[1]['id']}",
                          json={"version": 2, "status": "rejected", "event": _event(2, 1)})
    assert accept.status_code == reject.status_code == 200, (accept.text, reject.text)
    for k in (4, 5):
        _save(served, 3, k, "admin", source="auto", score=0.9)


def test_stats_per_stage_annotator_and_day(served: Served) -> None:
    _annotate(served)
    with served.state.sessions.begin() as s:  # one admin mask made "yesterday" (its day bucket)
        s.execute(update(Annotation).where(Annotation.id == 4).values(created_at=T0 - timedelta(days=1)))
    r = served.get("/api/projects/1/stats", "viewer")  # any signed-in role reads them
    assert r.status_code == 200, r.text
    out = r.json()
    manual, semi, auto = (out["stages"][k] for k in ("manual", "semi", "auto"))
    # manual: 5 live masks on 2 images; 4 timed: (10 + 20 + 30 + 6) / 4 s, (2 + 4 + 3 + 1) / 4 clicks
    assert manual == {"masks": 5, "images": 2, "masks_per_image": 2.5, "pending": 0, "timed_masks": 4,
                      "seconds_per_mask": 16.5, "seconds_per_mask_median": 15.0, "clicks_per_mask": 2.5}
    # semi: the rejected one left out; the accepted one timed by its review, one pending
    assert semi == {"masks": 2, "images": 1, "masks_per_image": 2.0, "pending": 1, "timed_masks": 1,
                    "seconds_per_mask": 4.0, "seconds_per_mask_median": 4.0, "clicks_per_mask": 1.0}
    assert auto["masks"] == 2 and auto["timed_masks"] == 0 and auto["seconds_per_mask"] is None
    assert out["stages"]["all"]["masks"] == 9 and out["stages"]["all"]["images"] == 3

    users = {a["username"]: a["stages"] for a in out["annotators"]}
    assert set(users) == {"admin", "annotator"}
    # the annotator: 3 own manual masks, and the semi mask they reviewed (their event's time only)
    assert users["annotator"]["manual"]["masks"] == 3 and users["annotator"]["manual"]["seconds_per_mask"] == 20
    assert users["annotator"]["semi"]["masks"] == 1 and users["annotator"]["semi"]["clicks_per_mask"] == 1
    # the admin authored 2 manual (one timed), 2 live semi, 2 auto; no time on semi (status changes only)
    assert users["admin"]["manual"]["masks"] == 2 and users["admin"]["manual"]["seconds_per_mask"] == 6
    assert users["admin"]["semi"]["masks"] == 2 and users["admin"]["semi"]["timed_masks"] == 0

    days = {d["date"]: d for d in out["days"]}
    yesterday = (T0 - timedelta(days=1)).date().isoformat()
    assert len(days) == 2 and days[yesterday]["stages"]["manual"]["masks"] == 1
    assert days[yesterday]["annotators"] == {"admin": days[yesterday]["stages"]["all"]}
    today = next(d for d in days.values() if d["date"] != yesterday)
    assert today["stages"]["manual"]["masks"] == 4 and today["stages"]["manual"]["seconds_per_mask"] == 20
    assert served.client.get("/api/projects/1/stats").status_code == 401
    assert served.get("/api/projects/2/stats").status_code == 404


def test_engine_stats_command(served: Served, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    _annotate(served)
    api = served.get("/api/projects/1/stats").json()
    project = str(served.settings.project_dir)
    assert main(["engine", "stats", project, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == api
    plot = tmp_path / "stats.png"
    assert main(["engine", "stats", project, "--plot", str(plot)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["stage", "masks", "images", "masks/image", "pending", "s/mask", "median", "s",
                                "clicks/mask"]
    assert table[1].split() == ["project", "manual", "5", "2", "2.5", "0", "16.5", "15.0", "2.5"]
    assert any(row.split()[:3] == ["user", "annotator", "manual"] for row in table)
    with PILImage.open(plot) as png:
        assert png.format == "PNG" and png.width > 500

    assert main(["engine", "stats", str(tmp_path)]) == 2
    assert "no database in" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    assert main(["engine", "stats", str(other), "--db", served.settings.db_url]) == 2
    assert capsys.readouterr().err.strip() == "samkit: error: no project 'other' in the database (projects: project)"
    assert main(["engine", "stats", project, "--plot", str(tmp_path / "nowhere" / "x.png")]) == 2
