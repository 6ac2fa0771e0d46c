"""The test-time mirror ensemble: the frame mirror's arithmetic, and Predictor(mirror=True) against two plain
predictors (the image and its mirror) averaged by hand, on a real photo with the bundled samkit_tiny."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import samkit
from samkit.errors import SamkitError
from samkit.predict.mirror import mirror_boxes, mirror_low_res, mirror_matrix, mirror_points
from samkit.predict.predictor import Predictor


def test_mirror_matrix_flips_the_content_and_is_its_own_inverse():
    assert torch.equal(mirror_matrix(80, 80.0), torch.eye(80).flip(1))  # content as wide as the grid: a flip
    m = mirror_matrix(60, 53.0)  # content 53 of 60 columns wide: those 53 flipped, twice is the identity
    x = torch.randn(2, 5, 60)
    assert torch.allclose((x @ m)[..., :53], x[..., :53].flip(-1))
    assert torch.allclose((m @ m)[:53, :53], torch.eye(53))
    half = mirror_matrix(60, 53.5)  # a fractional width: each column interpolates two, weights summing to 1
    assert torch.allclose(half.sum(0), torch.ones(60))
    assert torch.allclose(mirror_low_res(x, 53.5)[..., 10], (x[..., 42] + x[..., 43]) / 2)


def test_mirror_points_and_boxes_round_trip():
    pts = torch.tensor([[[0.0, 3.0], [10.5, 7.0]]])
    assert torch.equal(mirror_points(pts, 20)[..., 0], torch.tensor([[19.0, 8.5]]))
    assert torch.equal(mirror_points(mirror_points(pts, 20), 20), pts)
    boxes = torch.tensor([[2.0, 1.0, 5.0, 4.0]])
    assert torch.equal(mirror_boxes(boxes, 20), torch.tensor([[14.0, 1.0, 17.0, 4.0]]))  # x0 <= x1 kept
    assert torch.equal(mirror_boxes(mirror_boxes(boxes, 20), 20), boxes)


@pytest.fixture(scope="module")
def tiny():
    return samkit.load_model("samkit_tiny")


@pytest.fixture(scope="module")
def photo(data_dir, tiny):
    """A landscape GrabCut photo resized to the model's frame width: original and frame pixels coincide."""
    im = Image.open(data_dir / "GrabCut" / "data_GT" / "124080.jpg").convert("RGB")
    w = tiny.img_size
    return np.asarray(im.resize((w, round(im.height * w / im.width)), Image.BILINEAR))


@pytest.mark.parametrize("threads", [1, 2])  # the batch of 2 on one and on two threads
def test_mirror_predictor_averages_the_image_and_its_mirror(tiny, photo, threads):
    h, w = photo.shape[:2]
    both = Predictor(tiny, threads=threads, mirror=True)
    both.set_image(photo)
    plain, mirrored = Predictor(tiny, threads=1), Predictor(tiny, threads=1)
    plain.set_image(photo)
    mirrored.set_image(np.ascontiguousarray(photo[:, ::-1]))
    rows, cols = (4 * n for n in both.image_tokens())
    lw = both.input_size[1] * both.low_res_size() / tiny.img_size

    def flip(low: np.ndarray) -> np.ndarray:
        return mirror_low_res(torch.from_numpy(np.ascontiguousarray(low)), lw).numpy()

    # a first click (three masks), then a click with a box and the mask fed back
    pts, labels = np.array([[150.0, 120.0]]), np.array([1])
    out = both.predict(points=pts, labels=labels, multimask=True)
    a = plain.predict(points=pts, labels=labels, multimask=True)
    b = mirrored.predict(points=np.array([[w - 1 - 150.0, 120.0]]), labels=labels, multimask=True)
    expected = (a.low_res_logits + flip(b.low_res_logits)) / 2
    np.testing.assert_allclose(out.low_res_logits[:, :rows, :cols], expected[:, :rows, :cols], atol=2e-4)
    np.testing.assert_allclose(out.scores, (a.scores + b.scores) / 2, atol=1e-5)
    np.testing.assert_allclose(out.logits, plain.upscale(torch.from_numpy(expected)).numpy(), atol=2e-4)
    assert not np.allclose(out.low_res_logits[:, :rows, :cols], a.low_res_logits[:, :rows, :cols], atol=0.05)

    best = int(np.argmax(out.scores))
    pts2, labels2, box = np.array([[150.0, 120.0], [40.0, 30.0]]), np.array([1, 0]), np.array([60.0, 50.0, 260, 200])
    fed = out.low_res_logits[best][None]
    out2 = both.predict(points=pts2, labels=labels2, box=box, mask_input=fed, multimask=False)
    a2 = plain.predict(points=pts2, labels=labels2, box=box, mask_input=fed, multimask=False)
    m_pts = pts2.copy()
    m_pts[:, 0] = w - 1 - pts2[:, 0]
    b2 = mirrored.predict(points=m_pts, labels=labels2, box=np.array([w - 1 - 260, 50.0, w - 1 - 60.0, 200]),
                          mask_input=flip(fed), multimask=False)
    expected2 = (a2.low_res_logits + flip(b2.low_res_logits)) / 2
    np.testing.assert_allclose(out2.low_res_logits[:, :rows, :cols], expected2[:, :rows, :cols], atol=2e-4)
    assert out2.masks.shape == (1, h, w)


def test_mirror_needs_the_image_to_load_an_embedding(tiny, photo, tmp_path):
    plain = Predictor(tiny, threads=1)
    plain.set_image(photo)
    path = tmp_path / "photo.emb.safetensors"
    plain.save_embedding(path)
    both = Predictor(tiny, threads=1, mirror=True)
    assert both.mirror and not plain.mirror
    with pytest.raises(SamkitError, match="mirror image too: pass the image"):
        both.load_embedding(path)
    assert not both.is_image_set  # nothing half-loaded
    both.load_embedding(path, image=photo)
    direct = Predictor(tiny, threads=1, mirror=True)
    direct.set_image(photo)
    kwargs = {"points": [[100, 80]], "labels": [1]}
    np.testing.assert_allclose(both.predict(**kwargs).logits, direct.predict(**kwargs).logits, atol=1e-4)


def test_mirror_needs_a_torch_sam_model():
    class NoSplitDecoder(torch.nn.Module):
        pass

    with pytest.raises(SamkitError, match="mirror=True needs a torch SAM-family model"):
        Predictor(NoSplitDecoder(), mirror=True)  # type: ignore[arg-type]
