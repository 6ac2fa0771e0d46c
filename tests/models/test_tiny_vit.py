"""MobileSAM's TinyViT image encoder: checkpoint layout, numerical parity, shapes."""
from __future__ import annotations

import itertools
import json

import numpy as np
import torch

from samkit.models.tiny_vit import TinyViT, bias_index
from samkit.predict.transforms import preprocess

PREFIX = "image_encoder."


def filled_encoder(fill_state_dict) -> TinyViT:
    """Eval-mode TinyViT with the parity weights (``fill.py`` is keyed by the full checkpoint name)."""
    model = TinyViT().eval()
    full = fill_state_dict({PREFIX + k: v for k, v in model.state_dict().items()})
    model.load_state_dict({k[len(PREFIX):]: v for k, v in full.items()}, strict=True)
    return model


def test_state_dict_matches_manifest(parity_dir):
    manifest = json.loads((parity_dir / "mobile_sam_vit_t.keys.json").read_text())
    expected = {k[len(PREFIX):]: tuple(v["shape"]) for k, v in manifest.items() if k.startswith(PREFIX)}
    actual = {k: tuple(v.shape) for k, v in TinyViT().state_dict().items()}

    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    assert not missing, f"{len(missing)} keys missing, first: {missing[:5]}"
    assert not unexpected, f"{len(unexpected)} unexpected keys, first: {unexpected[:5]}"
    assert not wrong_shape, "shape mismatch, first: " + ", ".join(
        f"{k}: {actual[k]} != {expected[k]}" for k in wrong_shape[:5])


def test_features_match_reference(parity_dir, fill_state_dict):
    npz = np.load(parity_dir / "mobile_sam_vit_t.npz")
    x, input_size = preprocess(np.array(npz["image"]))
    assert input_size == tuple(int(v) for v in npz["input_size"])
    model = filled_encoder(fill_state_dict)
    with torch.inference_mode():
        features = model(x)
    expected = torch.from_numpy(npz["features"])
    assert features.shape == expected.shape == (1, 256, 64, 64)
    diff = (features - expected).abs().max().item()
    assert diff <= 1e-3, f"max |features diff| = {diff:.3e}"


def test_random_weights_batch_shape():
    torch.manual_seed(0)
    model = TinyViT().eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 1024, 1024))
    assert out.shape == (2, 256, 64, 64)
    assert torch.isfinite(out).all()


def test_bias_index_matches_first_appearance_order():
    """Offsets are numbered in the order a row-major scan first meets them (checkpoint layout)."""
    for h, w in [(7, 7), (3, 5)]:
        points = list(itertools.product(range(h), range(w)))
        seen: dict[tuple[int, int], int] = {}
        ref = [[seen.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(seen)) for b in points] for a in points]
        assert torch.equal(bias_index(h, w), torch.tensor(ref))


def test_bias_cache_and_training_paths_agree():
    """Cached (inference) and uncached (autograd) eval paths agree; the cache follows weight updates;
    training mode back-propagates into the attention biases."""
    torch.manual_seed(0)
    model = TinyViT(img_size=256, num_classes=0).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        cached = model(x)
    assert cached.shape == (1, 256, 16, 16)
    uncached = model(x)  # grad enabled: biases gathered afresh
    torch.testing.assert_close(cached, uncached.detach(), rtol=0, atol=1e-5)

    with torch.no_grad():  # in place, as load_state_dict would do
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.add_(torch.randn_like(p))
    with torch.inference_mode():
        updated = model(x)
    assert (updated - cached).abs().max() > 1e-4

    model.train()
    model(x).square().mean().backward()
    grad = model.layers[1].blocks[0].attn.attention_biases.grad
    assert grad is not None and grad.abs().sum() > 0
