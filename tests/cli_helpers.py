"""Helpers of the CLI tests: run ``samkit`` in-process, check one-line errors, read masks.json with its PNGs."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samkit.cli import main

POINT = "320,240"  # centre of the 640 x 480 sample image


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*argv: object) -> Result:
    """Run ``samkit ARGV`` in-process, capturing stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Result(code, out.getvalue(), err.getvalue())


def assert_error(result: Result, out_dir: Path, *needles: str) -> str:
    """Exit 2, one ``samkit: error:`` line on stderr naming ``needles``, nothing written."""
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("samkit: error: "), result.err
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.err
    assert not out_dir.exists() or not any(out_dir.iterdir())
    assert not list(out_dir.parent.glob(f".{out_dir.name}.staging-*"))
    return lines[0]


def read_masks(out_dir: Path) -> tuple[dict, list[np.ndarray]]:
    """masks.json and its mask PNGs, checking that they agree (RLE, bbox, area, order, files)."""
    doc = json.loads((out_dir / "masks.json").read_text())
    anns = doc["annotations"]
    assert [a["id"] for a in anns] == list(range(len(anns)))
    assert [a["mask_file"] for a in anns] == [f"mask_{i}.png" for i in range(len(anns))]
    ious = [a["predicted_iou"] for a in anns]
    assert ious == sorted(ious, reverse=True)
    masks = []
    for a in anns:
        png = np.asarray(Image.open(out_dir / a["mask_file"]))
        assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        mask = png > 0
        assert mask.shape == (doc["image"]["height"], doc["image"]["width"])
        rle = dict(a["segmentation"])
        assert isinstance(rle["counts"], str)
        rle["counts"] = rle["counts"].encode()
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
        assert a["area"] == int(mask.sum()) == int(mask_utils.area(rle))
        assert a["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist())
        masks.append(mask)
    assert sorted(p.name for p in out_dir.glob("mask_*.png")) == sorted(a["mask_file"] for a in anns)
    return doc, masks
