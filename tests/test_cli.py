"""The ``samkit`` CLI: segment / embed / models / demo outputs, and one-line errors (exit 2) for bad input.

The checkpoint used here holds deterministic *test* weights (shared/parity/fill.py, keyed by parameter
name and shape), not the released MobileSAM weights: masks are meaningless but reproducible, which is
all these tests need. MobileSAM is used because its encoder is fast.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samkit.cli.models import SAMPLE_IMAGE
from samkit.models import load as load_module
from samkit.models.registry import REGISTRY, resolve_name
from samkit.predict.predictor import Predictor
from tests.cli_helpers import POINT, Result, assert_error, read_masks, run_cli

# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, fill_state_dict) -> Path:
    """A mobile_sam checkpoint with deterministic test weights (not the released ones)."""
    model = resolve_name("mobile_sam").builder()
    model.load_state_dict(fill_state_dict(model.state_dict()), strict=True)
    path = tmp_path_factory.mktemp("weights") / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def point_run(tmp_path_factory, ckpt) -> tuple[Path, Result]:
    """``segment SAMPLE --point 320,240`` (one mask), shared by several tests."""
    out = tmp_path_factory.mktemp("point") / "out"
    return out, run_cli("segment", SAMPLE_IMAGE, "--point", POINT, "--checkpoint", ckpt, "--out", out)


@pytest.fixture(scope="module")
def embedding(tmp_path_factory, ckpt) -> Path:
    """``samkit embed SAMPLE`` with the test checkpoint."""
    path = tmp_path_factory.mktemp("emb") / "sample.safetensors"
    result = run_cli("embed", SAMPLE_IMAGE, "--checkpoint", ckpt, "--out", path)
    assert result.code == 0, result
    assert "mobile_sam" in result.out and path.is_file()
    return path


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """$SAMKIT_HOME pointing at an empty folder: no model is available locally."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SAMKIT_HOME", str(home))
    return home


@pytest.fixture
def home_with_weights(empty_home, ckpt) -> Path:
    """$SAMKIT_HOME holding the test checkpoint under mobile_sam's released file name."""
    (empty_home / REGISTRY["mobile_sam"].filename).symlink_to(ckpt)
    return empty_home


# ------------------------------------------------------------------------------------------- segment


def test_segment_point_writes_masks_overlay_and_json(point_run):
    out, result = point_run
    assert result.code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["mask_0.png", "masks.json", "overlay.png"]
    doc, masks = read_masks(out)
    assert doc["image"] == {"file_name": "sample.png", "height": 480, "width": 640}
    assert doc["model"] == "mobile_sam" and doc["embedding"] is None
    assert doc["prompts"] == {"points": [[320.0, 240.0]], "labels": [1], "box": None, "mask_input": None,
                              "multimask": False, "text": None, "semantic": False}
    assert len(masks) == 1
    assert Image.open(out / "overlay.png").size == (640, 480)
    assert "mask_0.png" in result.out and f"area {doc['annotations'][0]['area']}" in result.out


def test_segment_box_multimask(tmp_path, ckpt):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--box", "240,160,400,320", "--point", "100,100,0", "--multimask",
                     "--checkpoint", ckpt, "--out", out)
    assert result.code == 0, result
    doc, masks = read_masks(out)
    assert len(masks) == 3 and (out / "overlay.png").is_file()
    assert doc["prompts"]["box"] == [240.0, 160.0, 400.0, 320.0]
    assert doc["prompts"]["labels"] == [0] and doc["prompts"]["multimask"] is True
    assert len([line for line in result.out.splitlines() if "predicted IoU" in line]) == 3


def test_embed_then_segment_embedding_without_image_matches_direct(tmp_path, ckpt, embedding, point_run):
    out = tmp_path / "out"
    result = run_cli("segment", "--embedding", embedding, "--point", POINT, "--checkpoint", ckpt, "--out", out)
    assert result.code == 0, result
    assert not (out / "overlay.png").exists()
    doc, masks = read_masks(out)
    direct_doc, direct_masks = read_masks(point_run[0])
    assert doc["image"] == {"file_name": None, "height": 480, "width": 640}
    assert doc["embedding"] == "sample.safetensors"
    np.testing.assert_array_equal(masks[0], direct_masks[0])
    assert doc["annotations"][0]["predicted_iou"] == pytest.approx(direct_doc["annotations"][0]["predicted_iou"],
                                                                  abs=1e-6)


