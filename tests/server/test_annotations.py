"""Assisted-manual annotation through the API: predict from prompts, save / replace / delete with the
version read (409 with the current version otherwise, no update lost), undo history, the fp16 embedding."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from samkit.data.masks import rle_to_mask
from samkit.engine.embeddings import EmbeddingCache
from samkit.engine.store.models import AnnotationEvent
from samkit.predict.predictor import Predictor
from tests.server.conftest import Served

IMAGES = "/api/projects/1/images"


def _predict(served: Served, image_id: int = 1, **prompts) -> dict:  # noqa: ANN003
    r = served.post(f"{IMAGES}/{image_id}/predict", json=prompts)
    assert r.status_code == 200, r.text
    return r.json()


def test_predict_matches_the_predictor(served: Served) -> None:
    image = served.get(f"{IMAGES}/1").json()
    x, y = image["width"] // 2, image["height"] // 2
    r = served.post(f"{IMAGES}/1/predict", json={"points": [[x, y]], "labels": [1]})
    assert r.status_code == 200, r.text
    out = r.json()
    timing = dict(part.strip().split(";dur=") for part in r.headers["Server-Timing"].split(","))
    assert 0 < float(timing["model"]) <= float(timing["route"])  # the model's part of the route function
    assert len(out["masks"]) == 3 and out["model_version"] == "mv1"
    scores = [m["score"] for m in out["masks"]]
    assert scores == sorted(scores, reverse=True)
    direct = Predictor(served.state.model)
    direct.set_image(served.settings.images_dir / image["path"])
    expected = direct.predict(points=[[x, y]], labels=[1])
    best = rle_to_mask(out["masks"][0]["rle"])
    assert best.shape == (image["height"], image["width"])
    np.testing.assert_array_equal(best, expected.masks[expected.best])
    assert out["masks"][0]["area"] == int(best.sum()) > 0
    assert abs(out["masks"][0]["score"] - float(expected.scores[expected.best])) < 1e-5
    # the embedding is on disk, keyed by sha256 + model version
    assert served.state.embeddings.file(image["sha256"]).is_file()

    box = _predict(served, box=[10, 10, x, y], multimask=False)
    assert len(box["masks"]) == 1
    again = _predict(served, points=[[x, y]], labels=[1], multimask=False,
                     mask_input={"prediction_id": out["prediction_id"], "index": out["masks"][0]["index"]})
    assert rle_to_mask(again["masks"][0]["rle"]).any()


class _WatchedLock:
    """A lock that tells when a non-blocking acquire found it held (the route's "is the model free?")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if not got and not blocking:
            self.refused.set()
        return got

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> _WatchedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_click_decodes_on_the_event_loop_only_when_the_model_is_free(served: Served, monkeypatch) -> None:  # noqa: ANN001
    lock = _WatchedLock()
    monkeypatch.setattr(served.state.embeddings, "compute", lock)
    first = _predict(served, points=[[40, 40]], labels=[1])  # encodes the image (in the thread pool)
    image = served.get(f"{IMAGES}/1").json()
    pred = served.state.embeddings.get(served.settings.images_dir / image["path"], image["sha256"])  # the cached one
    threads: list[str] = []
    original = pred.predict

    def recording(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        threads.append(threading.current_thread().name)
        return original(*args, **kw)

    monkeypatch.setattr(pred, "predict", recording)
    again = _predict(served, points=[[40, 40]], labels=[1])
    assert [m["rle"] for m in again["masks"]] == [m["rle"] for m in first["masks"]]
    with ThreadPoolExecutor(3) as pool:
        loop_thread = pool.submit(lambda: served.client.portal.call(lambda: threading.current_thread().name))
        assert threads == [loop_thread.result(timeout=30)]  # the cached click ran on the event loop
        with served.state.embeddings.compute:  # the model busy (as during an export): the click waits ...
            waiting = pool.submit(_predict, served, points=[[40, 40]], labels=[1])
            assert lock.refused.wait(timeout=30)  # the route found the model busy before it is freed (under load too)
            # ... in the thread pool, not on the event loop: other requests are answered meanwhile
            health = pool.submit(served.client.get, "/api/health")  # a blocked event loop never answers it
            assert health.result(timeout=20).status_code == 200
            assert not waiting.done()
        assert waiting.result(timeout=30)["masks"][0]["rle"] == first["masks"][0]["rle"]
    assert len(threads) == 2 and threads[1] != threads[0]


def test_predict_refuses_bad_prompts(served: Served) -> None:
    assert served.post(f"{IMAGES}/1/predict", json={}).status_code == 422
    r = served.post(f"{IMAGES}/1/predict", json={"points": [[10_000, 5]], "labels": [1]})
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    r = served.post(f"{IMAGES}/1/predict", json={"points": [[5, 5]], "labels": [1],
                                                 "mask_input": {"prediction_id": "nope"}})
    assert r.status_code == 422
    r = served.post(f"{IMAGES}/1/predict", json={"text": "the dog"})
    assert r.status_code == 422 and "text" in r.json()["detail"]
    assert served.post(f"{IMAGES}/99/predict", json={"points": [[5, 5]], "labels": [1]}).status_code == 404


def test_embedding_endpoint_serves_fp16_features(served: Served) -> None:
    r = served.get(f"{IMAGES}/2/embedding")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    shape = [int(v) for v in r.headers["x-embedding-shape"].split(",")]
    feats = np.frombuffer(r.content, dtype="<f2").reshape(shape)
    image = served.get(f"{IMAGES}/2").json()
    assert [int(v) for v in r.headers["x-original-size"].split(",")] == [image["height"], image["width"]]
    direct = Predictor(served.state.model)
    direct.set_image(served.settings.images_dir / image["path"])
    expected = direct.features.float().numpy()
    assert feats.shape == expected.shape
    np.testing.assert_allclose(feats.astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    assert served.get(f"{IMAGES}/2/embedding", "viewer").status_code == 403


def test_disk_cache_survives_a_new_cache(served: Served, tmp_path) -> None:  # noqa: ANN001
    image = served.get(f"{IMAGES}/3").json()
    path = served.settings.images_dir / image["path"]
    first = served.state.embeddings.get(path, image["sha256"])
    fresh = EmbeddingCache(served.state.model, served.state.embeddings.tag, served.state.embeddings.folder, 1)
    loaded = fresh.get(path.with_name("not-read.jpg"), image["sha256"])  # from disk: the image is not opened
    assert torch.equal(loaded.features.float(), first.features.float())
    fresh.close()


def test_a_click_does_not_wait_for_the_next_image_being_encoded(served: Served, monkeypatch) -> None:  # noqa: ANN001
    _predict(served, 1, points=[[50, 50]], labels=[1])  # image 1 encoded
    started, release = threading.Event(), threading.Event()
    real_set_image = Predictor.set_image

    def slow_set_image(self, image):  # noqa: ANN001, ANN202 -- an encoder run that lasts until released
        started.set()
        release.wait(60)
        return real_set_image(self, image)

    monkeypatch.setattr(Predictor, "set_image", slow_set_image)
    assert served.get("/api/projects/1/queue").status_code == 200  # starts encoding the next images
    try:
        assert started.wait(30), "the queue did not start encoding in the background"
        with ThreadPoolExecutor(1) as pool:  # a click on image 1 meanwhile: answered, not stuck behind it
            answer = pool.submit(_predict, served, 1, points=[[60, 60]], labels=[1]).result(timeout=30)
        assert answer["masks"]
    finally:
        release.set()


def _save(served: Served, rle: dict, **extra) -> dict:  # noqa: ANN003
    r = served.post(f"{IMAGES}/1/annotations", json={"rle": rle, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_save_replace_delete_with_version_check_and_undo(served: Served) -> None:
    out = _predict(served, points=[[200, 150]], labels=[1])
    first, second = out["masks"][0]["rle"], out["masks"][1]["rle"]
    event = {"started_at": "2026-01-01T10:00:00Z", "ended_at": "2026-01-01T10:00:14Z", "clicks": 3,
             "prompt_kinds": ["point"]}
    ann = _save(served, first, event=event)
    assert ann["version"] == 1 and ann["source"] == "manual" and ann["status"] == "accepted"
    assert ann["area"] == int(rle_to_mask(first).sum())

    # two annotators read version 1; the first writer wins, the second gets 409 and the current version
    url = f"/api/projects/1/annotations/{ann['id']}"
    r1 = served.patch(url, json={"version": 1, "rle": second})
    assert r1.status_code == 200 and r1.json()["version"] == 2
    r2 = served.patch(url, "admin", json={"version": 1, "status": "rejected"})
    assert r2.status_code == 409 and r2.json()["current"]["version"] == 2
    assert served.get(url).json()["rle"] == r1.json()["rle"] and served.get(url).json()["status"] == "accepted"
    assert served.delete(url, params={"version": 1}).status_code == 409
    r = served.delete(url, params={"version": 2})
    assert r.status_code == 200 and r.json()["deleted"]
    assert served.get(f"{IMAGES}/1/annotations").json() == []
    assert len(served.get(f"{IMAGES}/1/annotations", params={"include_deleted": True}).json()) == 1

    history = served.get(f"{IMAGES}/1/history").json()
    assert [h["action"] for h in history] == ["delete", "update", "create"]
    # undo the delete, then the replace: back to the first mask; then the create: gone again
    assert served.post(f"{IMAGES}/1/undo").json()["undone"] == "delete"
    restored = served.post(f"{IMAGES}/1/undo").json()
    assert restored["undone"] == "update" and restored["annotation"]["rle"] == ann["rle"]
    assert not restored["annotation"]["deleted"]
    assert served.post(f"{IMAGES}/1/undo").json()["annotation"]["deleted"]
    assert served.post(f"{IMAGES}/1/undo").status_code == 404
    with served.state.sessions() as s:
        events = s.query(AnnotationEvent).all()
    assert len(events) == 1 and events[0].clicks == 3 and events[0].prompt_kinds == ["point"]


def test_concurrent_writers_lose_no_update(served: Served) -> None:
    """Eight writers change the same annotation at version 1 at once: exactly one succeeds."""
    out = _predict(served, points=[[200, 150]], labels=[1])
    ann = _save(served, out["masks"][0]["rle"])
    url = f"/api/projects/1/annotations/{ann['id']}"
    masks = [m["rle"] for m in out["masks"]]

    def write(i: int) -> int:
        return served.patch(url, json={"version": 1, "rle": masks[i % len(masks)]}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(write, range(8)))
    assert sorted(codes) == [200] + [409] * 7
    assert served.get(url).json()["version"] == 2
    assert [h["action"] for h in served.get(f"{IMAGES}/1/history").json()] == ["update", "create"]


def test_bad_annotations_are_refused(served: Served) -> None:
    r = served.post(f"{IMAGES}/1/annotations", json={"rle": {"size": [3, 3], "counts": [9]}})
    assert r.status_code == 422 and "size" in r.json()["detail"]
    r = served.post(f"{IMAGES}/1/annotations", json={"rle": {"size": [321, 481], "counts": "not rle !!"}})
    assert r.status_code == 422


def test_a_mask_fed_back_is_the_whole_low_res_grid(served: Served) -> None:
    """The answer is sent before the low-res logits of the grid's padding are made (a landscape photo: a third
    of the grid); they are made after it (``ServerState.settle``) or when fed back first, and the mask fed back
    is the predictor's whole low-res grid."""
    image = served.get(f"{IMAGES}/1").json()
    assert image["width"] != image["height"]
    x, y = image["width"] // 2, image["height"] // 2
    out = _predict(served, points=[[x, y]], labels=[1])
    direct = Predictor(served.state.model)
    direct.set_image(served.settings.images_dir / image["path"])
    expected = direct.predict(points=[[x, y]], labels=[1])
    image_id, low = served.state.recall(out["prediction_id"])
    assert image_id == 1
    np.testing.assert_allclose(low, expected.low_res_logits, rtol=0, atol=1e-4)
    fresh = direct.predict(points=[[x, y]], labels=[1])
    assert not fresh.low_res.ready  # recalled before it was settled: made then
    key = served.state.remember(1, fresh.low_res)
    assert served.state.recall(key)[1] is fresh.low_res_logits and fresh.low_res.ready
    index = out["masks"][0]["index"]
    again = _predict(served, points=[[x, y]], labels=[1], multimask=False,
                     mask_input={"prediction_id": out["prediction_id"], "index": index})
    want = direct.predict(points=[[x, y]], labels=[1], multimask=False, mask_input=expected.low_res_logits[index][None])
    assert abs(again["masks"][0]["score"] - float(want.scores[0])) < 1e-5
    np.testing.assert_array_equal(rle_to_mask(again["masks"][0]["rle"]), want.masks[0])
