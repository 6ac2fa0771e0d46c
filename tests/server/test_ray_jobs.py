"""Automatic labelling jobs on Ray (``engine`` "ray" in the job's params, or ``samkit serve --engine ray``):
the same masks as the local engine, stored per image as the actors finish; bad engine params refused."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pycocotools import mask as mask_utils
from sqlalchemy import select

from samkit.engine.store.models import Annotation
from samkit.server.app import create_app
from tests.server.conftest import GRABCUT_IMAGES, JOBS, LOW, Served, make_project, run_job, settings_for


@pytest.fixture
def two_images(tmp_path: Path) -> Iterator[Served]:
    """A served project of two GrabCut images whose auto jobs run on Ray by default (--engine ray)."""
    app = create_app(settings_for(make_project(tmp_path, GRABCUT_IMAGES[:2]), engine="ray", workers=2))
    with TestClient(app) as client:
        yield Served(client, app)


def _masks(served: Served, job_id: int) -> dict[int, list[Annotation]]:
    with served.state.sessions() as s:
        anns = s.scalars(select(Annotation).where(Annotation.job_id == job_id).order_by(Annotation.id)).all()
    out: dict[int, list[Annotation]] = {}
    for a in anns:
        out.setdefault(a.image_id, []).append(a)
    return out


@pytest.mark.slow
def test_auto_job_on_ray_matches_local(two_images: Served) -> None:
    local = run_job(two_images, "auto", engine="local", **LOW)
    ray = run_job(two_images, "auto", **LOW)  # the server's engine: ray
    assert local["state"] == "done" and ray["state"] == "done", (local, ray)
    assert ray["done"] == ray["total"] == 2
    ours, theirs = _masks(two_images, ray["id"]), _masks(two_images, local["id"])
    assert set(ours) == set(theirs) == {1, 2}
    for image_id, anns in ours.items():
        twins = theirs[image_id]
        assert len(anns) == len(twins) > 0
        assert {(a.source, a.status) for a in anns} == {("auto", "accepted")}
        # Ray actors and this process may round a logit at the threshold differently: IoU >= 0.99 each
        iou = mask_utils.iou([a.rle for a in anns], [a.rle for a in twins], [0] * len(anns))
        assert float(np.diag(iou).min()) >= 0.99
        np.testing.assert_allclose([a.score for a in anns], [a.score for a in twins], atol=1e-4)


def test_bad_engine_params_are_refused(served: Served) -> None:
    for params, words in (({"engine": "spark"}, "engine must be one of"), ({"workers": 0}, "workers must be"),
                          ({"workers": True}, "workers must be"), ({"engine": "ray", "nope": 1}, "nope")):
        r = served.post(JOBS, json={"kind": "auto", "params": {**LOW, **params}})
        assert r.status_code == 422 and words in r.json()["detail"], (params, r.text)
