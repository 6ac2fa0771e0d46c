"""The refiner's stages: shapes, the once-per-image image branch, the selector, crops and paste-back."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samkit.errors import CheckpointError, SamkitError
from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, SamRefiner
from samkit.refine.click_maps import DiskCanvas, click_maps
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
    low = torch.randn(3, tiny.img_size // 4, tiny.img_size // 4)
    out = refiner.refine(low, np.array([[w / 2, h / 2]]), np.array([1]))
    assert out.shape == (3, h, w) and out.dtype == torch.float32
    assert len(refiner.last_local) == 3
    with pytest.raises(SamkitError, match="low-res logits of shape"):
        refiner.refine(torch.randn(3, h, w))  # full-resolution logits are not what it takes


def test_fast_layout_shapes(tiny, grabcut):
    """A trunk at 1/8 of the work frame, no 3x3 at the work frame, blended in the work frame: the fine
    features are cached channels-first (the per-pixel layers run as matrix products) and the answer comes
    back at the image's resolution."""
    cfg = RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, work_size=192, trunk_stride=8,
                        fine_mix=False, blend_frame="work", fine_channels=8)
    refiner = SamRefiner(cfg).eval()
    assert refiner.global_refiner.fusion.mix is None
    sample = grabcut[0]
    h, w = sample.image.shape[:2]
    Predictor(tiny, refiner=refiner).set_image(sample.image)
    st = refiner.state
    eighth = tuple(math.ceil(math.ceil(math.ceil(n / 2) / 2) / 2) for n in st.work_size)
    assert st.features.coarse.shape == (1, cfg.channels, *eighth)
    assert st.features.fine.is_contiguous() and st.features.fine.shape == (1, 8, *st.work_size)
    out = refiner.refine(torch.randn(2, tiny.img_size // 4, tiny.img_size // 4), np.array([[w / 2, h / 2]]),
                         np.array([1]))
    assert out.shape == (2, h, w) and out.dtype == torch.float32


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


@pytest.mark.parametrize("batch,head_hidden", [(1, True), (3, True), (1, False), (3, False)])
def test_per_pixel_head_is_the_convolutions(tiny, batch, head_hidden):
    """Without fine_mix the work-frame layers run as matrix products (pointwise, in place, resize_bilinear) on
    channels-first features: the same answer as the modules' own 1x1 convolutions and F.interpolate, one image
    or a batch, with the head's hidden layer or without it (``head_hidden``)."""
    torch.manual_seed(2)
    cfg = RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, trunk_stride=8, fine_mix=False,
                        head_hidden=head_hidden)
    refiner = SamRefiner(cfg).eval()
    for p in refiner.parameters():
        p.data.normal_(0, 0.1)
    image, maps = torch.randn(1, 3, 64, 96), torch.randn(batch, 3, 64, 96)
    fusion = refiner.global_refiner.fusion
    with torch.inference_mode():
        feats = refiner.global_refiner.image_branch(image, torch.randn(1, cfg.embed_dim, 16, 16))
        assert feats.fine.is_contiguous() and feats.coarse.is_contiguous() and feats.coarse.shape[-2:] == (8, 12)
        feats = feats.expand(batch)  # a multimask click's three answers share the image's features
        fused = fusion(feats, maps)
        fine = feats.fine.contiguous()
        pooled = torch.cat([torch.nn.functional.adaptive_max_pool2d(maps[:, :2], (8, 12)),
                            torch.nn.functional.adaptive_avg_pool2d(maps[:, 2:], (8, 12))], dim=1)
        x = fusion.trunk(torch.relu(feats.coarse.contiguous() + fusion.prompt(pooled)))
        x = torch.nn.functional.interpolate(fusion.lift(x), size=(64, 96), mode="bilinear", align_corners=False)
        hidden = fusion.head.hidden if head_hidden else torch.nn.Identity()
        assert (fusion.head.hidden is None) != head_hidden
        y = fusion.head.out(hidden(torch.relu(x + fine + fusion.fine_prompt(maps))))
    for got, want in zip(fused, (8 * y[:, :1], y[:, 1:]), strict=True):
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


