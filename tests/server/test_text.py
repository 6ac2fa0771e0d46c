"""Text prompts through the prediction endpoint, with a text-promptable model (samkit_tiny_text): the answer
is the same whether the image's embedding is in memory or comes back from the disk cache."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from samkit.data.masks import rle_to_mask
from samkit.server.app import create_app
from tests.server.conftest import Served, make_project, settings_for

pytestmark = pytest.mark.slow  # a second model (the text encoder) loaded for one module

IMAGES = "/api/projects/1/images"


@pytest.fixture(scope="module")
def text_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    project = make_project(tmp_path_factory.mktemp("text"))
    app = create_app(settings_for(project, model="samkit_tiny_text", embedding_cache=1))
    with TestClient(app) as client:
        yield Served(client, app)


def _text(served: Served, image_id: int, text: str) -> tuple[np.ndarray, float]:
    r = served.post(f"{IMAGES}/{image_id}/predict", json={"text": text})
    assert r.status_code == 200, r.text
    best = r.json()["masks"][0]
    return rle_to_mask(best["rle"]), best["score"]


def test_text_prompt_from_memory_and_from_disk(text_served: Served) -> None:
    first, score = _text(text_served, 1, "the object in the middle")
    assert first.any() and not first.all()
    _text(text_served, 2, "the object in the middle")  # capacity 1: image 1 leaves memory
    assert not text_served.state.embeddings.in_memory(text_served.get(f"{IMAGES}/1").json()["sha256"])
    again, score_again = _text(text_served, 1, "the object in the middle")  # from the disk embedding
    np.testing.assert_array_equal(again, first)
    assert abs(score_again - score) < 1e-5


def test_text_needs_a_text_model(served: Served) -> None:
    r = served.post(f"{IMAGES}/1/predict", json={"text": "the dog"})
    assert r.status_code == 422 and "text" in r.json()["detail"]


def test_text_and_points_with_a_text_model(text_served: Served, tmp_path: Path) -> None:
    info = text_served.get(f"{IMAGES}/1").json()
    r = text_served.post(f"{IMAGES}/1/predict", json={"text": "the object", "points": [[info["width"] // 2,
                                                      info["height"] // 2]], "labels": [1]})
    assert r.status_code in (200, 422), r.text  # the model decides whether it takes both; never a 500
