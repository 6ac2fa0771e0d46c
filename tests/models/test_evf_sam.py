"""EVF-SAM: BEiT-3 + SAM layout, numeric parity with shared/parity/evf_sam_vit_b.npz, checkpoint
directories (Hugging Face format), the registry entries and the XLM-R tokenizer wrapper.

Parity tolerances (shared/parity/README.md): low-res logits and IoU within 1e-3, full-resolution mask
signs agree on >= 99.99 % of pixels; fused CLS and prompt token within 1e-3 (measured: ~3e-6).
"""
from __future__ import annotations

import dataclasses
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from samkit.errors import CheckpointError, DownloadError, SamkitError
from samkit.models import build_sam, registry
from samkit.models.beit3 import BEIT3_CONFIGS, Beit3
from samkit.models.evf_load import evf_config, save_evf_directory
from samkit.models.evf_sam import EvfSam, beit3_image, pad_token_ids
from samkit.models.load import load_model
from samkit.models.text_tokenizer import BOS, EOS, UNK, XlmrTokenizer, truncate_ids
from samkit.predict.predictor import Predictor
from tests.text_models import TINY_BEIT3, tiny_evf, train_tokenizer

PROMPT_TOL = 1e-3


# -------------------------------------------------------------------------------------------- layout


def test_state_dict_matches_released_manifest(parity_dir):
    """ViT-H + BEiT-3 large: exactly the keys, shapes and dtypes of the released EVF-SAM checkpoint."""
    manifest = json.loads((parity_dir / "evf_sam_vit_h.keys.json").read_text())
    with torch.device("meta"):
        model = registry.resolve_name("evf_sam").builder()
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    theirs = {k: (v["shape"], v["dtype"]) for k, v in manifest.items()}
    assert sorted(set(theirs) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(theirs)) == [], "unexpected keys"
    assert [k for k in ours if ours[k] != theirs[k]] == [], "shape/dtype mismatches"
    assert model.backbone == "sam_vit_h" and model.beit3.cfg == BEIT3_CONFIGS["large"]


def test_base_config_layout():
    with torch.device("meta"):
        beit = Beit3(BEIT3_CONFIGS["base"])
    sd = beit.state_dict()
    assert len({k.split(".")[2] for k in sd if k.startswith("encoder.layers.")}) == 12
    assert sd["encoder.layers.11.ffn.B.fc1.weight"].shape == (3072, 768)
    assert sd["encoder.embed_positions.A.weight"].shape == (199, 768)
    assert sd["encoder.embed_positions.B.weight"].shape == (1024, 768)
    assert sd["text_embed.weight"].shape == (64010, 768)


def test_any_backbone_and_bad_options():
    with torch.device("meta"):
        model = build_sam.build_evf_sam("mobile_sam", "base")
    assert model.backbone == "mobile_sam" and isinstance(model, EvfSam)
    assert model.text_hidden_fcs[0][0].weight.shape == (768, 768)
    assert model.text_hidden_fcs[0][2].weight.shape == (256, 768)
    with pytest.raises(SamkitError, match="text_encoder must be one of base, large"):
        load_model("evf_sam", pretrained=False, text_encoder="huge")
    with pytest.raises(SamkitError, match="unknown model 'sam_vit_q'"):
        load_model("evf_sam", pretrained=False, backbone="sam_vit_q")
    with pytest.raises(SamkitError, match="sam_vit_b does not take the option"):
        load_model("sam_vit_b", pretrained=False, backbone="sam_vit_b")


def test_load_model_builds_any_backbone_with_random_weights():
    with pytest.warns(UserWarning, match="random weights"):
        model = load_model("evf_sam", pretrained=False, backbone="samkit_tiny", text_encoder=TINY_BEIT3)
    assert model.weights == "random" and not model.training
    assert model.backbone == "samkit_tiny" and model.img_size == build_sam.SAMKIT_TINY_SIZE
    assert model.max_text_tokens == 64


# ---------------------------------------------------------------------------------- BEiT-3 behaviour


def test_preprocessing_matches_fixture(parity_dir):
    ref = np.load(parity_dir / "evf_sam_vit_b.npz")
    x = beit3_image(ref["image"])
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert np.abs(x.numpy() - ref["images_evf"]).max() <= 1e-5


