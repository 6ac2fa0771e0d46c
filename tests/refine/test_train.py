"""Refiner training: a few steps on one scripted batch lower the loss; runs resume and export a loadable file."""
from __future__ import annotations

import json

import pytest
import torch

from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, load_refiner
from samkit.train.data import StepBatches
from samkit.train.refiner import RefinerTrainConfig, RefinerTrainer, load_refiner_config, train_refiner
from tests.conftest import REPO


def small_config(tmp_path, **over) -> RefinerTrainConfig:
    base = dict(out_dir=str(tmp_path / "run"), item_size=128, batch_size=2, steps=3, clicks=2, lr=3e-3,
                warmup_steps=0, schedule="constant", device="cpu", progress=False, save_every=1,
                refiner={"work_size": 96, "crop_size": 48, "min_crop": 32})
    return RefinerTrainConfig(**{**base, **over})


@pytest.mark.slow
def test_steps_on_one_batch_lower_the_loss(tmp_path, grabcut):
    # lr 1e-3: at 3e-3 this tiny batch's loss falls for 6 steps, then spikes (see docs/refiner.md)
    trainer = RefinerTrainer(small_config(tmp_path, lr=1e-3), samples=[grabcut[0], grabcut[5]])
    batch = StepBatches(trainer.samples, trainer.cfg)[0]
    losses = []
    for _ in range(16):
        trainer.step = 0  # the same simulated clicks' randomness at every step
        losses.append(trainer.train_step(batch)["loss"])
    assert min(losses[-4:]) < 0.85 * losses[0] and losses[5] < losses[0], losses


def test_resume_and_export(tmp_path, grabcut, tiny):
    cfg = small_config(tmp_path, stop_at=2)
    train_refiner(cfg, samples=[grabcut[1], grabcut[2]])
    log = tmp_path / "run" / "train_log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    path = train_refiner(small_config(tmp_path, resume=True), samples=[grabcut[1], grabcut[2]])
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    refiner = load_refiner(path)
    assert refiner.cfg.work_size == 96 and refiner.cfg.sam_arch == "samkit_tiny"
    assert refiner.file_metadata["train_steps"] == "3"
    Predictor(tiny, refiner=refiner)  # made for samkit_tiny: accepted


def test_init_refiner_starts_from_its_weights(tmp_path, grabcut):
    start = train_refiner(small_config(tmp_path, steps=1), samples=[grabcut[1]])
    trainer = RefinerTrainer(small_config(tmp_path, out_dir=str(tmp_path / "next"), init_refiner=str(start)),
                             samples=[grabcut[1]])
    saved = load_refiner(start).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in trainer.refiner.state_dict().items())
    fresh = RefinerTrainer(small_config(tmp_path, out_dir=str(tmp_path / "fresh")), samples=[grabcut[1]])
    assert not all(torch.equal(v, saved[k]) for k, v in fresh.refiner.state_dict().items())
    # a new work frame / crop size (run-time settings): the same weights, the run's own frame
    reframed = RefinerTrainer(small_config(tmp_path, out_dir=str(tmp_path / "reframed"), init_refiner=str(start),
                                           refiner={"work_size": 128, "crop_size": 48, "min_crop": 32}),
                              samples=[grabcut[1]])
    assert reframed.refiner.cfg.work_size == 128 and reframed.refiner.cfg.crop_size == 48
    assert all(torch.equal(v, saved[k]) for k, v in reframed.refiner.state_dict().items())
    with pytest.raises(ValueError, match="differ"):  # other weights' shapes: refused, not half loaded
        RefinerTrainer(small_config(tmp_path, out_dir=str(tmp_path / "other"), init_refiner=str(start),
                                    refiner={"work_size": 96, "channels": 8}), samples=[grabcut[1]])


@pytest.mark.parametrize("name", ["samkit_tiny_ref", "samkit_tiny_ref_fast", "samkit_tiny_ref_fast8",
                                  "samkit_tiny_ref_fast8b", "samkit_tiny_ref_fast8c", "samkit_tiny_ref_fast160",
                                  "samkit_tiny_ref_fast1b", "samkit_tiny_ref_fast0l", "samkit_tiny_ref_fast1l",
                                  "samkit_tiny_ref_fast1l4", "samkit_tiny_ref_fast1l4c16",
                                  "samkit_tiny_ref_fast1l4b", "samkit_tiny_ref_fast1l4c",
                                  "samkit_tiny_ref_fast1l4d"])
def test_shipped_recipe_parses(name):
    cfg = load_refiner_config(REPO / "configs" / f"{name}.json")
    assert cfg.model == "samkit_tiny"
    assert {d.root.split("/")[-1] for d in cfg.datasets} >= {"DUTS-TR", "ECSSD", "BSDS500"}
    RefinerConfig.from_dict({**cfg.refiner, "sam_arch": cfg.model})  # its refiner settings are known and valid


def test_global_only_training_leaves_the_local_stage_alone(tmp_path, grabcut):
    """local_weight 0 (a refiner run with its selector at "never"): the local stage is neither run nor trained,
    the global stage is; the work-frame blend of the fast layout trains too."""
    cfg = small_config(tmp_path, local_weight=0.0, refiner={"work_size": 96, "trunk_stride": 8, "fine_mix": False,
                                                             "blend_frame": "work", "selector": "never"})
    trainer = RefinerTrainer(cfg, samples=[grabcut[0], grabcut[5]])
    calls = []
    trainer.refiner.local_refiner.register_forward_hook(lambda *a: calls.append(1))
    local0 = {k: v.clone() for k, v in trainer.refiner.local_refiner.state_dict().items()}
    global0 = {k: v.clone() for k, v in trainer.refiner.global_refiner.state_dict().items()}
    out = trainer.train_step(StepBatches(trainer.samples, trainer.cfg)[0])
    assert out["local"] == 0.0 and calls == []
    assert all(torch.equal(v, local0[k]) for k, v in trainer.refiner.local_refiner.state_dict().items())
    assert not all(torch.equal(v, global0[k]) for k, v in trainer.refiner.global_refiner.state_dict().items())
