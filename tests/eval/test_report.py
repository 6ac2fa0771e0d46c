"""write_report: JSON round trip (numpy values converted) and the PNG plots."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from samkit.eval.report import track, write_report


def test_interactive_report(tmp_path):
    results = {"protocol": "interactive", "dataset": "GrabCut", "noc": {"85": 2.5, "90": np.float64(3.0)},
               "nof": {"85": 0, "90": np.int64(1)}, "miou_at_k": [0.5, 0.8, 0.9], "objects": [{"ious": np.ones(3)}]}
    paths = write_report(results, tmp_path / "out", "grabcut")
    assert [p.name for p in paths] == ["grabcut.json", "grabcut_miou.png"]
    data = json.loads(paths[0].read_text())
    assert data["noc"] == {"85": 2.5, "90": 3.0} and data["nof"]["90"] == 1 and data["objects"][0]["ious"] == [1.0] * 3
    with Image.open(paths[1]) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_edges_report_and_plain_results(tmp_path):
    pr = {"thresholds": [0.25, 0.5, 0.75], "precision": [0.4, 0.7, 0.9], "recall": [0.9, 0.6, 0.3],
          "f": [0.55, 0.65, 0.45]}
    results = {"protocol": "edges", "ods": {"f": 0.65, "precision": 0.7, "recall": 0.6, "threshold": 0.5},
               "ois": {"f": 0.7, "precision": 0.72, "recall": 0.68}, "ap": 0.5, "pr_curve": pr}
    paths = write_report(results, tmp_path, "bsds")
    assert [p.name for p in paths] == ["bsds.json", "bsds_pr.png"]
    with Image.open(paths[1]) as im:
        assert im.format == "PNG"
    assert [p.name for p in write_report({"protocol": "boxes", "ap": 0.4}, tmp_path, "coco")] == ["coco.json"]


def test_track_limits_items():
    assert list(track(iter(range(10)), max_items=3)) == [0, 1, 2]
    assert list(track(range(4), progress=True)) == [0, 1, 2, 3]
