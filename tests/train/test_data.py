"""Training items: geometry of the input frame, ignore/padding handling, augmentation, determinism."""
from __future__ import annotations

import numpy as np
import torch

from samkit.data.refer_scenes import ReferScenes
from samkit.data.sample import Sample
from samkit.predict.transforms import PIXEL_MEAN, PIXEL_STD, resized_shape
from samkit.train.config import AugmentConfig, TrainConfig
from samkit.train.data import (
    ReferTorchDataset,
    SampleMix,
    StepBatches,
    as_sequences,
    collate_refer,
    eligible_objects,
    low_res_targets,
    make_item,
)


def test_item_without_augmentation_is_the_inference_frame(tiny_samples):
    sample = tiny_samples[1]  # GrabCut 124080, with an ignore band
    item = make_item(sample, 0, 256, None, np.random.default_rng(0))
    h, w = resized_shape(*sample.image.shape[:2], 256)
    assert item.image.shape == (3, 256, 256) and item.target.shape == item.valid.shape == (256, 256)
    assert item.valid[:h, :w].float().mean() > 0.9 and not item.valid[h:].any() and not item.valid[:, w:].any()
    assert not item.valid[:h, :w].all()  # the ignore band is left out
    assert not (item.target & ~item.valid).any()
    assert torch.all(item.image[:, h:] == 0)  # padding is zero after normalisation, as in preprocess
    top_left = sample.image[0, 0].astype(np.float32)
    expected = (top_left - np.array(PIXEL_MEAN)) / np.array(PIXEL_STD)
    assert np.allclose(item.image[:, 0, 0].numpy(), expected, atol=0.15)
    area = sample.masks[0].mean() * h * w
    assert abs(item.target.sum().item() - area) / area < 0.1


def test_flip_and_scale_keep_the_object():
    sample = Sample("bar", np.zeros((64, 64, 3), dtype=np.uint8), np.zeros((1, 64, 64), dtype=bool))
    sample.masks[0, 10:20, 2:12] = True  # near the left edge
    flip = AugmentConfig(hflip=1.0, scale_min=1.0, scale_max=1.0, brightness=0, contrast=0, saturation=0)
    item = make_item(sample, 0, 128, flip, np.random.default_rng(0))
    cols = torch.nonzero(item.target.any(0)).flatten()
    assert cols.min() >= 128 - 24 - 1 and cols.max() <= 128 - 4  # mirrored to the right edge
    zoom = AugmentConfig(hflip=0.0, scale_min=2.0, scale_max=2.0)
    for seed in range(10):  # 256 px image cropped to 128: the window always holds part of the object
        item = make_item(sample, 0, 128, zoom, np.random.default_rng(seed))
        assert item.target.any() and item.valid.all()


def test_colour_jitter_is_mild():
    sample = Sample("flat", np.full((32, 32, 3), 128, dtype=np.uint8), np.ones((1, 32, 32), dtype=bool))
    aug = AugmentConfig(hflip=0, scale_min=1, scale_max=1)
    plain = make_item(sample, 0, 64, None, np.random.default_rng(0)).image
    for seed in range(5):
        jittered = make_item(sample, 0, 64, aug, np.random.default_rng(seed)).image
        delta = (jittered - plain)[:, :64, :64].abs().max().item() * max(PIXEL_STD)
        assert delta < 0.25 * 128


def test_tiny_objects_are_skipped():
    masks = np.zeros((2, 100, 100), dtype=bool)
    masks[0, :2, :2] = True  # 4 px of 10000
    masks[1, 10:60, 10:60] = True
    sample = Sample("two", np.zeros((100, 100, 3), dtype=np.uint8), masks)
    assert eligible_objects(sample, 1e-3).tolist() == [1]
    assert eligible_objects(sample, 1e-4).tolist() == [0, 1]


def test_low_res_targets():
    t = torch.zeros(1, 8, 8, dtype=torch.bool)
    t[0, :4, :6] = True
    low_t, low_v = low_res_targets(t, torch.ones_like(t))
    assert low_t.shape == (1, 2, 2) and low_t[0].tolist() == [[True, True], [False, False]] and low_v.all()


def test_batches_depend_only_on_seed_and_step(tiny_samples):
    cfg = TrainConfig(img_size=128, batch_size=3, steps=10)
    batches = StepBatches(SampleMix(as_sequences(tiny_samples)), cfg)
    a, b, c = batches[4], batches[4], batches[5]
    assert a["images"].shape == (3, 3, 128, 128) and a["targets"].dtype == torch.bool
    assert a["names"] == b["names"]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
    assert not torch.equal(a["images"], c["images"])
    assert all(t.any() for t in a["targets"])


def test_sample_mix_repeat_weights():
    one = [Sample("a", np.zeros((8, 8, 3), dtype=np.uint8), np.ones((1, 8, 8), dtype=bool))]
    two = [Sample("b", np.zeros((8, 8, 3), dtype=np.uint8), np.ones((1, 8, 8), dtype=bool))]
    mix = SampleMix([one, two], repeats=[3, 1])
    rng = np.random.default_rng(0)
    names = [mix.draw(rng).name for _ in range(2000)]
    assert 0.7 < names.count("a") / len(names) < 0.8


def test_unlabelled_image_has_no_eligible_objects():
    empty = Sample("bg", np.zeros((8, 10, 3), np.uint8), np.zeros((0, 8, 10), bool))
    assert eligible_objects(empty, 1e-4).size == 0


def test_refer_torch_dataset_batches() -> None:
    scenes = ReferScenes(None, "val", length=3, image_size=128)
    samples = list(scenes)
    data = ReferTorchDataset(scenes, img_size=128, augment=AugmentConfig(hflip=1.0, scale_min=1.0, scale_max=1.0))
    assert data.augment.hflip == 0.0  # a mirror image would swap "left" and "right"
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3, collate_fn=collate_refer)))
    assert batch["images"].shape == (3, 3, 128, 128) and batch["images"].dtype == torch.float32
    assert batch["targets"].shape == (3, 128, 128) and batch["targets"].dtype == torch.bool
    assert batch["texts"] == [s.sentence for s in samples] and batch["names"] == scenes.names
    assert batch["valid"].all()
    for k in range(3):  # same frame (no resize at img_size == image_size), no flip: the target is unchanged
        assert np.array_equal(batch["targets"][k].numpy(), samples[k].mask)
