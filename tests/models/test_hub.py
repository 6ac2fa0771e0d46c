"""samkit.models.hub: downloads against a loopback HTTP server, checkpoint loading, architecture checks."""
from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from samkit.errors import CheckpointError, DownloadError
from samkit.models import hub
from tests.models.loopback import PAYLOAD, PAYLOAD_MD5, WRONG_MD5_PREFIX, LoopbackServer


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "TIMEOUT_S", 5.0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- download


def test_download_verifies_sha256_and_size(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "ckpt.pth"
    out = hub.download(server.url, dest, sha256=_sha256(PAYLOAD).upper(), expected_size=len(PAYLOAD), progress=False)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "models" / "ckpt.pth.part").exists()
    assert server.range_headers == [None]


def test_download_verifies_md5_prefix(server: LoopbackServer, tmp_path: Path) -> None:
    prefix = PAYLOAD_MD5[:6]
    dest = hub.download(server.url, tmp_path / f"sam_vit_x_{prefix}.pth", md5_prefix=prefix)
    assert dest.read_bytes() == PAYLOAD


def test_download_resumes_existing_part(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.pth"
    Path(f"{dest}.part").write_bytes(PAYLOAD[:1000])
    hub.download(server.url, dest, sha256=_sha256(PAYLOAD), progress=False)
    assert server.range_headers == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_download_starts_over_when_server_ignores_range(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.pth"
    Path(f"{dest}.part").write_bytes(b"stale bytes that must not be kept")
    server.honour_range = False
    hub.download(server.url, dest, sha256=_sha256(PAYLOAD), progress=False)
    assert server.range_headers == ["bytes=33-"]
    assert dest.read_bytes() == PAYLOAD


def test_download_starts_over_after_416(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.pth"
    Path(f"{dest}.part").write_bytes(PAYLOAD + b"junk")
    hub.download(server.url, dest, sha256=_sha256(PAYLOAD), progress=False)
    assert server.range_headers == [f"bytes={len(PAYLOAD) + 4}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_download_starts_over_when_range_starts_elsewhere(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.pth"
    Path(f"{dest}.part").write_bytes(PAYLOAD[:1000])
    server.range_skew = 10
    hub.download(server.url, dest, sha256=_sha256(PAYLOAD), progress=False)
    assert server.range_headers == ["bytes=1000-", None]
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connection_keeps_part_then_resumes(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.pth"
    part = Path(f"{dest}.part")
    server.drop_after = 123_456
    with pytest.raises(DownloadError) as err:
        hub.download(server.url, dest, progress=False)
    assert server.url in str(err.value) and str(dest) in str(err.value)
    assert "123456 bytes received so far are kept" in str(err.value)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:123_456]

    server.drop_after = None
    hub.download(server.url, dest, sha256=_sha256(PAYLOAD), progress=False)
    assert server.range_headers[-1] == "bytes=123456-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_download_timeout_keeps_part(server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "TIMEOUT_S", 0.3)
    server.stall_after = 5000
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(DownloadError, match="timed out") as err:
        hub.download(server.url, dest, progress=False)
    assert str(dest) in str(err.value) and not dest.exists()
    assert Path(f"{dest}.part").read_bytes() == PAYLOAD[:5000]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"expected_size": len(PAYLOAD) + 1}, f"expected {len(PAYLOAD) + 1}"),
        ({"sha256": "0" * 64}, f"sha256 is {_sha256(PAYLOAD)}, expected {'0' * 64}"),
        ({"md5_prefix": WRONG_MD5_PREFIX}, f"md5 is {PAYLOAD_MD5}, expected it to start with {WRONG_MD5_PREFIX}"),
    ],
)
def test_download_mismatch_leaves_nothing(
    server: LoopbackServer, tmp_path: Path, kwargs: dict[str, object], expected: str
) -> None:
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(DownloadError, match=re.escape(expected)):
        hub.download(server.url, dest, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_download_unreachable_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/sam_vit_b_01ec64.pth"
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(DownloadError) as err:
        hub.download(url, dest, progress=False)
    message = str(err.value)
    assert url in message and str(dest) in message and "\n" not in message
    assert not dest.exists()


def test_download_http_error(server: LoopbackServer, tmp_path: Path) -> None:
    server.fail_with = 404
    with pytest.raises(DownloadError, match="HTTP 404"):
        hub.download(server.url, tmp_path / "ckpt.pth", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_malformed_url(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="could not download not-a-url"):
        hub.download("not-a-url", tmp_path / "ckpt.pth", progress=False)


def test_cache_dir_respects_samkit_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "home" / "samkit"))
    assert hub.cache_dir() == tmp_path / "home" / "samkit"
    assert hub.cache_dir().is_dir()


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAMKIT_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_dir() == tmp_path / ".cache" / "samkit"
    assert hub.cache_dir().is_dir()


