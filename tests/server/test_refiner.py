"""The prediction endpoint with a SAM-REF refiner (``samkit serve --refiner``): refined masks equal the
library's ``Predictor(model, refiner=...)``; ``refine: false`` gives SAM's; bad refiners fail at start."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from samkit.cli import main
from samkit.data.masks import rle_to_mask
from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, SamRefiner, load_refiner, save_refiner
from samkit.refine import file as refine_file
from samkit.refine.layers import RefineHead
from samkit.server.app import create_app
from tests.server.conftest import Served, make_project, settings_for

IMAGES = "/api/projects/1/images"


@pytest.fixture
def refiner_file(tmp_path: Path) -> Path:
    """A refiner behind samkit_tiny whose heads add a constant +4 to SAM's logits (so its masks grow), as a
    refiner file."""
    torch.manual_seed(0)
    refiner = SamRefiner(RefinerConfig()).eval()
    heads = [m for m in refiner.modules() if isinstance(m, RefineHead)]
    assert heads
    with torch.no_grad():
        for head in heads:  # out: (correction, error logit); error logit 8: the gate is open
            head.out.weight.zero_()
            head.out.bias.copy_(torch.tensor([4.0, 8.0]))
    return save_refiner(refiner, tmp_path / "ref.fp16.safetensors")


@pytest.fixture
def refined(tmp_path: Path, refiner_file: Path) -> Iterator[Served]:
    app = create_app(settings_for(make_project(tmp_path), refiner=str(refiner_file)))
    with TestClient(app) as client:
        yield Served(client, app)


def _predict(served: Served, image_id: int, **body) -> dict:  # noqa: ANN003
    r = served.post(f"{IMAGES}/{image_id}/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _click(served: Served, image_id: int) -> dict:
    info = served.get(f"{IMAGES}/{image_id}").json()
    return {"points": [[info["width"] // 2, info["height"] // 2]], "labels": [1], "multimask": False}


def test_predictions_are_refined(refined: Served, refiner_file: Path) -> None:
    click = _click(refined, 1)
    out = _predict(refined, 1, **click)
    assert out["refined"] is True
    image = refined.settings.images_dir / refined.get(f"{IMAGES}/1").json()["path"]
    direct = Predictor(refined.state.model, refiner=load_refiner(refiner_file))
    direct.set_image(image)
    expected = direct.predict(points=click["points"], labels=click["labels"], multimask=False)
    sam_only = direct.predict(points=click["points"], labels=click["labels"], multimask=False, refine=False)
    assert expected.masks[0].sum() > sam_only.masks[0].sum() > 0  # the refiner's +4 grows the mask
    np.testing.assert_array_equal(rle_to_mask(out["masks"][0]["rle"]), expected.masks[0])

    plain = _predict(refined, 1, refine=False, **click)
    assert plain["refined"] is False
    np.testing.assert_array_equal(rle_to_mask(plain["masks"][0]["rle"]), sam_only.masks[0])
    # another image, then back: the refiner follows the image asked for
    assert _predict(refined, 2, **_click(refined, 2))["refined"] is True
    assert _predict(refined, 1, **click)["masks"][0]["rle"] == out["masks"][0]["rle"]
    # a refined mask fed back: SAM's low-res logits are kept
    again = _predict(refined, 1, mask_input={"prediction_id": out["prediction_id"]}, **click)
    assert rle_to_mask(again["masks"][0]["rle"]).any()


def test_refine_without_a_refiner_is_refused(served: Served) -> None:
    click = _click(served, 1)
    assert _predict(served, 1, **click)["refined"] is False
    r = served.post(f"{IMAGES}/1/predict", json={**click, "refine": True})
    assert r.status_code == 422 and "--refiner" in r.json()["detail"]


def test_bad_refiner_fails_at_start(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    project = tmp_path / "p"
    assert main(["serve", str(project), "--refiner", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samkit: error: unknown refiner") and "\n" not in err
    monkeypatch.setattr(refine_file, "BUNDLED_DIR", tmp_path)  # an install that lost the bundled refiner
    assert main(["serve", str(project), "--refiner", "samkit_tiny_ref"]) == 2
    assert "samkit_tiny_ref is not bundled yet" in capsys.readouterr().err
    other = save_refiner(SamRefiner(RefinerConfig(sam_arch="sam_vit_b", sam_img_size=1024)), tmp_path / "b.safetensors")
    assert main(["serve", str(project), "--refiner", str(other)]) == 2
    assert "the refiner was trained for sam_vit_b" in capsys.readouterr().err
    assert not project.exists()  # nothing made for a server that did not start
