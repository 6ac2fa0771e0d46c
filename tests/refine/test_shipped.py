"""The bundled refiners (samkit_tiny_ref, samkit_tiny_ref_hq): load offline and improve a few GrabCut objects
over samkit_tiny alone."""
from __future__ import annotations

import numpy as np
import pytest

from samkit.eval.interactive import simulate_object
from samkit.models.load import BUNDLED_DIR
from samkit.predict.predictor import Predictor
from samkit.refine import BUNDLED_REFINERS, load_refiner


@pytest.mark.parametrize("name", sorted(BUNDLED_REFINERS))
def test_shipped_refiner_improves_grabcut_objects(tiny, grabcut, name):
    assert (BUNDLED_DIR / BUNDLED_REFINERS[name]).is_file()
    refined = Predictor(tiny, refiner=load_refiner(name))
    plain = Predictor(tiny)
    ious = {"sam": [], "refined": []}
    for sample in [grabcut[i] for i in range(0, 50, 10)]:
        for name, pred in (("sam", plain), ("refined", refined)):
            pred.set_image(sample.image)
            ious[name].append(simulate_object(pred, sample.masks[0], sample.ignore, 5).ious)
    assert np.mean(ious["refined"]) > np.mean(ious["sam"]), ious
