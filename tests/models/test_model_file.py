"""Exported model files (models/model_file.py) and running a model at another input frame (set_input_size)."""
from __future__ import annotations

import pytest
import torch

import samkit
from samkit.errors import CheckpointError
from samkit.models.build_sam import build_mobile_sam
from samkit.models.image_encoder import ImageEncoderViT
from samkit.models.model_file import ModelFileInfo, read_model_info, write_model_file


def test_write_read_round_trip_keeps_unknown_keys(tmp_path):
    model = build_mobile_sam()
    model.set_input_size(512)
    info = ModelFileInfo(arch="mobile_sam", img_size=512, extra={"amg_pred_iou_thresh": "0.8", "recipe": "x.md"})
    path = write_model_file(model, tmp_path / "model.fp16.safetensors", info)
    back = read_model_info(path)
    assert back == info and back.get("amg_pred_iou_thresh") == "0.8" and back.get("img_size") == 512
    assert back.get("missing", "default") == "default"
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, nothing left over
    loaded = samkit.load_model(path)  # arch from the keys, frame from the metadata
    assert loaded.img_size == 512 and loaded.prompt_encoder.image_embedding_size == (32, 32)
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    assert all(torch.equal(loaded.state_dict()[k].half(), v) for k, v in half.items())


@pytest.mark.parametrize(("key", "good", "bad"), [("amg_crop_n_layers", "0", ["-1", "1.5", "nan", "x"]),
                                                   ("amg_crop_n_points_downscale_factor", "2", ["0", "2.5", "x"])])
def test_recommended_crop_settings_are_whole_numbers(key, good, bad):
    assert ModelFileInfo(extra={key: good}).recommended_amg == {key: float(good)}
    for value in bad:
        with pytest.raises(CheckpointError, match=f"malformed {key}"):
            ModelFileInfo(extra={key: value}).recommended_amg  # noqa: B018 (the property raises)


def test_reader_tolerates_other_checkpoints_and_names_bad_files(tmp_path):
    assert read_model_info(tmp_path / "weights.pth") == ModelFileInfo()
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        read_model_info(bad)


def test_set_input_size_resizes_the_vit_position_embedding():
    encoder = ImageEncoderViT(img_size=1024, embed_dim=32, depth=1, num_heads=2, global_attn_indexes=(0,))
    encoder.set_input_size(256)
    assert encoder.pos_embed.shape[1:3] == (64, 64)  # the weights are unchanged
    with torch.no_grad():
        out = encoder(torch.zeros(1, 3, 256, 256))
    assert out.shape == (1, 256, 16, 16) and encoder.img_size == 256


def test_sam_set_input_size_moves_the_prompt_frame():
    model = build_mobile_sam()
    before = model.dense_pe().shape
    model.set_input_size(256)
    assert before == (1, 256, 64, 64) and model.dense_pe().shape == (1, 256, 16, 16)  # cached grid recomputed
    assert model.prompt_encoder.mask_input_size == (64, 64) and model.image_encoder.img_size == 256
    for bad in (250, 32):
        with pytest.raises(ValueError, match="multiple of 16"):
            model.set_input_size(bad)