def test_segment_mirror_writes_the_mirror_predictors_answer(tmp_path, embedding, home_with_weights):
    out = tmp_path / "mirror"
    r = run_cli("segment", SAMPLE_IMAGE, "--point", POINT, "--model", "samkit_tiny", "--mirror", "--save-logits",
                "--out", out)
    assert r.code == 0, r.err
    pred = Predictor(load_module.load_model("samkit_tiny"), mirror=True)
    pred.set_image(np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB")))
    answer = pred.predict(points=[[int(v) for v in POINT.split(",")]], labels=[1], multimask=False)
    logits = np.load(out / "logits_0.npy")
    np.testing.assert_allclose(logits, answer.logits[0], atol=1e-3)
    assert np.array_equal(read_masks(out)[1][0], logits > 0)
    missing = tmp_path / "no_image"  # an embedding holds the image's features only: the mirror needs the image
    assert_error(run_cli("segment", "--embedding", embedding, "--point", POINT, "--mirror", "--out", missing), missing,
                 "mirror image too: pass the image")


def test_segment_embedding_uses_its_recorded_architecture(tmp_path, embedding, home_with_weights):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--embedding", embedding, "--point", POINT, "--out", out)
    assert result.code == 0, result
    doc, _ = read_masks(out)
    assert doc["model"] == "mobile_sam" and (out / "overlay.png").is_file()


def test_segment_mask_input_from_an_earlier_mask(tmp_path, ckpt, embedding, point_run):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--embedding", embedding, "--point", POINT,
                     "--mask-input", point_run[0] / "mask_0.png", "--checkpoint", ckpt, "--out", out)
    assert result.code == 0, result
    doc, _ = read_masks(out)
    assert doc["prompts"]["mask_input"] == str(point_run[0] / "mask_0.png")


def _variant(sample: Path, kind: str, path: Path) -> Path:
    rgb = Image.open(sample).convert("RGB")
    if kind == "grayscale":
        im = rgb.convert("L")
    elif kind == "rgba":
        im = rgb.convert("RGBA")
        im.putalpha(Image.linear_gradient("L").resize(rgb.size))
    elif kind == "16-bit":
        im = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        assert im.mode.startswith("I;16")
    else:
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    im.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grayscale", "rgba", "16-bit", "palette"])
def test_segment_converts_other_image_modes(tmp_path, ckpt, kind):
    image = _variant(SAMPLE_IMAGE, kind, tmp_path / f"{kind}.png")
    out = tmp_path / "out"
    result = run_cli("segment", image, "--point", POINT, "--checkpoint", ckpt, "--out", out)
    assert result.code == 0, result
    doc, masks = read_masks(out)
    assert doc["image"]["file_name"] == image.name and len(masks) == 1
    assert np.asarray(Image.open(out / "overlay.png")).shape == (480, 640, 3)


# -------------------------------------------------------------------------------------- models / demo


def test_models_lists_registry_and_cache(home_with_weights):
    result = run_cli("models")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert str(home_with_weights) in lines[0]
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam"):
        spec = REGISTRY[name]
        row = next(line for line in lines if line.startswith(name + " "))
        assert spec.filename in row and spec.description in row
        assert ("yes" if name == "mobile_sam" else "no") in row.split()
        assert f"url:  {spec.url}" in result.out
    assert f"path: {home_with_weights / 'mobile_sam.pt'}" in result.out
    row = next(line for line in lines if line.startswith("samkit_tiny "))
    assert "bundled" in row.split() and "MB" in row


