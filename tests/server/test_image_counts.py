"""Masks per image for the image list: live annotations only (deleted and rejected ones left out),
pending ones counted apart; any signed-in role may read it."""
from __future__ import annotations

import numpy as np

from samkit.data.masks import mask_to_uncompressed_rle
from tests.server.conftest import Served

URL = "/api/projects/1/image_counts"


def _save(served: Served, image_id: int, y0: int) -> dict:
    mask = np.zeros((321, 481), bool)
    mask[y0:y0 + 20, 10:60] = True
    r = served.post(f"/api/projects/1/images/{image_id}/annotations", json={"rle": mask_to_uncompressed_rle(mask)})
    assert r.status_code == 201, r.text
    return r.json()


def _set(served: Served, ann: dict, status: str) -> None:
    r = served.patch(f"/api/projects/1/annotations/{ann['id']}", json={"version": ann["version"], "status": status})
    assert r.status_code == 200, r.text


def test_counts_per_image(served: Served) -> None:
    assert served.get(URL, "viewer").json() == {}
    kept, pending, rejected, deleted = (_save(served, 1, y) for y in (0, 40, 80, 120))
    _save(served, 2, 0)
    _set(served, pending, "pending")
    _set(served, rejected, "rejected")
    r = served.delete(f"/api/projects/1/annotations/{deleted['id']}?version={deleted['version']}")
    assert r.status_code == 200, r.text
    assert kept["image_id"] == 1
    assert served.get(URL, "viewer").json() == {"1": {"masks": 2, "pending": 1}, "2": {"masks": 1, "pending": 0}}
    assert served.client.get(URL).status_code == 401
    assert served.get("/api/projects/9/image_counts").status_code == 404
