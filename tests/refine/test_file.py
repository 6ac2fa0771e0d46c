"""The refiner file: round trip, bundled name, and one-line errors for foreign, truncated or mismatched files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import samkit
from samkit.errors import CheckpointError
from samkit.models.build_sam import SAMKIT_TINY_SIZE
from samkit.models.load import BUNDLED_DIR
from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, SamRefiner, load_refiner, read_refiner_file, save_refiner
from samkit.refine import file as refine_file


def test_round_trip(refiner, tmp_path):
    path = save_refiner(refiner, tmp_path / "r.fp16.safetensors", {"note": "test"})
    cfg, state, meta = read_refiner_file(path)
    assert cfg == refiner.cfg and meta["note"] == "test" and meta["backbone"] == "samkit_tiny"
    assert meta["img_size"] == str(SAMKIT_TINY_SIZE) and meta["embed_dim"] == "256" and meta["arch"] == "samref"
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    loaded = samkit.load_refiner(path)
    for k, v in refiner.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float())
    assert path.stat().st_size < 4 * 2**20  # a few MB in fp16


def test_round_trip_of_a_smaller_head(tiny, tmp_path):
    """A file whose global head has no hidden layer (``head_hidden`` False, as samkit_tiny_ref) says so
    and loads as such; files written before the setting existed (samkit_tiny_ref_hq) load with the hidden layer."""
    cfg = RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size, head_hidden=False, blocks=1)
    path = save_refiner(SamRefiner(cfg).eval(), tmp_path / "r.fp16.safetensors")
    loaded = load_refiner(path)
    assert loaded.cfg == cfg and loaded.global_refiner.fusion.head.hidden is None
    assert not any("fusion.head.hidden" in k for k in read_refiner_file(path)[1])
    assert load_refiner("samkit_tiny_ref_hq").global_refiner.fusion.head.hidden is not None


def test_bundled_name(tiny, tmp_path, monkeypatch):
    ref = load_refiner("samkit_tiny_ref")  # shipped in samkit/weights, loaded offline
    assert isinstance(ref, SamRefiner) and ref.cfg.sam_arch == tiny.arch
    ref.check_model(tiny)
    assert (BUNDLED_DIR / "samkit_tiny_ref.fp16.safetensors").stat().st_size < 4 * 2**20
    monkeypatch.setattr(refine_file, "BUNDLED_DIR", tmp_path)  # an install that lost the file
    with pytest.raises(CheckpointError, match="samkit_tiny_ref is not bundled yet.*train-refiner"):
        load_refiner("samkit_tiny_ref")


def test_unknown_name():
    with pytest.raises(CheckpointError, match="unknown refiner 'nope'"):
        load_refiner("nope")
    with pytest.raises(CheckpointError, match="samkit_tiny_ref_fast is now called samkit_tiny_ref"):
        load_refiner("samkit_tiny_ref_fast")  # the bundled name before the rename of 2026-12-05


def test_foreign_and_truncated_files(refiner, tmp_path):
    with pytest.raises(CheckpointError, match="not a samkit refiner file"):
        load_refiner(BUNDLED_DIR / "samkit_tiny.fp16.safetensors")  # a model file, not a refiner
    path = save_refiner(refiner, tmp_path / "r.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt|cannot read the metadata") as err:
        load_refiner(cut)
    assert "\n" not in str(err.value)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt|cannot read the metadata"):
        load_refiner(text)


def test_refiner_of_another_model(tiny, tmp_path):
    other = SamRefiner(RefinerConfig(sam_arch="sam_vit_b", sam_img_size=1024))
    path = save_refiner(other, tmp_path / "vitb_ref.safetensors")
    with pytest.raises(CheckpointError, match=r"trained for sam_vit_b \(embedding 256, input frame 1024\), "
                                              rf"not samkit_tiny .*input frame {SAMKIT_TINY_SIZE}"):
        Predictor(tiny, refiner=load_refiner(path))


def test_embedding_of_another_model(refiner):
    with pytest.raises(samkit.SamkitError, match="expects"):
        refiner.set_image(np.zeros((32, 32, 3), np.uint8), torch.zeros(1, 256, 64, 64))