def test_padding_does_not_change_the_fused_cls():
    """A padded batch gives each sentence the CLS it gets alone (padding is masked out of attention)."""
    model = tiny_evf()
    image = torch.randn(1, 3, 224, 224)
    seqs = [[BOS, 70, 4089, 5, EOS], [BOS, 99, EOS]]
    ids, padding = pad_token_ids(seqs)
    assert padding is not None and padding.tolist() == [[False] * 5, [False] * 3 + [True] * 2]
    with torch.inference_mode():
        batch = model.text_prompt(image, ids, padding)
        alone = [model.text_prompt(image, torch.tensor([s])) for s in seqs]
    assert batch.shape == (2, 1, 256)
    for i in range(2):
        torch.testing.assert_close(batch[i:i + 1], alone[i], atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        unmasked = model.text_prompt(image, ids, None)  # attending to the pads changes the short sentence
    assert not torch.allclose(unmasked[1], batch[1], atol=1e-4)


def test_text_length_limit_of_the_positions():
    model = tiny_evf()
    with pytest.raises(ValueError, match="exceed the model's limit of 64"):
        model.fused_cls(torch.zeros(1, 3, 224, 224), torch.zeros(1, 65, dtype=torch.long))


# ------------------------------------------------------------------------------------------ tokenizer


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("spm"))


