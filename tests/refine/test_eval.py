"""Interactive evaluation with and without the refiner reports NoC, boundary IoU and wrong-side clicks."""
from __future__ import annotations

from samkit.eval import interactive
from samkit.predict.predictor import Predictor


def test_interactive_with_and_without_refiner(tiny, refiner, grabcut):
    samples = [grabcut[i] for i in range(2)]
    runs = {name: interactive.evaluate(p, samples, max_clicks=3)
            for name, p in (("sam", Predictor(tiny)), ("refined", Predictor(tiny, refiner=refiner)))}
    for r in runs.values():
        assert r["num_objects"] == 2 and set(r["noc"]) == {"85", "90", "95"}
        assert len(r["miou_at_k"]) == len(r["boundary_iou_at_k"]) == 3
        assert all(0.0 <= v <= 1.0 for v in r["boundary_iou_at_k"])
        assert 0.0 <= r["click_wrong_side_rate"] <= 1.0
        assert r["seconds_per_click"] > 0
    # the first click is the same RITM click for both, and an untrained refiner stays close to SAM
    assert [o["clicks"][0] for o in runs["sam"]["objects"]] == [o["clicks"][0] for o in runs["refined"]["objects"]]
