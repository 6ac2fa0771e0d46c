"""The decoder geometry warm-up, stop_at, and the focal weighting option."""
from __future__ import annotations

import json

import pytest
import torch

from samkit.train import train
from samkit.train.losses import sigmoid_focal_loss
from samkit.train.model import build_model
from samkit.train.trainer import read_log
from samkit.train.warmup import box_targets, geometry_warmup
from tests.train.configs import tiny_config


def test_box_targets_by_hand():
    t = box_targets(torch.tensor([[4.0, 0.0, 11.0, 3.0]]), grid=4, stride=4)  # cell centres 1.5, 5.5, 9.5, 13.5
    assert t[0].int().tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.slow
def test_warmup_teaches_box_filling():
    """From random weights the decoder's box-fill dice loss falls well below its plateau (~0.89)."""
    torch.manual_seed(0)
    model = build_model("mobile_sam", 128)
    encoder_before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    logs = []
    final = geometry_warmup(model, 900, 128, batch_size=8, lr=2e-4, log=logs.append, log_every=100)
    assert logs[0]["dice"] > 0.8 and final < 0.6, logs
    assert all(torch.equal(v, model.image_encoder.state_dict()[k]) for k, v in encoder_before.items())


def test_trainer_runs_warmup_once_and_stops_at(tiny_samples, tmp_path):
    cfg = tiny_config(tmp_path / "run", mode="scratch", img_size=128, batch_size=1, steps=4, stop_at=2, bf16=False,
                      loss_size="low", export_fp16=False, save_every=10, decoder_warmup_steps=3, focal_alpha=0.5)
    result = train(cfg, tiny_samples[2:])
    warm = [json.loads(line) for line in (tmp_path / "run" / "warmup_log.jsonl").read_text().splitlines()]
    assert [w["warmup_step"] for w in warm] == [3]
    assert result.steps == 2 and [r["step"] for r in read_log(result.log_path)] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_0000002.pt"]


def test_focal_alpha_weighs_foreground():
    logits = torch.zeros(1, 1, 1, 2)
    fg, bg = torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[0.0, 0.0]]])
    base = 0.25 * torch.log(torch.tensor(2.0))  # p = 0.5: ce = ln 2, (1 - p_t)^2 = 0.25
    assert torch.allclose(sigmoid_focal_loss(logits, fg, alpha=0.25), 0.25 * base)
    assert torch.allclose(sigmoid_focal_loss(logits, bg, alpha=0.25), 0.75 * base)
    assert torch.allclose(sigmoid_focal_loss(logits, fg, alpha=0.5), 0.5 * base)