def test_tokenizer_follows_the_xlmr_id_mapping(spm_file):
    """<s>=0 ... </s>=2, sentencepiece id k -> k+1 (fairseq offset), sentencepiece <unk> (0) -> 3."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_file))
    tok = XlmrTokenizer(spm_file)
    text = "the man in the red shirt"
    ids = tok.encode(text)
    assert ids[0] == BOS and ids[-1] == EOS
    assert ids[1:-1] == [i + 1 for i in sp.encode(text)]
    assert UNK in tok.encode("€")  # a character the model never saw
    assert tok.vocab_size == len(sp) + 2


def test_tokenizer_file_errors(tmp_path):
    bad = tmp_path / "sentencepiece.bpe.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable sentencepiece model"):
        XlmrTokenizer(bad)


def test_truncation_keeps_the_end_token():
    assert truncate_ids([0, 5, 6, 7, 8, 2], 4) == [0, 5, 6, 2]
    assert truncate_ids([0, 5, 6, 7, 8], 4) == [0, 5, 6, 7]
    assert truncate_ids([0, 5, 2], 4) == [0, 5, 2]


def test_semantic_prefix(spm_file):
    model = tiny_evf(spm_file)
    assert model.tokenize("sky", semantic=True) == model.tokenizer.encode("[semantic] sky")
    assert model.tokenize("sky") == model.tokenizer.encode("sky")
    with torch.device("meta"):
        multitask = registry.resolve_name("evf_sam_multitask").builder(backbone="mobile_sam", text_encoder="base")
    assert multitask.supports_semantic and multitask.arch == "evf_sam_multitask"
    assert not model.supports_semantic


# ------------------------------------------------------------------------------------ numeric parity


@pytest.fixture(scope="module")
def parity(parity_dir, fill_state_dict):
    """EVF layout with a SAM ViT-B inside, fill.py weights, and the fixture; Predictor with the image set."""
    ref = dict(np.load(parity_dir / "evf_sam_vit_b.npz"))
    with torch.device("meta"):  # fill.py replaces every weight: skip the random init
        model = registry.resolve_name("evf_sam").builder(backbone="sam_vit_b")
    model.load_state_dict(fill_state_dict(model.state_dict()), strict=True, assign=True)
    pred = Predictor(model.eval())
    pred.set_image(ref["image"])
    return pred, ref


@pytest.mark.slow
def test_parity_fused_cls_and_prompt_token(parity):
    pred, ref = parity
    assert np.abs(pred.text_image.numpy() - ref["images_evf"]).max() <= 1e-5
    images, ids = torch.from_numpy(ref["images_evf"]), torch.from_numpy(ref["input_ids"])
    with torch.inference_mode():
        fused = pred.model.fused_cls(images, ids).numpy()
        token = pred.model.text_hidden_fcs[0](torch.from_numpy(fused)).numpy()
    assert fused.shape == (1, 1, 1024) and token.shape == (1, 1, 256)
    assert np.abs(fused - ref["fused_cls"]).max() <= PROMPT_TOL
    assert np.abs(token - ref["prompt_token"]).max() <= PROMPT_TOL


@pytest.mark.slow
def test_parity_predictor_text_tokens_end_to_end(parity):
    pred, ref = parity
    out = pred.predict(text_tokens=ref["input_ids"][0].tolist(), multimask=False)
    want = ref["mask_logits"][0].astype(np.float32)
    assert out.logits.shape == want.shape == (1, 321, 481)
    assert np.abs(out.low_res_logits - ref["low_res_logits"][0]).max() <= 1e-3
    assert np.abs(out.scores - ref["iou_predictions"][0]).max() <= 1e-3
    assert ((out.logits > 0) == (want > 0)).mean() >= 0.9999
    assert pred.predict(text_tokens=ref["input_ids"][0]).scores.shape == (1,)  # text: one mask by default


# ------------------------------------------------------------------------- checkpoint directories


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, spm_file) -> EvfSam:
    model = tiny_evf(spm_file)
    with torch.no_grad():  # fp16-representable weights, so an fp16 directory round-trips exactly
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())
    return model


def _outputs(model: EvfSam, image: np.ndarray) -> tuple[np.ndarray, ...]:
    pred = Predictor(model)
    pred.set_image(image)
    out = pred.predict(text="a dog on the left", points=[[30, 40]], labels=[1])
    return out.low_res_logits, out.scores


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)


@pytest.mark.parametrize("safetensors, stem, ext", [(True, "model", "safetensors"), (False, "pytorch_model", "bin")])
def test_sharded_fp16_round_trip(tiny, tmp_path, image, safetensors, stem, ext):
    out = save_evf_directory(tiny, tmp_path / "ckpt", safetensors=safetensors, dtype=torch.float16,
                             max_shard_bytes=4 << 20)
    assert (out / f"{stem}.{ext}.index.json").is_file() and len(list(out.glob(f"{stem}-*.{ext}"))) > 1
    assert not (out / f"{stem}.{ext}").exists()  # only the shards and their index
    loaded = load_model("evf_sam", checkpoint=out)
    assert loaded.weights == str(out) and not loaded.training
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in tiny.state_dict().items())
    assert loaded.tokenizer is not None and loaded.backbone == "samkit_tiny" and loaded.img_size == tiny.img_size
    # same weights (checked exactly above); outputs to float rounding: the predictor's thread count may
    # differ between the two calls (adaptive threads), and with it the order of float sums
    for a, b in zip(_outputs(loaded, image), _outputs(tiny, image), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pytorch_bin_round_trip_and_directory_path(tiny, tmp_path, image):
    out = save_evf_directory(tiny, tmp_path / "ckpt", safetensors=False)
    assert (out / "pytorch_model.bin").is_file() and (out / "sentencepiece.bpe.model").is_file()
    loaded = load_model(out)  # a directory alone: recognised as an EVF-SAM checkpoint
    assert isinstance(loaded, EvfSam)
    for a, b in zip(_outputs(loaded, image), _outputs(tiny, image), strict=False):
        np.testing.assert_array_equal(a, b)


def test_meta_build_path_loads_every_weight(tmp_path):
    """A ViT backbone (no buffers outside the state dict) is built on the meta device and loaded by assignment."""
    torch.manual_seed(1)
    model = build_sam.build_evf_sam("sam_vit_b", TINY_BEIT3)
    out = save_evf_directory(model, tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["sam_scale"] == "base" and config["samkit_backbone"] == "sam_vit_b" and "samkit_beit3" in config
    loaded = load_model("evf_sam", checkpoint=out)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_released_config_keys():
    with torch.device("meta"):
        model = build_sam.build_evf_sam()
    config = evf_config(model, torch.float16)
    assert config["sam_scale"] == "huge" and config["mm_extractor_scale"] == "large"
    assert config["hidden_size"] == 1024 and config["out_dim"] == 256 and config["torch_dtype"] == "float16"
    assert "samkit_beit3" not in config


def test_wrong_layout_directory_errors(tiny, tmp_path):
    out = save_evf_directory(tiny, tmp_path / "ckpt", safetensors=False)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "samkit_backbone": "sam_vit_b"}))
    with pytest.raises(CheckpointError, match=r"does not fit `evf_sam`.*Its SAM looks like `mobile_sam`") as err:
        load_model("evf_sam", checkpoint=out)
    assert "missing keys" in str(err.value) or "shape mismatches" in str(err.value)
    (out / "config.json").write_text(json.dumps({**config, "samkit_beit3": None, "mm_extractor_scale": "large",
                                                 "hidden_size": 64}))
    with pytest.raises(CheckpointError, match="hidden_size is 64, but this layout needs 1024"):
        load_model("evf_sam", checkpoint=out)
    (out / "config.json").write_text(json.dumps({"architectures": ["EvfSam2Model"], "sam_scale": "large"}))
    with pytest.raises(CheckpointError, match="EvfSam2Model checkpoints are not supported"):
        load_model("evf_sam", checkpoint=out)
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model("evf_sam", checkpoint=out)
    with pytest.raises(CheckpointError, match="is a directory, but sam_vit_b checkpoints are single files"):
        load_model("sam_vit_b", checkpoint=out)


def test_incomplete_directories(tiny, tmp_path):
    out = save_evf_directory(tiny, tmp_path / "ckpt", max_shard_bytes=4 << 20)
    shard = sorted(out.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing from .*{shard.name}"):
        load_model("evf_sam", checkpoint=out)
    for f in out.glob("model*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no weights in .*model.safetensors"):
        load_model("evf_sam", checkpoint=out)


# --------------------------------------------------------------------------------- hub download


class _RepoHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` at ``/<repo>/resolve/main/<name>``; 404 for anything else."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.requests.append(self.path)
        name = self.path.rsplit("/resolve/main/", 1)[-1]
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass


@pytest.fixture
def repo_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _RepoHandler)
    srv.daemon_threads = True
    srv.files, srv.requests = {}, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_registry_entry_downloads_the_repository_into_the_cache(tiny, tmp_path, repo_server, home, monkeypatch):
    src = save_evf_directory(tiny, tmp_path / "src", max_shard_bytes=4 << 20)
    repo_server.files = {f.name: f.read_bytes() for f in src.iterdir()}
    url = f"http://127.0.0.1:{repo_server.server_port}/YxZhang/evf-sam-multitask"
    spec = dataclasses.replace(registry.REGISTRY["evf_sam_multitask"], url=url)
    monkeypatch.setitem(registry.REGISTRY, "evf_sam_multitask", spec)
    model = load_model("evf_sam_multitask", progress=False)
    assert model.arch == "evf_sam_multitask" and model.supports_semantic and model.tokenizer is not None
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny.state_dict().items())
    cached = home / "evf-sam-multitask"
    assert model.weights == str(cached) and (cached / "model.safetensors.index.json").is_file()
    assert not (cached / "pytorch_model.bin").exists()  # only the first weight format the repo has
    requests = len(repo_server.requests)
    load_model("evf_sam_multitask", progress=False)  # complete in the cache: no new request
    assert len(repo_server.requests) == requests


def test_offline_download_names_the_repository_and_the_folder(home, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/YxZhang/evf-sam"
    monkeypatch.setitem(registry.REGISTRY, "evf_sam", dataclasses.replace(registry.REGISTRY["evf_sam"], url=url))
    with pytest.raises(DownloadError) as err:
        load_model("evf_sam", progress=False)
    message = str(err.value)
    assert f"{url}/resolve/main/config.json" in message and str(home / "evf-sam") in message
    assert "sentencepiece.bpe.model" in message and "--checkpoint DIR" in message


def test_registry_entries():
    for name, repo in (("evf_sam", "YxZhang/evf-sam"), ("evf_sam_multitask", "YxZhang/evf-sam-multitask")):
        spec = registry.resolve_name(name)
        assert spec.hub_repo == repo and spec.url == f"https://huggingface.co/{repo}"
