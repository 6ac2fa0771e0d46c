"""load_model: checkpoint files, registry names, cache and download, readable errors."""
from __future__ import annotations

import dataclasses
import hashlib
import socket

import pytest
import torch

from samkit.errors import CheckpointError, DownloadError, SamkitError
from samkit.models import build_sam, registry
from samkit.models.load import load_model


@pytest.fixture(scope="module")
def mobile_ckpt(tmp_path_factory, fill_state_dict):
    """A mobile_sam checkpoint file with deterministic fill.py weights (not the released weights)."""
    model = build_sam.build_mobile_sam()
    state = fill_state_dict(model.state_dict())
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _same_weights(model, state):
    ours = model.state_dict()
    return all(torch.equal(ours[k], v) for k, v in state.items())


def test_file_is_recognised_and_loaded(mobile_ckpt):
    path, state = mobile_ckpt
    model = load_model(path)
    assert model.arch == "mobile_sam" and not model.training
    assert model.weights == str(path)
    assert _same_weights(model, state)


def test_name_with_checkpoint(mobile_ckpt):
    path, state = mobile_ckpt
    assert _same_weights(load_model("mobile_sam", checkpoint=path), state)


def test_half_precision_checkpoint_loads(mobile_ckpt, tmp_path):
    path, state = mobile_ckpt
    half = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, half)
    model = load_model("mobile_sam", checkpoint=half)
    w = model.state_dict()["mask_decoder.iou_token.weight"]
    assert w.dtype == torch.float32
    assert torch.allclose(w, state["mask_decoder.iou_token.weight"], atol=1e-2)


def test_wrong_architecture_names_the_right_one(mobile_ckpt):
    with pytest.raises(CheckpointError, match="does not fit `sam_vit_b`.*looks like a `mobile_sam` checkpoint"):
        load_model("sam_vit_b", checkpoint=mobile_ckpt[0])


def test_unknown_name_and_missing_file():
    with pytest.raises(SamkitError, match="unknown model 'sam_vit_q'.*sam_vit_b"):
        load_model("sam_vit_q")
    with pytest.raises(CheckpointError, match="checkpoint not found: nowhere/model.pth"):
        load_model("nowhere/model.pth")


def test_random_weights_are_never_silent(home):
    with pytest.warns(UserWarning, match="random weights"):
        model = load_model("mobile_sam", pretrained=False)
    assert model.weights == "random"
    assert not home.exists() or not any(home.iterdir())


def _serve_spec(monkeypatch, srv, data: bytes, md5: str):
    spec = dataclasses.replace(registry.REGISTRY["mobile_sam"], url=srv.url, size=len(data), md5_prefix=md5)
    monkeypatch.setitem(registry.REGISTRY, "mobile_sam", spec)
    return spec


def test_download_into_cache_then_reuse(server, home, monkeypatch, mobile_ckpt):
    path, state = mobile_ckpt
    data = path.read_bytes()
    server.payload = data
    spec = _serve_spec(monkeypatch, server, data, hashlib.md5(data).hexdigest())
    model = load_model("mobile_sam", progress=False)
    assert _same_weights(model, state)
    assert (home / spec.filename).read_bytes() == data
    requests = len(server.range_headers)
    load_model("mobile_sam", progress=False)  # from the cache, no new request
    assert len(server.range_headers) == requests == 1


def test_checksum_mismatch_leaves_no_file(server, home, monkeypatch, mobile_ckpt):
    data = mobile_ckpt[0].read_bytes()
    server.payload = data
    spec = _serve_spec(monkeypatch, server, data, "0" * 32)
    with pytest.raises(DownloadError, match="md5"):
        load_model("mobile_sam", progress=False)
    assert not (home / spec.filename).exists()


def test_offline_error_names_url_and_destination(home, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sam_vit_b_01ec64.pth"
    spec = dataclasses.replace(registry.REGISTRY["sam_vit_b"], url=url)
    monkeypatch.setitem(registry.REGISTRY, "sam_vit_b", spec)
    with pytest.raises(DownloadError) as err:
        load_model("sam_vit_b", progress=False)
    assert url in str(err.value) and str(home / "sam_vit_b_01ec64.pth") in str(err.value)
