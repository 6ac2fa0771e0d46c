"""End to end: a tiny fine-tuning run really trains, logs, checkpoints, resumes bit-for-bit and exports."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import samkit
from samkit.train import AugmentConfig, Trainer, build_model, load_config, read_log, train
from tests.train.configs import STEPS, tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory, tiny_samples):
    cfg = tiny_config(tmp_path_factory.mktemp("train") / "run")
    with torch.random.fork_rng():
        result = train(cfg, tiny_samples)
    return cfg, result


@pytest.mark.slow
def test_loss_goes_down(finetune_run):
    _, result = finetune_run
    losses = [r["loss"] for r in read_log(result.log_path)]
    assert len(losses) == STEPS
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


@pytest.mark.slow
def test_overfits_one_object(tiny_samples, tmp_path):
    """From random weights the decoder first calibrates (focal falls), then learns the mask (dice falls)."""
    disk = dataclasses.replace(tiny_samples[2], masks=tiny_samples[2].masks[:1])
    still = AugmentConfig(hflip=0.0, scale_min=1.0, scale_max=1.0, brightness=0.0, contrast=0.0, saturation=0.0)
    cfg = tiny_config(tmp_path / "overfit", img_size=128, batch_size=1, steps=40, schedule="constant", box_prob=1.0,
                      click_rounds=0, mask_only_rounds=0, augment=still, save_every=40, export_fp16=False)
    log = read_log(train(cfg, [disk]).log_path)
    dice = [r["dice"] for r in log]
    assert np.mean(dice[:5]) > 0.7 and np.mean(dice[-5:]) < 0.25
    assert np.mean([r["loss"] for r in log[-5:]]) < 0.2 * log[0]["loss"]


def test_outputs_exist(finetune_run):
    cfg, result = finetune_run
    out = Path(cfg.out_dir)
    assert result.steps == STEPS and result.model_path == out / "model.pt"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000010.pt", "step_0000015.pt"]
    record = read_log(result.log_path)[-1]
    for key in ("step", "loss", "focal", "dice", "iou_loss", "loss_first", "loss_last", "lr", "images_per_s",
                "peak_mem_mb", "grad_norm"):
        assert key in record
    assert record["step"] == STEPS and record["images_per_s"] > 0 and record["peak_mem_mb"] > 0
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "config.json").is_file() and (out / "model.fp16.safetensors").is_file()


def test_export_loads_with_load_model_and_encoder_stayed_frozen(finetune_run):
    cfg, result = finetune_run
    model = samkit.load_model(result.model_path)
    state = model.state_dict()
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model, cfg.img_size).state_dict()
    assert state.keys() == initial.keys()
    assert all(torch.equal(state[k], initial[k]) for k in state if k.startswith("image_encoder."))
    assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith("mask_decoder."))
    half = samkit.load_model(Path(cfg.out_dir) / "model.fp16.safetensors").state_dict()
    assert all(torch.allclose(half[k].float(), state[k].float(), rtol=1e-2, atol=1e-3) for k in state)


def test_resume_continues_bit_for_bit(finetune_run, tiny_samples, tmp_path):
    cfg, result = finetune_run
    copy = tmp_path / "resumed"
    shutil.copytree(cfg.out_dir, copy)
    (copy / "checkpoints" / "step_0000015.pt").unlink()  # as if the run died after step 10's checkpoint
    (copy / "model.pt").unlink()
    resumed = train(dataclasses.replace(cfg, out_dir=str(copy), resume=True), tiny_samples)
    original, again = read_log(result.log_path), read_log(resumed.log_path)
    assert [r["step"] for r in again] == list(range(1, STEPS + 1))
    for a, b in zip(original, again, strict=False):
        assert (a["loss"], a["lr"], a["grad_norm"]) == (b["loss"], b["lr"], b["grad_norm"])
    exported, reexported = torch.load(result.model_path), torch.load(resumed.model_path)
    assert all(torch.equal(exported[k], reexported[k]) for k in exported)


def test_refuses_to_overwrite_a_run(finetune_run, tiny_samples):
    cfg, _ = finetune_run
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg, tiny_samples)


def test_scratch_mode_trains_the_encoder(tiny_samples, tmp_path):
    cfg = tiny_config(tmp_path / "scratch", mode="scratch", img_size=128, batch_size=1, steps=2, bf16=False,
                      loss_size="low", export_fp16=False, save_every=10)
    result = train(cfg, tiny_samples[2:])
    state = torch.load(result.model_path)
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model, cfg.img_size).state_dict()
    changed = [k for k in state if k.startswith("image_encoder.") and not torch.equal(state[k], initial[k])]
    assert len(changed) > 10
    assert [r["step"] for r in read_log(result.log_path)] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "scratch" / "checkpoints").iterdir()) == ["step_0000002.pt"]


def test_example_config_trains_on_bsds(data_dir, tmp_path):
    """The shipped config, shrunk to 2 steps at 128 px from random weights, through the dataset readers."""
    cfg = load_config(REPO / "configs" / "finetune_mobile_sam_bsds.json")
    spec = dataclasses.replace(cfg.datasets[0], root=str(data_dir / "BSDS500"))  # train split, eval ids excluded
    small = dataclasses.replace(cfg, out_dir=str(tmp_path / "bsds"), init_checkpoint=None, img_size=128, steps=2,
                                batch_size=1, click_rounds=1, mask_only_rounds=1, datasets=[spec], progress=False,
                                export_fp16=False)
    result = train(small)
    assert result.steps == 2 and result.final_loss is not None and result.model_path.is_file()
    again = train(dataclasses.replace(small, resume=True))  # a finished run: nothing to do, same answer
    assert again.steps == 2 and again.final_loss == result.final_loss


def test_first_round_weight_weighs_the_first_prompt(tiny_samples, tmp_path):
    """Round 0 weighted 1e6 gives round 0's gradient alone (as with no correction rounds); weight 1 does not."""
    size = 256
    targets = torch.zeros(2, size, size, dtype=torch.bool)
    targets[0, 40:150, 60:200] = True
    targets[1, 100:220, 20:120] = True
    valid = torch.ones_like(targets)
    features = torch.randn(2, 256, size // 16, size // 16, generator=torch.Generator().manual_seed(0))
    grads = {}
    for name, rounds, weight in (("alone", 0, 1.0), ("heavy", 2, 1e6), ("even", 2, 1.0)):
        cfg = tiny_config(tmp_path / name, click_rounds=rounds, mask_only_rounds=0, first_round_weight=weight,
                          box_prob=0.0, bf16=False, loss_size="low")
        leaf = features.clone().requires_grad_()
        stats = Trainer(cfg, tiny_samples).simulate(leaf, targets, valid, np.random.default_rng(0))
        assert leaf.grad is not None and stats["loss_first"] > 0
        grads[name] = leaf.grad
    scale = grads["alone"].abs().max()
    assert (grads["heavy"] - grads["alone"]).abs().max() < 1e-4 * scale
    assert (grads["even"] - grads["alone"]).abs().max() > 0.05 * scale