def test_demo_without_weights_prints_download_instructions(empty_home, tmp_path, monkeypatch):
    """An installation that lost its bundled weights, with nothing cached: instructions, exit 0."""
    monkeypatch.setattr(load_module, "BUNDLED_DIR", tmp_path / "no-bundled-weights")
    monkeypatch.chdir(tmp_path)
    result = run_cli("demo")
    assert result.code == 0, result
    assert result.err == ""
    assert str(empty_home) in result.out and "SAMKIT_HOME" in result.out
    for name in ("mobile_sam", "sam_vit_b"):
        assert REGISTRY[name].url in result.out
        assert str(empty_home / REGISTRY[name].filename) in result.out
    assert not (tmp_path / "demo_out").exists()


def test_demo_uses_the_bundled_model_offline(empty_home, tmp_path):
    """Nothing cached, no network needed: the demo segments the sample with the bundled samkit_tiny, and
    its best mask holds the clicked centre point (the sample's centre is on an object)."""
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out)
    assert result.code == 0, result
    assert "samkit_tiny" in result.out.splitlines()[0]
    doc, masks = read_masks(out)
    assert doc["model"] == "samkit_tiny" and len(masks) == 3
    best = masks[0]
    assert best[240, 320] and 0.005 < best.mean() < 0.9


@pytest.mark.slow
def test_demo_falls_back_to_cached_weights(home_with_weights, tmp_path, monkeypatch):
    """Without the bundled model, the first cached registry model is used. The cached "mobile_sam.pt"
    holds deterministic test weights (see the module docstring)."""
    monkeypatch.setattr(load_module, "BUNDLED_DIR", tmp_path / "no-bundled-weights")
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out)
    assert result.code == 0, result
    doc, masks = read_masks(out)
    assert doc["model"] == "mobile_sam" and len(masks) == 3
    assert doc["prompts"]["points"] == [[320.0, 240.0]] and doc["prompts"]["labels"] == [1]
    assert doc["image"]["file_name"] == "sample.png" and (out / "overlay.png").is_file()


def test_sample_image_asset():
    im = Image.open(SAMPLE_IMAGE)
    assert im.size == (640, 480) and im.mode == "RGB"
    assert SAMPLE_IMAGE.stat().st_size < 200_000


# ------------------------------------------------------------------------------------------- errors


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_error_missing_image(tmp_path, ckpt):
    out = tmp_path / "out"
    result = run_cli("segment", tmp_path / "nope.jpg", "--point", "1,1", "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "image not found", "nope.jpg")


@pytest.mark.parametrize("content", [b"this is not an image", "truncated"])
def test_error_corrupt_image(tmp_path, ckpt, content):
    image = tmp_path / "bad.png"
    if content == "truncated":
        shutil.copy(SAMPLE_IMAGE, image)
        image.write_bytes(image.read_bytes()[:5000])
    else:
        image.write_bytes(content)
    out = tmp_path / "out"
    result = run_cli("segment", image, "--point", "1,1", "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "cannot read image", "bad.png")


@pytest.mark.slow
def test_error_point_outside_image(tmp_path, ckpt):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "700,100", "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "(700, 100)", "outside the image", "640 x 480")


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--point", "nan,5", "finite"),
    ("--point", "5,inf", "finite"),
    ("--point", "5,5,3", "label must be 1 (foreground) or 0 (background), got 3"),
    ("--point", "5", "expected X,Y"),
    ("--point", "a,b", "expected X,Y"),
    ("--box", "50,10,20,40", "x1 < x0"),
    ("--box", "10,50,20,40", "y1 < y0"),
    ("--box", "1,2,3", "expected X0,Y0,X1,Y1"),
])
def test_error_malformed_prompt(tmp_path, ckpt, option, value, needle):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, option, value, "--checkpoint", ckpt, "--out", out)
    line = assert_error(result, out, needle, repr(value))
    assert option in line


def test_error_no_prompt(tmp_path, ckpt):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "no prompt", "--point")


def test_error_no_image_and_no_embedding(tmp_path, ckpt):
    out = tmp_path / "out"
    result = run_cli("segment", "--point", "1,1", "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "IMAGE", "--embedding")


def test_error_mask_input_wrong_size(tmp_path, ckpt):
    mask = tmp_path / "small.png"
    Image.fromarray(np.full((50, 100), 255, np.uint8)).save(mask)
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--mask-input", mask, "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "--mask-input", "100 x 50", "640 x 480")


