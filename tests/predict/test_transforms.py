"""samkit.predict.transforms: low-res logits to the original image and full-resolution masks into the mask-input
frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samkit.predict.transforms import (
    mask_to_low_res_logits,
    postprocess_logits,
    resize_bilinear,
    resized_shape,
    upsample_operators,
    upscale_grid,
)


def _blob(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - 0.6 * w) ** 2 / (0.25 * w) ** 2 + (yy - 0.4 * h) ** 2 / (0.3 * h) ** 2 <= 1.0


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (300, 300), (37, 1000)])
def test_mask_to_low_res_logits_round_trips_through_postprocessing(size):
    mask = _blob(*size)
    low = mask_to_low_res_logits(mask)
    assert low.shape == (1, 256, 256) and low.dtype == np.float32
    assert low.min() >= -20.0 and low.max() <= 20.0
    back = postprocess_logits(torch.from_numpy(low), size, resized_shape(*size, 1024))[0].numpy() > 0
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.97


def test_mask_to_low_res_logits_padding_is_background_and_magnitude_applies():
    full = np.ones((480, 640), dtype=bool)  # input frame 768 x 1024: rows 768.. are padding
    low = mask_to_low_res_logits(full, magnitude=5.0)[0]
    assert np.all(low[:191] == 5.0)
    assert np.all(low[192:] == -5.0)
    assert np.all(mask_to_low_res_logits(np.zeros((10, 10), dtype=np.uint8))[0] == -20.0)


def test_mask_to_low_res_logits_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        mask_to_low_res_logits(np.ones((2, 3, 4), dtype=bool))


@pytest.mark.parametrize("size", [(321, 481), (640, 480), (37, 1000), (1, 5)])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_postprocess_logits_equals_sams_interpolate_chain(size, lead):
    # SAM's own post-processing: bilinear to 1024, crop the un-padded input, bilinear to the original.
    torch.manual_seed(0)
    low = torch.randn(*lead, 256, 256)
    inp = resized_shape(*size, 1024)
    x = low.reshape(-1, 1, 256, 256)
    ref = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)[..., :inp[0], :inp[1]]
    ref = F.interpolate(ref, size, mode="bilinear", align_corners=False).reshape(*lead, *size)
    out = postprocess_logits(low, size, inp)
    assert out.shape == ref.shape and out.dtype == torch.float32 and out.is_contiguous()
    assert float((out - ref).abs().max()) < 1e-4


def test_postprocess_logits_empty_batch():
    out = postprocess_logits(torch.zeros(0, 3, 256, 256), (10, 20), resized_shape(10, 20, 1024))
    assert out.shape == (0, 3, 10, 20)


@pytest.mark.parametrize("img, low", [(1024, 256), (320, 80)])
def test_upscale_grid_covers_exactly_the_cells_the_upsampling_reads(img, low):
    """The image tokens the browser's decoder graph computes: every low-res cell with weight in the
    upsampling to the original size is inside them, and the next token row / column would hold none."""
    rng = np.random.default_rng(0)
    grid = low // 4
    for h, w in [(321, 481), (481, 321), (500, 500), *rng.integers(40, 3000, (40, 2)).tolist()]:
        inp = resized_shape(h, w, img)
        rows_cols = upscale_grid((h, w), inp, low, img, grid)
        for op, kept in zip(upsample_operators((h, w), inp, low, img), rows_cols, strict=True):
            read = int(op.abs().sum(0).nonzero().max()) + 1  # cells with weight
            assert read <= 4 * kept <= 4 * grid
            # at most one token more than the cells with weight need (a zero-weight tap may reach one cell further)
            assert kept == grid or 4 * (kept - 1) <= read
        if max(h, w) > 1.2 * min(h, w):
            assert min(rows_cols) < grid  # the short side's padding is skipped


@pytest.mark.parametrize(("src", "dst"), [((18, 24), (144, 192)), ((7, 5), (3, 11)), ((32, 32), (32, 32))])
def test_resize_bilinear_equals_interpolate(src, dst):
    """Up, down (no antialiasing) and same size, with leading batch and channel axes; gradients flow."""
    x = torch.randn(2, 3, *src, requires_grad=True)
    got = resize_bilinear(x, dst)
    want = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cached_operators_differentiable_after_an_inference_call():
    """Operators first built under inference_mode (a click) still serve a differentiable call later in the same
    process (training, export): resize_bilinear's and SAM's upsampling chain's."""
    with torch.inference_mode():
        resize_bilinear(torch.randn(1, 2, 5, 9), (23, 29))
        rows, cols = upsample_operators((31, 37), (24, 28), 8, 32)
    x = torch.randn(1, 2, 5, 9, requires_grad=True)
    resize_bilinear(x, (23, 29)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    low = torch.randn(8, 8, requires_grad=True)
    (rows @ low @ cols.T).sum().backward()
    assert low.grad is not None and low.grad.abs().sum() > 0
