"""The public API at the top of the package: every name in ``samkit.__all__`` resolves, and the
evaluation protocols accept anything shaped like a Segmenter (the Predictor, the GrabCut baseline)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

import samkit
from samkit.eval.protocol import BatchSegmenter, Segmenter
from samkit.predict.grabcut import GrabCutPredictor


def test_every_public_name_resolves() -> None:
    for name in samkit.__all__:
        assert getattr(samkit, name) is not None, name
    assert set(samkit.__all__) <= set(dir(samkit))
    assert "grabcut" in samkit.dataset_kinds() and "paste" in samkit.dataset_kinds()


def test_import_samkit_stays_light() -> None:
    code = "import sys, samkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_segmenters_fit_the_protocol(data_dir) -> None:
    model = samkit.load_model("samkit_tiny")
    predictor = samkit.Predictor(model)
    assert isinstance(predictor, BatchSegmenter) and isinstance(GrabCutPredictor(), Segmenter)
    assert not isinstance(GrabCutPredictor(), BatchSegmenter)  # no predict_batch: boxes / edges need one
    samples = samkit.open_dataset("grabcut", data_dir / "GrabCut")
    for segmenter in (predictor, GrabCutPredictor()):
        result = samkit.evaluate_single_point(segmenter, samples, max_samples=2)
        assert result["num_objects"] == 2 and 0.0 <= result["miou"] <= 1.0
        assert np.isfinite(result["miou"])
