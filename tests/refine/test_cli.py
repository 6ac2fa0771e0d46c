"""The refiner on the command line: train-refiner, eval interactive --refiner, segment --refine, and their errors."""
from __future__ import annotations

import json

import pytest

from samkit.refine import save_refiner
from tests.cli_helpers import assert_error, run_cli


@pytest.fixture()
def refiner_file(refiner, tmp_path):
    return save_refiner(refiner, tmp_path / "ref.fp16.safetensors")


@pytest.mark.slow
def test_train_refiner(tmp_path, data_dir):
    cfg = {"out_dir": str(tmp_path / "run"), "model": "samkit_tiny",
           "datasets": [{"kind": "grabcut", "root": str(data_dir / "GrabCut")}], "item_size": 128, "batch_size": 1,
           "steps": 1, "clicks": 2, "device": "cpu", "progress": False, "refiner": {"work_size": 96}}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    r = run_cli("train-refiner", path)
    assert r.code == 0, r.err
    assert (tmp_path / "run" / "refiner.fp16.safetensors").is_file() and "refiner:" in r.out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**cfg, "clicks": 0}))
    assert_error(run_cli("train-refiner", bad), tmp_path / "none", "clicks")


@pytest.mark.slow
def test_eval_interactive_with_refiner(tmp_path, data_dir, refiner_file):
    out = tmp_path / "eval"
    r = run_cli("eval", "interactive", "--dataset", "grabcut", "--root", data_dir / "GrabCut", "--max-samples", 1,
                "--max-clicks", 2, "--refiner", refiner_file, "--out", out)
    assert r.code == 0, r.err
    report = json.loads(next(out.glob("*.json")).read_text())
    assert report["refiner"] == str(refiner_file) and len(report["boundary_iou_at_k"]) == 2
    assert_error(run_cli("eval", "edges", "--root", data_dir / "BSDS500", "--refiner", refiner_file,
                         "--out", tmp_path / "e2"), tmp_path / "e2", "--refiner")


def test_segment_refine(tmp_path, data_dir, refiner_file):
    image = data_dir / "GrabCut" / "data_GT" / "124080.jpg"
    out = tmp_path / "seg"
    r = run_cli("segment", image, "--point", "200,150", "--refine", refiner_file, "--save-logits", "--out", out)
    assert r.code == 0, r.err
    doc = json.loads((out / "masks.json").read_text())
    assert len(doc["annotations"]) == 1 and (out / "mask_0.png").is_file() and (out / "logits_0.npy").is_file()
    missing = tmp_path / "seg2"
    assert_error(run_cli("segment", image, "--point", "200,150", "--refine", tmp_path / "nope.safetensors",
                         "--out", missing), missing, "unknown refiner")
    bundled = tmp_path / "seg3"  # --refine alone: the bundled samkit_tiny_ref
    r = run_cli("segment", image, "--point", "200,150", "--refine", "--out", bundled)
    assert r.code == 0 and (bundled / "mask_0.png").is_file(), r.err