def test_disk_canvas_draws_what_click_maps_draws():
    """Clicks that extend the list are drawn one by one, a list that does not (undo, a new object) from
    scratch; after every step the maps equal click_maps' (disks at the frame's edges included)."""
    rng = np.random.default_rng(3)
    size, radius = (37, 53), 3.0
    canvas = DiskCanvas(size, radius)
    points = torch.tensor(rng.uniform(-4, 57, size=(1, 9, 2)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(-1, 2, size=(1, 9)))
    steps = [3, 4, 5, 9, 2, 6, 0]  # grow, shrink (undo), grow again, none
    for n in steps:
        got = canvas.draw(points[:, :n], labels[:, :n]).clone()
        torch.testing.assert_close(got, click_maps(points[:, :n], labels[:, :n], size, radius), rtol=0, atol=0)
    other = points.clone()
    other[0, 1] += 5  # same length, a different earlier click
    canvas.draw(points[:, :4], labels[:, :4])
    torch.testing.assert_close(canvas.draw(other[:, :4], labels[:, :4]),
                               click_maps(other[:, :4], labels[:, :4], size, radius), rtol=0, atol=0)
    assert canvas.draw(None, None).sum() == 0


def test_disk_canvas_hold_bounds_follow_the_disks():
    """The click floor's bounds, kept box by box as disks are drawn (and reset with them), hold logits exactly
    where a positive or a negative disk alone covers them, at every step of growing and shrinking lists."""
    rng = np.random.default_rng(5)
    size, radius, floor = (37, 53), 3.0, 2.0
    canvas = DiskCanvas(size, radius, floor)
    points = torch.tensor(rng.uniform(-4, 57, size=(1, 14, 2)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(-1, 2, size=(1, 14)))
    for n in [2, 6, 14, 3, 9, 0]:
        disks = canvas.draw(points[:, :n], labels[:, :n])
        logits = 4 * torch.randn(2, 1, *size)
        pos, neg = disks[:, :1] > 0, disks[:, 1:] > 0
        want = torch.where(pos & ~neg, logits.clamp(min=floor), logits)
        want = torch.where(neg & ~pos, want.clamp(max=-floor), want)
        assert torch.equal(canvas.hold(logits.clone()), want), n
    assert torch.equal(DiskCanvas(size, radius).hold(logits.clone()), logits)  # floor 0: unchanged


def test_click_floor_keeps_clicked_pixels_on_their_side(tiny, grabcut):
    """With click_floor the answer at every clicked pixel is on the clicked side, whatever the network says;
    without it (0) a network that answers background everywhere drops the positive click; a floor needs the
    work-frame blend (refused otherwise)."""
    sample = grabcut[3]
    h, w = sample.image.shape[:2]
    points = np.array([[w * 0.5, h * 0.5], [w * 0.1, h * 0.1], [w * 0.52, h * 0.47]])
    labels = np.array([0, 1, 0])
    sides = {}
    for floor in (0.0, 3.0):
        torch.manual_seed(4)
        refiner = SamRefiner(RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, blend_frame="work",
                                           fine_mix=False, click_floor=floor)).eval()
        with torch.no_grad():  # a network that answers "background, surely" everywhere
            refiner.global_refiner.fusion.head.out.bias.copy_(torch.tensor([-5.0, 10.0]))
        pred = Predictor(tiny, refiner=refiner)
        pred.set_image(sample.image)
        out = pred.predict(points=points, labels=labels, multimask=False)
        sides[floor] = [bool(out.masks[0, int(y), int(x)]) == bool(lab)
                        for (x, y), lab in zip(points, labels, strict=True)]
    assert all(sides[3.0]) and not all(sides[0.0]), sides
    with pytest.raises(CheckpointError, match="click_floor"):
        RefinerConfig(click_floor=2.0).validate()  # blend_frame "image"


@pytest.mark.parametrize("use_global", [True, False])
def test_selector_never_skips_the_selectors_inputs(tiny, grabcut, use_global):
    """With the selector at "never" the global stage hands back no work-frame mask or error map (not computed),
    and the answer is the one a selector that never fires ("dynamic" with an unreachable threshold) gets."""
    cfg = RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, work_size=96, trunk_stride=8,
                        fine_mix=False, blend_frame="work", click_floor=2.0, use_global=use_global)
    refiner = SamRefiner(cfg).eval()
    torch.manual_seed(0)
    for p in refiner.parameters():  # a network that answers something other than SAM
        torch.nn.init.normal_(p, std=0.2)
    sample = grabcut[3]
    h, w = sample.image.shape[:2]
    Predictor(tiny, refiner=refiner).set_image(sample.image)
    low = torch.randn(3, tiny.img_size // 4, tiny.img_size // 4) * 5
    pts, lab = np.array([[w / 2, h / 2], [w / 4, h / 4]]), np.array([1, 0])
    with torch.inference_mode():
        skipped = refiner._global(low, torch.tensor(pts, dtype=torch.float32)[None], torch.tensor(lab)[None],
                                  selecting=False)
    assert skipped[1] is None and skipped[2] is None
    refiner.selector.mode = "never"
    never = refiner.refine(low, pts, lab)
    assert refiner.last_local == [False] * 3
    refiner.selector.mode, refiner.selector.threshold = "dynamic", float("inf")
    torch.testing.assert_close(refiner.refine(low, pts, lab), never, rtol=0, atol=0)
    torch.testing.assert_close(never, skipped[0], rtol=0, atol=0)
    assert refiner.last_local == [False] * 3


def test_small_global_stage_runs_on_one_thread(tiny, grabcut, monkeypatch):
    """The fast layout's per-click network (a 24x18 trunk grid per mask) is a small call: one thread where OpenMP
    threads sleep at once, as samkit_tiny's decoder call; with a 3x3 layer over the work frame (fine_mix) it counts
    the work frame too."""
    monkeypatch.delenv("SAMKIT_THREADS", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what default_threads reads (libgomp has read its own)
    cfg = RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, work_size=192, trunk_stride=8,
                        fine_mix=False, blend_frame="work", fine_channels=8)
    refiner = SamRefiner(cfg).eval()
    sample = grabcut[0]
    h, w = sample.image.shape[:2]
    Predictor(tiny, refiner=refiner).set_image(sample.image)
    gh, gw = (-(-n // 8) for n in refiner.state.work_size)
    assert refiner.click_rows(1) == gh * gw and refiner.click_rows(3) == 3 * gh * gw
    seen = []
    refiner.global_refiner.fusion.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        refiner.refine(torch.randn(1, tiny.img_size // 4, tiny.img_size // 4), np.array([[w / 2, h / 2]]),
                       np.array([1]))
        after = torch.get_num_threads()
        refiner.refine(torch.randn(1, tiny.img_size // 4, tiny.img_size // 4), np.array([[w / 2, h / 2]]),
                       np.array([1]), threads=2)  # a count the predictor fixed wins
        fixed = Predictor(tiny, refiner=refiner, threads=2)
        fixed.set_image(sample.image)
        fixed.predict(points=[[w / 2, h / 2]], labels=[1], multimask=False)
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2, 2] and after == 2  # the setting is restored after the call
    wide = SamRefiner(RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, work_size=64)).eval()
    Predictor(tiny, refiner=wide).set_image(sample.image)
    wh, ww = wide.state.work_size
    assert wide.click_rows(1) == -(-wh // 4) * -(-ww // 4) + wh * ww
