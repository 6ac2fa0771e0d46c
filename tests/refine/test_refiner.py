"""The refiner's stages: shapes, the once-per-image image branch, the selector, crops and paste-back."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samkit.predict.predictor import Predictor
from samkit.refine.click_maps import click_maps
from samkit.refine.crops import crop_box, feather, paste
from samkit.refine.selector import DynamicSelector, error_ratio


def test_small(refiner):
    n = sum(p.numel() for p in refiner.parameters())
    assert n < 1_000_000  # a few MB in fp16 at most


def test_stage_shapes(refiner, tiny, grabcut):
    sample = grabcut[0]
    h, w = sample.image.shape[:2]
    pred = Predictor(tiny, refiner=refiner)
    pred.set_image(sample.image)
    st = refiner.state
    assert st.original_size == (h, w) and max(st.work_size) == refiner.cfg.work_size
    cfg = refiner.cfg
    quarter = tuple(math.ceil(math.ceil(n / 2) / 2) for n in st.work_size)  # two stride-2 convolutions
    assert st.features.coarse.shape == (1, cfg.channels, *quarter)
    assert st.features.fine.shape == (1, cfg.fine_channels, *st.work_size)
    # cached channels-last: the per-click convolutions' fast layout (samkit.refine.layers.channels_last)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in (st.features.coarse, st.features.fine))
    logits = torch.randn(3, h, w)
    out = refiner.refine(logits, np.array([[w / 2, h / 2]]), np.array([1]))
    assert out.shape == (3, h, w) and out.dtype == torch.float32
    assert len(refiner.last_local) == 3


def test_channels_last_is_layout_only(refiner):
    """The refiners run channels-last; their answers equal the same modules' on channels-first tensors."""
    torch.manual_seed(1)
    for p in refiner.parameters():  # an untrained head outputs zeros: give every weight a value
        p.data.normal_(0, 0.1)
    image, maps = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    feats = refiner.global_refiner.image_branch(image, torch.randn(1, refiner.cfg.embed_dim, 16, 16))
    fusion = refiner.global_refiner.fusion
    layouts = []
    fusion.mix.register_forward_hook(lambda m, args, out: layouts.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    fused = fusion(feats, maps)
    assert layouts == [True]
    coarse, fine = feats.coarse.contiguous(), feats.fine.contiguous()
    pooled = torch.cat([torch.nn.functional.adaptive_max_pool2d(maps[:, :2], coarse.shape[-2:]),
                        torch.nn.functional.adaptive_avg_pool2d(maps[:, 2:], coarse.shape[-2:])], dim=1)
    x = fusion.trunk(torch.relu(coarse + fusion.prompt(pooled)))
    x = torch.nn.functional.interpolate(fusion.lift(x), size=fine.shape[-2:], mode="bilinear", align_corners=False)
    expected = fusion.head(fusion.mix(torch.relu(x + fine + fusion.fine_prompt(maps))))
    for got, want in zip(fused, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_image_branch_runs_once_per_image(refiner, tiny, grabcut):
    calls = []
    refiner.global_refiner.image_branch.register_forward_hook(lambda *a: calls.append(1))
    pred = Predictor(tiny, refiner=refiner)
    for sample in (grabcut[0], grabcut[1]):
        pred.set_image(sample.image)
        h, w = sample.image.shape[:2]
        points, labels = [[w // 2, h // 2]], [1]
        for k in range(4):
            pred.predict(points=points, labels=labels, multimask=k == 0)
            points.append([w // 3 + k, h // 3]), labels.append(0)
    assert len(calls) == 2  # two images, eight clicks


def test_untrained_refiner_keeps_sam_answer(refiner, tiny, grabcut):
    """The refiner's logits start at exactly 0: before training its blend only shrinks SAM's logits towards 0
    (by the error map's gate), so SAM's mask is kept (up to resampling at the local crop's edges)."""
    sample = grabcut[2]
    pred = Predictor(tiny, refiner=refiner)
    pred.set_image(sample.image)
    h, w = sample.image.shape[:2]
    sam = pred.predict(points=[[w // 2, h // 2]], labels=[1], refine=False)
    ref = pred.predict(points=[[w // 2, h // 2]], labels=[1], refine=True)
    assert np.abs(ref.logits - sam.logits).max() > 0.1  # the refiner did run
    assert (ref.masks == sam.masks).mean() > 0.995  # the local stage's resampling may flip a few boundary pixels
    np.testing.assert_array_equal(ref.low_res_logits, sam.low_res_logits)


def test_selector():
    err = torch.zeros(100, 100)
    mask = torch.zeros(100, 100, dtype=torch.bool)
    mask[20:60, 20:60] = True  # area 1600
    err[20:30, 20:60] = 0.9  # 400 error pixels
    assert error_ratio(err, mask) == pytest.approx(0.25)
    assert DynamicSelector(0.2)(err, mask) and not DynamicSelector(0.3)(err, mask)
    assert error_ratio(err, torch.zeros_like(mask)) == pytest.approx(4.0)  # empty mask: 1 % of the frame
    assert DynamicSelector(1e9, "always")(torch.zeros(4, 4), mask[:4, :4])
    assert not DynamicSelector(0.0, "never")(err, mask)


def test_click_maps():
    pts = torch.tensor([[[10.0, 5.0], [30.0, 20.0], [0.0, 0.0]]])
    lab = torch.tensor([[1, 0, -1]])
    maps = click_maps(pts, lab, (32, 40), radius=2.0)
    assert maps.shape == (1, 2, 32, 40)
    assert maps[0, 0, 5, 10] == 1 and maps[0, 1, 20, 30] == 1 and maps[0, 0, 20, 30] == 0
    assert maps[0, :, 0, 0].sum() == 0  # padding point draws nothing
    assert maps[0, 0].sum() == 13  # integer pixels within radius 2


def test_crop_box_and_seamless_paste():
    region = np.zeros((50, 50), dtype=bool)
    region[10:14, 20:30] = True  # largest component
    region[40, 40] = True
    box = crop_box(region, (100, 100), None, min_side=16, margin=0.5)
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 == 30 and x0 <= 40 and x1 >= 60 and y0 <= 20 and y1 >= 28
    assert crop_box(np.zeros((5, 5), bool), (100, 100), (99.0, 0.0), 16, 0.5) == (84, 0, 100, 16)
    assert crop_box(np.zeros((5, 5), bool), (100, 100), None, 16, 0.5) is None
    wts = feather((84, 0, 100, 16), (100, 100), width=4)
    assert wts[0, -1] == 1 and wts[0, 0] == pytest.approx(0.2)  # image border: no ramp; inside: ramp
    logits = torch.zeros(100, 100)
    out = paste(logits, torch.full((8, 8), 5.0), (20, 20, 40, 40), width=4)
    assert out[30, 30] == 5 and out[19, 30] == 0 and 0 < out[20, 30] < 1.5  # no step at the crop's edge