# ----------------------------------------------------------------------------------------------- loading


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.randn(4, 3), "layer.bias": torch.randn(4), "steps": torch.tensor(7)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_plain_torch_save(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    torch.save(state, tmp_path / "plain.pth")
    _assert_same(hub.load_state_dict_file(tmp_path / "plain.pth"), state)


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_load_unwraps_training_checkpoint(tmp_path: Path, state: dict[str, torch.Tensor], wrapper: str) -> None:
    torch.save({wrapper: state, "epoch": 3, "optimizer": {"lr": 1e-4}}, tmp_path / "train.pt")
    _assert_same(hub.load_state_dict_file(str(tmp_path / "train.pt")), state)


def test_load_safetensors(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    save_file(state, tmp_path / "w.safetensors")
    _assert_same(hub.load_state_dict_file(tmp_path / "w.safetensors"), state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_truncated(tmp_path: Path, state: dict[str, torch.Tensor], suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    torch.save(state, full) if suffix == ".pth" else save_file(state, full)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        hub.load_state_dict_file(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_load_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as err:
        hub.load_state_dict_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointError, match="empty") as err:
        hub.load_state_dict_file(path)
    assert str(path) in str(err.value)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "sam_vit_b_01ec64.pth"
    with pytest.raises(CheckpointError, match="not found") as err:
        hub.load_state_dict_file(path)
    assert str(path) in str(err.value)


def test_load_not_a_mapping_of_tensors(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    torch.save({"a": torch.zeros(2), "b": 3}, tmp_path / "mixed.pt")
    for name in ("list.pt", "mixed.pt"):
        with pytest.raises(CheckpointError, match="not a state dict") as err:
            hub.load_state_dict_file(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_load_refuses_pickled_objects(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    torch.save({"model": state, "args": Path("x")}, tmp_path / "objs.pt")
    with pytest.raises(CheckpointError, match="Python objects besides tensors") as err:
        hub.load_state_dict_file(tmp_path / "objs.pt")
    assert str(tmp_path / "objs.pt") in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------------- architecture checks

MANIFEST_ARCH = {
    "sam_vit_b": "sam_vit_b",
    "sam_vit_l": "sam_vit_l",
    "sam_vit_h": "sam_vit_h",
    "mobile_sam_vit_t": "mobile_sam",
    "evf_sam_vit_h": "evf_sam",
}


def _meta_state(manifest: Path) -> dict[str, torch.Tensor]:
    entries = json.loads(manifest.read_text())
    return {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta") for k, v in entries.items()}


def test_guess_architecture_on_parity_manifests(parity_dir: Path) -> None:
    manifests = sorted(parity_dir.glob("*.keys.json"))
    assert {m.name.removesuffix(".keys.json") for m in manifests} == set(MANIFEST_ARCH)
    for manifest in manifests:
        expected = MANIFEST_ARCH[manifest.name.removesuffix(".keys.json")]
        assert hub.guess_architecture(_meta_state(manifest)) == expected, manifest.name


def test_guess_architecture_partial_and_unknown() -> None:
    width_only = {"image_encoder.patch_embed.proj.weight": torch.empty(1024, 3, 16, 16, device="meta")}
    assert hub.guess_architecture(width_only) == "sam_vit_l"
    depth_only = {f"image_encoder.blocks.{i}.norm1.weight": torch.empty(8, device="meta") for i in range(32)}
    assert hub.guess_architecture(depth_only) == "sam_vit_h"
    contradicting = {**depth_only, **width_only}
    assert hub.guess_architecture(contradicting) is None
    assert hub.guess_architecture({"fc.weight": torch.empty(2, 2)}) is None
    assert hub.guess_architecture({}) is None


class _Small(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.image_encoder = nn.Linear(3, width)
        self.head = nn.Linear(width, 2)


class _Other(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)


def test_load_weights_casts_fp16_into_fp32() -> None:
    source = _Small()
    state = {k: v.half() for k, v in source.state_dict().items()}
    target = _Small()
    hub.load_weights(target, state, "small")
    assert target.head.weight.dtype == torch.float32
    assert torch.equal(target.head.weight, source.head.weight.half().float())


def test_load_weights_wrong_architecture_lists_keys() -> None:
    with pytest.raises(CheckpointError) as err:
        hub.load_weights(_Small(), _Other().state_dict(), "small")
    message = str(err.value)
    assert "does not fit `small`" in message
    assert "2 missing keys (image_encoder.weight, image_encoder.bias)" in message
    assert "2 unexpected keys (backbone.weight, backbone.bias)" in message
    assert "looks like" not in message


def test_load_weights_shape_mismatch_and_first_five_only() -> None:
    state = _Small(width=5).state_dict() | {f"extra.{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(CheckpointError) as err:
        hub.load_weights(_Small(width=4), state, "small")
    message = str(err.value)
    assert "7 unexpected keys (extra.0, extra.1, extra.2, extra.3, extra.4, ...)" in message
    assert "3 shape mismatches" in message and "head.weight: checkpoint (2, 5), model (2, 4)" in message
    assert "missing" not in message


def test_load_weights_suggests_guessed_architecture(parity_dir: Path) -> None:
    state = _meta_state(parity_dir / "sam_vit_h.keys.json")
    with pytest.raises(CheckpointError) as err:
        hub.load_weights(_Small(), state, "sam_vit_b")
    message = str(err.value)
    assert "does not fit `sam_vit_b`" in message
    assert "this looks like a `sam_vit_h` checkpoint" in message.lower()
    assert "--model sam_vit_h / load_model('sam_vit_h', checkpoint=...)" in message
