"""The ``samkit`` CLI as a new user meets it: start-up without torch, negative coordinates and boxes outside
the image, tiny images, output folders that describe one run, overlays, logs without a terminal, --device /
--threads, everything's formats and its "why no mask" message, --save-logits, batch prompts from a file.

These use the bundled ``samkit_tiny`` (offline, fast): masks are weak but real.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.cli.models import SAMPLE_IMAGE
from samkit.data.masks import rle_to_mask
from tests.cli_helpers import assert_error, read_masks, run_cli

PHOTO = Path("GrabCut") / "data_GT" / "124080.jpg"
RELAXED = ("--points-per-side", "8", "--pred-iou-thresh", "0.25", "--stability-score-thresh", "0.5",
           "--stability-score-offset", "0.25", "--box-nms-thresh", "0.9")  # many masks from few points


# --------------------------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_help_and_version_do_not_import_torch(argv):
    code = (f"import sys; from samkit.cli import main; rc = main({argv!r}); "
            "sys.stderr.write('torch' if 'torch' in sys.modules else 'no-torch'); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.stderr.strip().endswith("no-torch"), proc.stderr
    assert proc.returncode == (2 if not argv else 0)


def test_every_command_has_a_description():
    for command in ("segment", "embed", "everything", "eval", "train", "train-text", "models", "demo"):
        result = run_cli(command, "--help")
        assert result.code == 0, result
        description = result.out.split("\n\n")[1]
        assert not description.startswith(("positional", "options")) and len(description) > 40, command


def test_everything_threshold_flags_show_help_and_defaults():
    out = run_cli("everything", "--help").out
    for flag, default in (("--pred-iou-thresh", "0.88"), ("--stability-score-thresh", "0.95"),
                          ("--box-nms-thresh", "(default: 0.7)"), ("--points-per-side", "(default: 32)")):
        text = " ".join(out.split(flag, 2)[-1].split("--", 1)[0].split())
        assert default in text, (flag, text)


# ---------------------------------------------------------------------------------------- coordinates


def test_negative_point_is_read_as_a_point_outside_the_image(tmp_path):
    out = tmp_path / "out"
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--point", "-5,10", "--out", out), out,
                 "(-5, 10)", "outside the image")


def test_box_sticking_out_is_clipped_with_a_warning(tmp_path):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--box", "-10,-10,100,100", "--out", out)
    assert result.code == 0, result
    assert result.err.strip() == ("samkit: warning: box -10,-10,100,100 sticks out of the image (640 x 480 pixels): "
                                  "clipped to 0,0,100,100")
    doc, _ = read_masks(out)
    assert doc["prompts"]["box"] == [0.0, 0.0, 100.0, 100.0]


@pytest.mark.parametrize(("box", "needle"), [("0,0,5000,5000", None), ("700,10,800,100", "lies outside the image"),
                                             ("100,100,100,100", "zero size"), ("-50,10,-5,40", "outside")])
def test_box_outside_or_empty_is_refused(tmp_path, box, needle):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--box", box, "--out", out)
    if needle is None:  # covers the whole image: clipped, runs
        assert result.code == 0 and "clipped to 0,0,640,480" in result.err, result
    else:
        assert_error(result, out, needle)


@pytest.mark.parametrize("size", [(1, 1), (7, 30)])
def test_tiny_images_are_refused(tmp_path, size):
    image = tmp_path / "tiny.png"
    Image.new("RGB", size, (200, 10, 10)).save(image)
    out = tmp_path / "out"
    assert_error(run_cli("segment", image, "--point", "0,0", "--out", out), out, "image too small", "8 x 8")


# ------------------------------------------------------------------------------------------ out folders


def test_segment_refuses_an_earlier_run_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    assert run_cli("segment", SAMPLE_IMAGE, "--point", "320,240", "--multimask", "--out", out).code == 0
    (out / "notes.txt").write_text("mine")
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "320,240", "--out", out)
    assert result.code == 2 and "--overwrite" in result.err and "earlier run" in result.err
    assert len(list(out.glob("mask_*.png"))) == 3
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "320,240", "--out", out, "--overwrite")
    assert result.code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["mask_0.png", "masks.json", "notes.txt", "overlay.png"]
    read_masks(out)  # masks.json and the PNGs agree


def test_out_that_cannot_be_created_fails_before_the_model(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "out"
    line = assert_error(run_cli("segment", SAMPLE_IMAGE, "--point", "1,1", "--model", "nosuch", "--out", out), out)
    assert str(out) in line and "staging" not in line  # the folder the user gave, checked before the model


def test_embed_into_a_folder_with_usual_permissions(tmp_path):
    folder = tmp_path / "emb"
    folder.mkdir()
    result = run_cli("embed", SAMPLE_IMAGE, "--out", f"{folder}/")
    assert result.code == 0, result
    path = folder / "sample.safetensors"
    umask = os.umask(0)
    os.umask(umask)
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_everything_refuses_another_format_in_the_same_folder(data_dir, tmp_path):
    image, out = data_dir / PHOTO, tmp_path / "ev"
    assert run_cli("everything", image, "--out", out, "--format", "coco", *RELAXED).code == 0
    assert (out / "parts").is_dir() and (out / "annotations.json").is_file()
    again = run_cli("everything", image, "--out", out, "--format", "sa1b", *RELAXED)
    assert again.code == 2 and "fmt" in again.err and "--overwrite" in again.err
    resumed = run_cli("everything", image, "--out", out, "--format", "coco", *RELAXED)  # same job: resumes
    assert resumed.code == 0 and "1 already done" in resumed.out
    replaced = run_cli("everything", image, "--out", out, "--format", "sa1b", *RELAXED, "--overwrite")
    assert replaced.code == 0, replaced
    assert sorted(p.name for p in out.iterdir()) == ["124080.json", "errors.jsonl", "run.json", "summary.json"]


# ------------------------------------------------------------------------------------------ everything


def test_everything_says_why_no_mask_was_kept(data_dir, tmp_path):
    result = run_cli("everything", data_dir / PHOTO, "--out", tmp_path / "ev", "--points-per-side", "4",
                     "--crop-n-layers", "0", "--pred-iou-thresh", "0.99")  # stricter than any score the model gives
    assert result.code == 0, result
    line = next(s for s in result.out.splitlines() if "kept no mask" in s)
    assert "of 48 candidates" in line and "predicted IoU <= 0.99 removed" in line and "--pred-iou-thresh" in line
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["without_masks"][0]["why"] in line


def test_everything_logs_a_line_per_image_without_a_terminal(data_dir, tmp_path):
    result = run_cli("everything", data_dir / PHOTO, "--out", tmp_path / "ev", *RELAXED)  # stderr: a StringIO
    lines = [s for s in result.err.splitlines() if s.startswith("everything: [1/1] 124080.jpg: ")]
    assert len(lines) == 1 and " masks in " in lines[0] and "encoder" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["yolo", "labelme", "labelmap"])
def test_everything_other_formats_hold_the_sa1b_masks(data_dir, tmp_path, fmt):
    image = data_dir / PHOTO
    assert run_cli("everything", image, "--out", tmp_path / "sa1b", *RELAXED).code == 0
    anns = json.loads((tmp_path / "sa1b" / "124080.json").read_text())["annotations"]
    masks = [rle_to_mask(a["segmentation"]) for a in anns]
    assert masks
    result = run_cli("everything", image, "--out", tmp_path / fmt, "--format", fmt, *RELAXED)
    assert result.code == 0, result
    if fmt == "labelmap":
        labels = np.asarray(Image.open(tmp_path / fmt / "124080.png"))
        assert labels.shape == masks[0].shape and labels.max() <= len(masks)
        np.testing.assert_array_equal(labels == len(masks), masks[-1])  # the last (smallest) mask is on top
    elif fmt == "yolo":
        lines = (tmp_path / fmt / "124080.txt").read_text().splitlines()
        assert 0 < len(lines) <= len(masks) and all(line.startswith("0 ") for line in lines)
    else:
        doc = json.loads((tmp_path / fmt / "124080.json").read_text())
        assert (doc["imageHeight"], doc["imageWidth"]) == masks[0].shape
        assert {s["group_id"] for s in doc["shapes"]} <= set(range(len(masks))) and doc["shapes"]


# ------------------------------------------------------------------------------------- segment extras


def test_save_logits_agree_with_the_masks(tmp_path):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--point", "320,240", "--multimask", "--save-logits", "--out", out)
    assert result.code == 0, result
    doc, masks = read_masks(out)
    for ann, mask in zip(doc["annotations"], masks, strict=False):
        logits = np.load(out / ann["logits_file"])
        assert logits.dtype == np.float32 and logits.shape == mask.shape
        np.testing.assert_array_equal(logits > 0, mask)


@pytest.mark.slow
def test_segment_prompts_file_over_a_folder(data_dir, tmp_path):
    folder = data_dir / "GrabCut" / "data_GT"
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"124080.jpg": {"box": [50, 40, 300, 250]},
                                   "153077.jpg": {"points": [[200, 150], [10, 10]], "labels": [1, 0]}}))
    out = tmp_path / "out"
    result = run_cli("segment", folder, "--prompts", prompts, "--out", out)
    assert result.code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["124080", "153077"]
    doc, _ = read_masks(out / "124080")
    assert doc["image"]["file_name"] == "124080.jpg" and doc["prompts"]["box"] == [50, 40, 300, 250]
    doc, _ = read_masks(out / "153077")
    assert doc["prompts"]["labels"] == [1, 0] and (out / "153077" / "overlay.png").is_file()
    assert "segment: [2/2] 153077.jpg" in result.err  # a line per image without a terminal
    prompts.write_text(json.dumps({"124080.jpg": {"box": [50, 40, 300, 250], "multimask": True}}))
    assert run_cli("segment", folder, "--prompts", prompts, "--out", out).code == 2  # an earlier run: refused
    assert run_cli("segment", folder, "--prompts", prompts, "--out", out, "--overwrite").code == 0
    assert sorted(p.name for p in out.iterdir()) == ["124080"]  # the folder describes this run only
    assert len(read_masks(out / "124080")[1]) == 3
    prompts.write_text(json.dumps({"124080.jpg": {"box": [50, 40, 300, 250]}}))
    assert run_cli("segment", folder, "--prompts", prompts, "--out", out, "--overwrite").code == 0
    assert len(read_masks(out / "124080")[1]) == 1  # no mask_1.png / mask_2.png left from the run before


def test_segment_prompts_file_errors_leave_nothing(data_dir, tmp_path):
    folder = data_dir / "GrabCut" / "data_GT"
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"124080.jpg": {"box": [50, 40, 300, 250]}, "nosuch.jpg": {"points": [[1, 1]]}}))
    out = tmp_path / "out"
    assert_error(run_cli("segment", folder, "--prompts", prompts, "--out", out), out, "nosuch.jpg", "not found")
    prompts.write_text(json.dumps({"124080.jpg": {"box": [50, 40, 300, 250]}, "153077.jpg": {"point": [1, 1]}}))
    assert_error(run_cli("segment", folder, "--prompts", prompts, "--out", out), out, "unknown key", "point")


# ------------------------------------------------------------------------------------ device / threads


def test_device_and_threads(tmp_path):
    import torch

    out = tmp_path / "out"
    if not torch.cuda.is_available():
        assert_error(run_cli("segment", SAMPLE_IMAGE, "--point", "320,240", "--device", "cuda", "--out", out), out,
                     "--device cuda", "no CUDA")
    before = torch.get_num_threads()
    try:
        result = run_cli("segment", SAMPLE_IMAGE, "--point", "320,240", "--threads", "1", "--out", out)
        assert result.code == 0 and torch.get_num_threads() == 1, result
    finally:
        torch.set_num_threads(before)
    assert run_cli("segment", SAMPLE_IMAGE, "--point", "1,1", "--threads", "0", "--out", out).code == 2


# ------------------------------------------------------------------------------------------ text / eval


def test_text_without_a_text_model_names_the_bundled_one(tmp_path):
    out = tmp_path / "out"
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--text", "the circle", "--model", "samkit_tiny", "--out", out),
                 out, "no text encoder", "samkit_tiny_text")


def test_bundled_text_model_through_checkpoint_reads_its_metadata(tmp_path):
    weights = Path(__import__("samkit").__file__).parent / "weights" / "samkit_tiny_text.fp16.safetensors"
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--text", "the red circle", "--checkpoint", weights, "--out", out)
    assert result.code == 0, result
    assert json.loads((out / "masks.json").read_text())["model"] == "samkit_tiny_text"
    wrong = tmp_path / "wrong"
    line = assert_error(run_cli("segment", SAMPLE_IMAGE, "--point", "1,1", "--model", "sam_vit_b", "--checkpoint",
                                weights, "--out", wrong), wrong, "`samkit_tiny_text` file", "--model samkit_tiny_text")
    assert len(line) < 300  # no key list


@pytest.mark.slow
def test_eval_prints_a_table_and_a_line_per_batch(tmp_path, data_dir):
    out = tmp_path / "eval"
    result = run_cli("eval", "single-point", "--dataset", "grabcut", "--root", data_dir / "GrabCut",
                     "--max-samples", 10, "--out", out)
    assert result.code == 0, result
    assert not result.out.lstrip().startswith("{")
    rows = dict(line.split(None, 1) for line in result.out.splitlines() if line and not line.startswith("wrote"))
    doc = json.loads((out / "single_point.json").read_text())
    assert float(rows["miou"]) == pytest.approx(doc["miou"], abs=1e-4) and rows["num_objects"].strip() == "10"
    assert "single-point: 10/10 samples" in result.err