def test_error_embedding_of_another_image_size(tmp_path, ckpt, embedding):
    image = tmp_path / "small.png"
    Image.open(SAMPLE_IMAGE).resize((320, 240)).save(image)
    out = tmp_path / "out"
    result = run_cli("segment", image, "--embedding", embedding, "--point", "1,1", "--checkpoint", ckpt, "--out", out)
    assert_error(result, out, "(480, 640)", "(240, 320)")


def test_error_decompression_bomb(tmp_path, ckpt):
    image = _png_claiming(tmp_path / "bomb.png", 20000, 20000)
    out = tmp_path / "out"
    result = run_cli("segment", image, "--point", "1,1", "--max-pixels", 1_000_000, "--checkpoint", ckpt,
                     "--out", out)
    assert_error(result, out, "image too large", "20000 x 20000", "--max-pixels")


def test_error_checkpoint_of_another_architecture(tmp_path, ckpt):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "1,1", "--model", "sam_vit_b", "--checkpoint", ckpt,
                     "--out", out)
    assert_error(result, out, "sam_vit_b", "--model mobile_sam")


@pytest.mark.parametrize("model", [None, "mobile_sam"])
def test_error_missing_checkpoint(tmp_path, model):
    out = tmp_path / "out"
    args = ["--model", model] if model else []
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "1,1", *args, "--checkpoint", tmp_path / "gone.pt",
                     "--out", out)
    assert_error(result, out, "checkpoint not found", "gone.pt")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_error_offline_download(tmp_path, empty_home, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/x.pth"
    monkeypatch.setitem(REGISTRY, "mobile_sam", dataclasses.replace(REGISTRY["mobile_sam"], url=url))
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--point", POINT, "--model", "mobile_sam", "--out", out)
    assert_error(result, out, url, str(empty_home / "mobile_sam.pt"))


def test_error_out_is_a_file(tmp_path, ckpt):
    out = tmp_path / "taken"
    out.write_text("keep me")
    result = run_cli("segment", SAMPLE_IMAGE, "--point", POINT, "--checkpoint", ckpt, "--out", out)
    assert result.code == 2 and "not a directory" in result.err
    assert out.read_text() == "keep me"


def test_usage_errors_exit_2():
    assert run_cli().code == 2
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "1,1")
    assert result.code == 2 and "--out" in result.err and len(result.err.strip().splitlines()) == 1
    assert run_cli("--version").code == 0


