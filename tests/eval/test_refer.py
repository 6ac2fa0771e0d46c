"""Referring segmentation metrics (cIoU, gIoU, precision@t) on hand-made masks, and the evaluation loop with
oracle / empty / predictor-style segmenters on the shared RefCOCO subset."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from samkit.data.refer import RefDataset, RefSample
from samkit.errors import SamkitError
from samkit.eval import PROTOCOLS, evaluate_refer
from samkit.eval.refer import PredictorSegmenter, intersection_union, refer_metrics, summarize


def _masks(*rows: str) -> np.ndarray:
    """Masks from strings like "11.." (one row each)."""
    return np.array([[c == "1" for c in row] for row in rows])


# pred / gt pairs with known counts: (I, U) = (2, 4), (3, 3), (0, 0) empty union, (0, 1) a false positive
CASES = [
    (_masks("1100"), _masks("1111")),
    (_masks("0111"), _masks("0111")),
    (_masks("0000"), _masks("0000")),
    (_masks("1000"), _masks("0000")),
]


def test_hand_made_ciou_giou_precision() -> None:
    counts = [intersection_union(p, g) for p, g in CASES]
    assert counts == [(2, 4), (3, 3), (0, 0), (0, 1)]
    m = refer_metrics(*zip(*counts, strict=False))
    assert m["num_expressions"] == 4
    assert m["ciou"] == pytest.approx(5 / 8)  # (2 + 3 + 0 + 0) / (4 + 3 + 0 + 1)
    assert m["giou"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)  # the empty union counts as IoU 1
    assert m["precision"] == {"50": 0.75, "60": 0.5, "70": 0.5, "80": 0.5, "90": 0.5}
    assert refer_metrics([0], [0])["ciou"] == 1.0 == refer_metrics([0], [0])["giou"]
    assert refer_metrics([], [])["ciou"] is None
    with pytest.raises(ValueError):
        refer_metrics([3], [2])
    with pytest.raises(ValueError, match="differ in size"):
        intersection_union(_masks("10"), _masks("100"))


def test_summarize_breaks_down_by_group() -> None:
    rows = [{"intersection": i, "union": u, "group": g}
            for (i, u), g in zip([(2, 4), (3, 3), (0, 0), (0, 1)], ["a", "a", "b", "b"], strict=False)]
    out = summarize(rows)
    assert out["ciou"] == pytest.approx(5 / 8) and list(out["by_group"]) == ["a", "b"]
    assert out["by_group"]["a"]["ciou"] == pytest.approx(5 / 7) and out["by_group"]["a"]["giou"] == 0.75
    assert out["by_group"]["b"]["ciou"] == 0.0 and out["by_group"]["b"]["giou"] == 0.5


@pytest.fixture(scope="module")
def refs(data_dir: Path) -> RefDataset:
    return RefDataset(data_dir / "refcoco_coco128_subset" / "refs.json")


class Oracle:
    """Returns the target of (image, expression); counts set_image calls."""

    def __init__(self, samples: list[RefSample]) -> None:
        self.targets = {(_digest(s.image), s.sentence): s.mask for s in samples}
        # refcoco and refcoco+ repeat a few (image, sentence) pairs, always for the same object
        assert all(np.array_equal(self.targets[_digest(s.image), s.sentence], s.mask) for s in samples)
        self.image_calls, self.image = 0, None

    def set_image(self, image: np.ndarray) -> None:
        self.image_calls += 1
        self.image = image

    def __call__(self, image: np.ndarray, text: str) -> np.ndarray:
        assert np.array_equal(image, self.image)  # set_image came before, with this image
        return self.targets[_digest(image), text]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_oracle_scores_one_and_reuses_each_image(refs: RefDataset) -> None:
    oracle = Oracle(list(refs))
    out = evaluate_refer(oracle, refs)
    assert out["num_expressions"] == 36 and out["ciou"] == 1.0 and out["giou"] == 1.0
    assert set(out["precision"].values()) == {1.0}
    assert oracle.image_calls == out["num_images"] == 6  # one embedding per image, not per expression
    assert {g: m["num_expressions"] for g, m in out["by_group"].items()} == {
        "refcoco+(unc)/testB": 12, "refcoco(unc)/testB": 14, "refcocog(google)/val": 6, "refcocog(umd)/val": 4}
    json.loads(json.dumps(out))  # JSON-ready
    row = out["expressions"][0]
    assert row["name"] == "refcoco+_49805_141420" and row["iou"] == 1.0 and row["union"] == row["gt_area"] > 0


def test_empty_and_full_segmenters(refs: RefDataset) -> None:
    empty = evaluate_refer(lambda image, text: np.zeros(image.shape[:2], bool), refs, max_samples=10)
    assert empty["num_expressions"] == 10 and empty["ciou"] == 0.0 and empty["giou"] == 0.0
    assert set(empty["precision"].values()) == {0.0} and empty["num_images"] == 1
    full = evaluate_refer(lambda image, text: np.ones(image.shape[:2], bool), refs, max_samples=3)
    gt = [refs[i].mask for i in range(3)]
    assert full["giou"] == pytest.approx(np.mean([g.mean() for g in gt]))
    assert full["ciou"] == pytest.approx(sum(g.sum() for g in gt) / sum(g.size for g in gt))


def test_predictor_is_wrapped_and_keeps_the_best_mask(refs: RefDataset) -> None:
    class FakePredictor:
        """predict(text=..., multimask=False) -> 2 masks, the second scored higher (an empty one)."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, bool]] = []
            self.size = None

        def set_image(self, image: np.ndarray) -> None:
            self.size = image.shape[:2]

        def predict(self, text: str, multimask: bool = True) -> SimpleNamespace:
            self.calls.append((text, multimask))
            masks = np.stack([np.ones(self.size, bool), np.zeros(self.size, bool)])
            return SimpleNamespace(masks=masks, scores=np.array([0.2, 0.9]))

    fake = FakePredictor()
    out = PROTOCOLS["refer"](fake, refs, max_samples=4)
    assert fake.calls == [(refs[i].sentence, False) for i in range(4)]
    assert out["ciou"] == 0.0  # the higher-scored (empty) mask was kept
    assert isinstance(PredictorSegmenter(fake)(None, "x"), np.ndarray)


def test_wrong_mask_size_and_bad_segmenter(refs: RefDataset) -> None:
    with pytest.raises(SamkitError, match="refcoco\\+_49805_141420.*shape \\(2, 2\\)"):
        evaluate_refer(lambda image, text: np.zeros((2, 2), bool), refs)
    with pytest.raises(TypeError, match="segmenter"):
        evaluate_refer(object(), refs)