@pytest.mark.slow
def test_console_script_reports_one_line_error(tmp_path):
    """The installed ``samkit`` entry point: exit status 2 and one stderr line, no traceback."""
    script = Path(sys.executable).with_name("samkit")
    out = tmp_path / "out"
    proc = subprocess.run([str(script), "segment", str(tmp_path / "missing.png"), "--point", "1,1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"samkit: error: image not found: {tmp_path / 'missing.png'}"
    assert proc.stdout == "" and not out.exists()


# --------------------------------------------------------------------------------------------- eval


@pytest.mark.slow
def test_eval_interactive_on_grabcut(tmp_path, ckpt, data_dir):
    out = tmp_path / "eval"
    r = run_cli("eval", "interactive", "--dataset", "grabcut", "--root", data_dir / "GrabCut", "--max-samples", 2,
                "--max-clicks", 3, "--checkpoint", ckpt, "--out", out)
    assert r.code == 0, r.err
    doc = json.loads((out / "interactive.json").read_text())
    assert doc["num_objects"] == 2 and doc["max_clicks"] == 3 and doc["model"] == "mobile_sam"
    assert len(doc["miou_at_k"]) == 3 and all(0.0 <= v <= 1.0 for v in doc["miou_at_k"])
    assert 1 <= doc["noc"]["85"] <= 3
    assert (out / "interactive_miou.png").stat().st_size > 0


def test_eval_every_nth_image(tmp_path, ckpt, data_dir):
    out = tmp_path / "eval"
    r = run_cli("eval", "single-point", "--dataset", "grabcut", "--root", data_dir / "GrabCut", "--every", 20,
                "--checkpoint", ckpt, "--out", out)
    assert r.code == 0, r.err
    doc = json.loads((out / "single_point.json").read_text())
    names = sorted(p.stem for p in (data_dir / "GrabCut" / "data_GT").iterdir())
    assert [o["name"] for o in doc["objects"]] == names[0::20] and doc["every"] == 20  # images 0, 20, 40


def test_eval_mirror_answers_each_click_on_the_image_and_its_mirror(tmp_path, data_dir):
    runs = {}
    for flag in ([], ["--mirror"]):
        out = tmp_path / ("mirror" if flag else "plain")
        r = run_cli("eval", "single-point", "--dataset", "grabcut", "--root", data_dir / "GrabCut", "--every", 25,
                    "--model", "samkit_tiny", *flag, "--out", out)
        assert r.code == 0, r.err
        runs[bool(flag)] = json.loads((out / "single_point.json").read_text())
    assert runs[True]["mirror"] is True and runs[False]["mirror"] is False
    plain, mirror = ([o["scores"] for o in runs[k]["objects"]] for k in (False, True))
    assert len(plain) == len(mirror) == 2 and not np.allclose(plain, mirror, atol=1e-3)  # other answers


@pytest.mark.parametrize("argv, needle", [
    (["interactive", "--dataset", "grabcut"], "needs --root"),
    (["boxes"], "needs --coco-json"),
    (["interactive", "--dataset", "nosuch", "--root", "."], "unknown dataset kind"),
    (["refer"], "needs --refs"),
    (["refer", "--refs", "nosuch.json"], "refs file not found"),
    (["edges", "--root", ".", "--every", "2"], "--every takes every Nth image"),
    (["interactive", "--dataset", "grabcut", "--root", ".", "--every", "0"], "--every"),
    (["edges", "--root", ".", "--mirror"], "--mirror answers clicks"),
    (["single-point", "--dataset", "grabcut", "--root", ".", "--model", "opencv_grabcut", "--mirror"],
     "takes no --refiner or --mirror"),
])
def test_eval_bad_arguments(tmp_path, ckpt, argv, needle):
    out = tmp_path / "eval"
    assert_error(run_cli("eval", *argv, "--checkpoint", ckpt, "--out", out), out, needle)


def test_eval_needs_out_except_refer(tmp_path, ckpt, data_dir):
    out = tmp_path / "eval"
    assert_error(run_cli("eval", "edges", "--root", data_dir / "BSDS500", "--checkpoint", ckpt), out, "needs --out")


REFS = Path("refcoco_coco128_subset") / "refs.json"


def test_eval_refer_needs_a_text_model(tmp_path, ckpt, data_dir):
    out = tmp_path / "refer"
    assert_error(run_cli("eval", "refer", "--refs", data_dir / REFS, "--checkpoint", ckpt, "--out", out), out,
                 "'mobile_sam' has no text encoder")


class _TextOracle:
    """Stand-in for a text-promptable predictor: predict(text=...) gives the target of (image, text)."""

    def __init__(self, refs: Path, has_text_encoder: bool = True) -> None:
        from samkit.data.refer import RefDataset

        self.model = dataclasses.make_dataclass("M", ["arch", "has_text_encoder"])("evf_stub", has_text_encoder)
        self.targets = {(s.image.tobytes(), s.sentence): s.mask for s in RefDataset(refs)}
        self.image_calls = 0

    def set_image(self, image: np.ndarray) -> None:
        self.image, self.image_calls = image.tobytes(), self.image_calls + 1

    def predict(self, text: str | None = None, multimask: bool = True):
        assert not multimask
        return dataclasses.make_dataclass("P", ["masks", "scores"])(self.targets[self.image, text][None], np.ones(1))


def test_eval_refer_with_a_text_predictor(tmp_path, data_dir, monkeypatch):
    from samkit.cli import evaluate as cli

    refs = data_dir / REFS
    oracle = _TextOracle(refs)
    monkeypatch.setattr(cli, "_load", lambda choice, default: oracle)
    r = run_cli("eval", "refer", "--refs", refs, "--model", "evf_stub", "--limit", 10, "--out", tmp_path / "r.json")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["num_expressions"] == 10 and doc["ciou"] == doc["giou"] == 1.0 and doc["model"] == "evf_stub"
    assert doc["refs"] == str(refs) and oracle.image_calls == doc["num_images"] == 1
    assert "refcoco+(unc)/testB: 6 expressions, cIoU 1.0000, gIoU 1.0000" in r.out  # image 605's first
    assert "refcoco(unc)/testB: 4 expressions" in r.out
    r = run_cli("eval", "refer", "--refs", refs.parent, "--out", tmp_path / "dir")  # a folder: DIR/refer.json
    assert r.code == 0 and json.loads((tmp_path / "dir" / "refer.json").read_text())["num_expressions"] == 36
    r = run_cli("eval", "refer", "--refs", refs, "--limit", 1)  # no --out: printed only
    assert r.code == 0 and re.search(r"^ciou +1\.0000$", r.out, re.MULTILINE) and "wrote" not in r.out  # a table
    monkeypatch.setattr(cli, "_load", lambda choice, default: _TextOracle(refs, has_text_encoder=False))
    assert_error(run_cli("eval", "refer", "--refs", refs, "--out", tmp_path / "no"), tmp_path / "no",
                 "'evf_stub' has no text encoder")


# -------------------------------------------------------------------------------------------- train


@pytest.mark.slow
def test_train_from_config_then_resume(tmp_path, data_dir):
    """One step of the shipped BSDS recipe at 128 px from random weights, through `samkit train`."""
    cfg = json.loads((Path(__file__).resolve().parents[1] / "configs" / "finetune_mobile_sam_bsds.json").read_text())
    cfg.update(init_checkpoint=None, img_size=128, steps=1, batch_size=1, click_rounds=1, mask_only_rounds=0,
               export_fp16=False, progress=False,
               datasets=[{"kind": "bsds500", "root": str(data_dir / "BSDS500"), "options": {"split": "train"}}])
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    r = run_cli("train", path, "--out-dir", tmp_path / "run")
    assert r.code == 0, r.err
    assert (tmp_path / "run" / "model.pt").is_file() and "trained 1 steps" in r.out
    r = run_cli("train", path, "--out-dir", tmp_path / "run", "--steps", 2, "--resume")
    assert r.code == 0 and "trained 2 steps" in r.out, r.err
    assert "samkit: warning: " in r.err and "changed settings: steps" in r.err  # one line, no source path
    assert "UserWarning" not in r.err and ".py:" not in r.err


def test_train_bad_config(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"modle": "mobile_sam"}))
    r = run_cli("train", path)
    assert r.code == 2 and "unknown" in r.err and "modle" in r.err
    assert run_cli("train", tmp_path / "missing.json").code == 2


# --------------------------------------------------------------------------------------- everything


@pytest.mark.slow
def test_everything_cli_writes_sa1b_json(data_dir, tmp_path):
    image = data_dir / "GrabCut" / "data_GT" / "124080.jpg"
    out = tmp_path / "ev"
    result = run_cli("everything", image, "--out", out, "--points-per-side", "8", "--pred-iou-thresh", "0.25",
                     "--stability-score-thresh", "0.7", "--stability-score-offset", "0.1", "--overlay")
    assert result.code == 0, result
    doc = json.loads((out / "124080.json").read_text())
    assert doc["annotations"] and (out / "124080.overlay.png").is_file()
    assert "1 image(s) segmented" in result.out and json.loads((out / "summary.json").read_text())["failed"] == 0


def test_everything_cli_missing_input_is_one_line(tmp_path):
    result = run_cli("everything", tmp_path / "nope", "--out", tmp_path / "ev")
    assert result.code == 2 and "input not found" in result.err and len(result.err.strip().splitlines()) == 1
