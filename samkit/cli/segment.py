"""``samkit segment`` (masks from prompts, for an image or, with ``--prompts FILE``, a folder) and ``samkit embed``.

``segment IMAGE --point X,Y --out DIR`` writes into DIR (all files or none; an earlier run's files are
refused unless ``--overwrite``, which replaces them):

* ``mask_0.png`` .. ``mask_{C-1}.png``: 8-bit masks (0 / 255) ordered by predicted IoU, best first (C = 3
  with ``--multimask``, else 1); ``logits_<i>.npy``: float32 (H, W) logits with ``--save-logits``;
* ``overlay.png``: the photo with translucent masks, their outlines, the prompts and a legend (mask, IoU);
* ``masks.json``: :func:`samkit.data.formats.segment_document`.

Full-resolution work is done one mask and one band of rows at a time, so memory grows with the image
only by a few masks' worth of bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError

from samkit.cli.args import (
    add_model_options,
    add_overwrite_option,
    parse_box,
    parse_point,
    warn,
)
from samkit.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_REFINER,
    DEFAULT_TEXT_MODEL,
    LineLog,
    ModelChoice,
    check_writable,
    claim_out,
    load_predictor,
    logs_lines,
    remove_stale,
    setup_runtime,
    with_refiner,
)
from samkit.data.formats import SegmentPrompts, mask_annotation, segment_document
from samkit.data.image_io import load_image, require_min_size
from samkit.data.masks import (
    draw_legend,
    mask_colors,
    overlay_masks,
    rle_to_mask,
    save_mask_png,
)
from samkit.data.readers import IMAGE_EXTENSIONS
from samkit.data.staging import staged_outputs
from samkit.errors import ImageError, PromptError, SamkitError
from samkit.predict.predictor import Predictor, read_embedding
from samkit.predict.text import require_text_encoder
from samkit.predict.transforms import mask_to_low_res_logits, upsample_operators

SEGMENT_DESCRIPTION = (
    "Segment IMAGE from prompts (pixel coordinates, x to the right, y down; negative numbers are fine) and write "
    "mask_0.png.., overlay.png and masks.json into --out (best mask first). A box that sticks out of the image is "
    "clipped to it with a warning; a box entirely outside, or of zero size once clipped, is refused. Images under "
    "8 x 8 pixels are refused. With --prompts FILE, IMAGE may be a folder: FILE maps image file names to prompt "
    "sets and each image gets --out/<stem>/ with the same files.")
EMBED_DESCRIPTION = ("Run the image encoder once and save the embedding (.safetensors) to prompt later with "
                     "'samkit segment --embedding FILE' (no image needed then). --out may be a file or a folder "
                     "(then <stem>.safetensors inside it).")
# the files of one segment run (an earlier run's are refused, or replaced with --overwrite)
RUN_FILES = ("masks.json", "mask_*.png", "overlay.png", "logits_*.npy")
OVERLAY_MAX_SIDE = 4096  # px: larger images get a downscaled overlay (masks and masks.json stay full size)
BAND_ROWS = 512  # rows of full-resolution logits computed at a time
_FG, _BG, _BOX = (40, 220, 60), (230, 40, 40), (250, 210, 0)  # overlay colours of the prompts


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Register ``segment`` or ``embed``."""
    if name == "embed":
        p = commands.add_parser(name, help=help, description=EMBED_DESCRIPTION)
        p.add_argument("image", metavar="IMAGE", help="image file")
        p.add_argument("--out", required=True, metavar="FILE|DIR",
                       help="embedding file (.safetensors), or a folder to write <stem>.safetensors into")
        add_model_options(p, DEFAULT_MODEL)
        p.set_defaults(func=run_embed)
        return p
    p = commands.add_parser(name, help=help, description=SEGMENT_DESCRIPTION)
    p.add_argument("image", nargs="?", metavar="IMAGE|DIR",
                   help="image file (optional with --embedding: no overlay); a folder with --prompts")
    p.add_argument("--point", action="append", type=parse_point, default=[], metavar="X,Y[,LABEL]",
                   help="point prompt; LABEL 1 = foreground (default), 0 = background; repeatable")
    p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box prompt (corners)")
    p.add_argument("--mask-input", metavar="PNG",
                   help="binary mask of the image's size (e.g. an earlier mask_0.png) to refine")
    p.add_argument("--text", metavar="SENTENCE",
                   help="text prompt, e.g. 'the dog on the left' (text-promptable models; default model "
                        f"{DEFAULT_TEXT_MODEL})")
    p.add_argument("--semantic", action="store_true",
                   help="with --text: ask for all instances ('[semantic] ' prefix of evf_sam_multitask)")
    p.add_argument("--multimask", action="store_true", help="return 3 candidate masks instead of 1")
    p.add_argument("--prompts", type=Path, metavar="FILE",
                   help='JSON {"<image file name>": {"points": [[x, y], ...], "labels": [1, ...], "box": [x0, y0, '
                        'x1, y1], "text": "...", "multimask": false}, ...} (a detector\'s boxes, ...): one output '
                        "folder per image, --out/<stem>/; IMAGE is the folder the names are relative to")
    p.add_argument("--save-logits", action="store_true",
                   help="also write logits_<i>.npy: float32 (H, W) logits of each mask (mask = logits > 0)")
    p.add_argument("--embedding", metavar="FILE",
                   help="embedding from 'samkit embed': skips the image encoder; its model is the default")
    p.add_argument("--refine", nargs="?", const=DEFAULT_REFINER, metavar="REFINER",
                   help=f"refine the masks with a SAM-REF refiner (default {DEFAULT_REFINER}, for samkit_tiny; "
                        "samkit_tiny_ref_hq is more accurate at ~2x the click; or a refiner file); "
                        "with --embedding, IMAGE is needed too")
    p.add_argument("--mirror", action="store_true",
                   help="test-time mirror ensemble: the prompts also answered on the left-right mirror of the image, "
                        "logits averaged (twice the encoder, ~1.5x the decoder; not for --text); with --embedding, "
                        "IMAGE is needed too")
    add_model_options(p, DEFAULT_MODEL)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_overwrite_option(p)
    p.set_defaults(func=run_segment)
    return p


# ------------------------------------------------------------------------------------------ segment


@dataclass
class Job:
    """One image to segment: where it is (None: --embedding only), its prompts and its output folder."""

    image_path: Path | None
    prompts: SegmentPrompts
    out: Path


def run_segment(args: argparse.Namespace) -> int:
    if args.image is None and args.embedding is None:
        raise SamkitError("give an IMAGE to segment, or --embedding FILE written by 'samkit embed'")
    setup_runtime(args)
    if args.prompts is not None:
        return _run_prompts_file(args)
    prompts = SegmentPrompts(points=[(x, y) for x, y, _ in args.point], labels=[lab for _, _, lab in args.point],
                             box=args.box, mask_input=args.mask_input, multimask=args.multimask, text=args.text,
                             semantic=args.semantic)
    check_prompts(prompts)
    found = claim_out(args.out, RUN_FILES, args.overwrite)
    image = None if args.image is None else _read_image(Path(args.image), args.max_pixels)
    if args.embedding is not None and image is None:
        prompts = clip_box(prompts, tuple(read_embedding(args.embedding)[0]["original_size"]))
    with staged_outputs(args.out) as stage:
        header, annotations = segment(image, None if args.image is None else Path(args.image), prompts,
                                      ModelChoice.from_args(args), stage, embedding=args.embedding,
                                      max_pixels=args.max_pixels, save_logits=args.save_logits, refiner=args.refine,
                                      mirror=args.mirror)
        written = {p.name for p in stage.iterdir()}
    remove_stale(found, written)
    _print_summary(header, annotations, args.out, overlay=image is not None)
    return 0


def check_prompts(prompts: SegmentPrompts) -> None:
    """The checks that need no image: some prompt given, text not empty, --semantic with --text."""
    if not prompts.points and prompts.box is None and prompts.mask_input is None and prompts.text is None:
        raise PromptError("no prompt given: add --point X,Y[,LABEL], --box X0,Y0,X1,Y1, --mask-input PNG "
                          "or --text SENTENCE")
    if prompts.text is not None and not prompts.text.strip():
        raise PromptError("--text is empty: describe the object to segment, e.g. --text 'the dog on the left'")
    if prompts.semantic and prompts.text is None:
        raise PromptError("--semantic goes with --text")


def clip_box(prompts: SegmentPrompts, size: tuple[int, int]) -> SegmentPrompts:
    """The box clipped to the (H, W) image, with a warning when it stuck out; refused (PromptError) when it
    lies entirely outside or has no area once clipped."""
    if prompts.box is None:
        return prompts
    h, w = size
    x0, y0, x1, y1 = prompts.box
    clipped = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
    given = ",".join(f"{v:g}" for v in prompts.box)
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"box {given} has zero size (x1 must be > x0 and y1 > y0)")
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise PromptError(f"box {given} lies outside the image ({w} x {h} pixels)")
    if clipped != tuple(prompts.box):
        warn(f"box {given} sticks out of the image ({w} x {h} pixels): clipped to "
             + ",".join(f"{v:g}" for v in clipped))
    return SegmentPrompts(prompts.points, prompts.labels, clipped, prompts.mask_input, prompts.multimask,
                          prompts.text, prompts.semantic)


def _read_image(path: Path, max_pixels: int | None) -> np.ndarray:
    image = load_image(path, max_pixels=max_pixels)
    require_min_size(image, path)
    return image


def segment(image: np.ndarray | None, image_path: Path | None, prompts: SegmentPrompts, choice: ModelChoice,
            stage: Path, embedding: str | None = None, max_pixels: int | None = None, save_logits: bool = False,
            predictor: Predictor | None = None, refiner: str | None = None,
            mirror: bool = False) -> tuple[dict, list[dict]]:
    """Run one prompt set and write masks, logits, overlay and masks.json into ``stage``; returns (masks.json
    header, annotations). Without ``embedding`` the image encoder runs on ``image``; with it, ``image`` may be
    None (no overlay). ``predictor``: one already loaded (a batch of images), else ``choice`` is loaded, with the
    SAM-REF ``refiner`` (name or file) when given and the mirror ensemble with ``mirror``."""
    if image is not None:
        prompts = clip_box(prompts, image.shape[:2])
    mask_input = None
    if prompts.mask_input is not None and image is not None:  # fail before the slow model work
        mask_input = _read_mask_input(prompts.mask_input, image.shape[:2], max_pixels)
    if predictor is None:
        default = (read_embedding(embedding)[0]["arch"] if embedding is not None
                   else DEFAULT_TEXT_MODEL if prompts.text is not None else DEFAULT_MODEL)
        predictor = with_refiner(load_predictor(choice, default), refiner, mirror)
    if prompts.text is not None:
        _require_text(predictor)  # before the image encoder runs
    if embedding is None:
        if image is None:
            raise SamkitError("segment needs an image or an --embedding")
        predictor.set_image(image)
    else:
        predictor.load_embedding(embedding, image_size=None if image is None else image.shape[:2], image=image)
    size = predictor.original_size
    assert size is not None  # set_image / load_embedding ran
    if prompts.mask_input is not None and mask_input is None:
        mask_input = _read_mask_input(prompts.mask_input, size, max_pixels)
    if mask_input is not None:  # the model's own low-res mask frame (256 for 1024 inputs)
        mask_input = mask_to_low_res_logits(mask_input, predictor.model.img_size,
                                            predictor.model.prompt_encoder.mask_input_size[0])
    query: dict[str, Any] = {"points": prompts.points or None, "labels": prompts.labels or None, "box": prompts.box,
             "mask_input": mask_input, "multimask": prompts.multimask, "text": prompts.text,
             "semantic": prompts.semantic}
    if getattr(predictor, "refiner", None) is None and not predictor.mirror:
        low, iou = predictor.predict_low_res(**query)

        def full_res(i: int, path: Path | None) -> np.ndarray:
            return _full_res_mask(predictor, low[i], path)
    else:  # refined or mirror-averaged masks come at full resolution
        out = predictor.predict(**query)
        iou = torch.from_numpy(out.scores)

        def full_res(i: int, path: Path | None) -> np.ndarray:
            return _mask_from_logits(out.logits[i], predictor.model.mask_threshold, path)
    annotations = []
    for rank, i in enumerate(np.argsort(-iou.numpy(), kind="stable").tolist()):  # best first, ties in order
        mask = full_res(i, stage / f"logits_{rank}.npy" if save_logits else None)
        save_mask_png(stage / f"mask_{rank}.png", mask)
        annotations.append(mask_annotation(rank, mask, float(iou[i]), f"mask_{rank}.png",
                                           f"logits_{rank}.npy" if save_logits else None))
        del mask
    header = segment_document(None if image_path is None else image_path.name, size[0], size[1],
                              predictor.model.arch, None if embedding is None else Path(embedding).name, prompts, [])
    (stage / "masks.json").write_text(json.dumps({**header, "annotations": annotations}, indent=2) + "\n")
    if image is not None:
        _save_png(stage / "overlay.png", segment_overlay(image, annotations, prompts))
    return header, annotations


def _require_text(predictor: Predictor) -> None:
    try:
        require_text_encoder(predictor.model)
    except SamkitError as exc:
        raise PromptError(f"{exc}; for text prompts use --model {DEFAULT_TEXT_MODEL} (bundled, a demo) or "
                          "--model evf_sam") from None


def _full_res_mask(predictor: Predictor, low: torch.Tensor, logits_path: Path | None) -> np.ndarray:
    """(s, s) low-res logits -> (H, W) bool mask, computed :data:`BAND_ROWS` rows at a time (the logits are
    appended band by band to ``logits_path``, a float32 .npy file, when given)."""
    assert predictor.original_size is not None and predictor.input_size is not None  # an image is set
    h, w = predictor.original_size
    rows, cols = upsample_operators(predictor.original_size, predictor.input_size, low.shape[-1],
                                    predictor.model.img_size)
    threshold = predictor.model.mask_threshold
    mask = np.empty((h, w), dtype=bool)
    with contextlib.ExitStack() as stack, torch.inference_mode():
        npy = None
        if logits_path is not None:
            npy = stack.enter_context(open(logits_path, "wb"))
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (h, w)}
            np.lib.format.write_array_header_1_0(npy, header)
        half = low.float() @ cols.T  # (s, W): columns resized once
        for y0 in range(0, h, BAND_ROWS):
            band = (rows[y0:y0 + BAND_ROWS] @ half).numpy()
            mask[y0:y0 + band.shape[0]] = band > threshold
            if npy is not None:
                band.astype("<f4", copy=False).tofile(npy)
    return mask


def _mask_from_logits(logits: np.ndarray, threshold: float, logits_path: Path | None) -> np.ndarray:
    """(H, W) full-resolution logits (refined or mirror-averaged) -> (H, W) bool mask; the logits go to
    ``logits_path`` (float32 .npy) when given."""
    if logits_path is not None:
        np.save(logits_path, logits.astype("<f4", copy=False))
    return logits > threshold


def segment_overlay(image: np.ndarray, annotations: list[dict], prompts: SegmentPrompts) -> np.ndarray:
    """Translucent masks (best on top) with outlines, the prompts, and a legend (mask file, predicted IoU);
    at most :data:`OVERLAY_MAX_SIDE` px on its longer side."""
    colors = mask_colors(len(annotations))
    masks = (rle_to_mask(a["segmentation"]) for a in reversed(annotations))  # best painted last, on top
    out = overlay_masks(image, masks, alpha=0.4, colors=colors[::-1], max_side=OVERLAY_MAX_SIDE)
    scale = out.shape[1] / image.shape[1]
    radius = max(3, round(min(out.shape[:2]) / 100))
    for (x, y), label in zip(prompts.points, prompts.labels, strict=False):
        centre = (round(x * scale), round(y * scale))
        cv2.circle(out, centre, radius + 1, (255, 255, 255), thickness=-1, lineType=cv2.LINE_AA)
        cv2.circle(out, centre, radius, _FG if label == 1 else _BG, thickness=-1, lineType=cv2.LINE_AA)
    if prompts.box is not None:
        x0, y0, x1, y1 = (round(v * scale) for v in prompts.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), _BOX, thickness=max(1, radius // 2))
    return draw_legend(out, [(f"{a['mask_file']}  IoU {a['predicted_iou']:.2f}", c)
                             for a, c in zip(annotations, colors, strict=False)])


def _read_mask_input(path: str, size: tuple[int, int], max_pixels: int | None) -> np.ndarray:
    """--mask-input PNG of (H, W) = ``size`` -> (H, W) bool. Foreground: >= 128 (or 1 in a 0/1 mask)."""
    try:
        grey = load_image(path, max_pixels=max_pixels).max(axis=2)
    except ImageError as exc:
        raise PromptError(f"--mask-input: {exc}") from None
    if grey.shape != tuple(size):
        raise PromptError(f"--mask-input {path} is {grey.shape[1]} x {grey.shape[0]} pixels but the image is "
                          f"{size[1]} x {size[0]}: the mask must have the image's size")
    return grey >= 128 if grey.max() > 1 else grey > 0


def _save_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, format="PNG")


def _print_summary(header: dict, annotations: list[dict], out: Path, overlay: bool) -> None:
    image = header["image"]
    source = image["file_name"] or header["embedding"]
    print(f"{header['model']}: {len(annotations)} mask(s) for {source} ({image['width']} x {image['height']}) "
          f"-> {out}")
    for a in annotations:
        print(f"  {a['mask_file']}  area {a['area']}  predicted IoU {a['predicted_iou']:.3f}")
    print(f"  masks.json{', overlay.png' if overlay else ''}")


# -------------------------------------------------------------------------------- segment --prompts FILE


def _run_prompts_file(args: argparse.Namespace) -> int:
    """``segment DIR --prompts FILE``: every image named in FILE, one model load, --out/<stem>/ each (all or none)."""
    if args.point or args.box is not None or args.mask_input or args.text is not None or args.embedding:
        raise SamkitError("--prompts FILE gives every prompt: drop --point/--box/--mask-input/--text/--embedding")
    if args.image is None:
        raise SamkitError("--prompts FILE needs IMAGE|DIR: the image, or the folder its file names are in")
    jobs = read_prompts_file(args.prompts, Path(args.image), args.out, args.multimask)
    found = claim_out(args.out, RUN_FILES, args.overwrite)
    log = LineLog("segment", len(jobs)) if logs_lines() else None
    predictor = None
    with staged_outputs(args.out) as stage:
        for job in jobs:
            assert job.image_path is not None  # read_prompts_file names an image for every job
            image = _read_image(job.image_path, args.max_pixels)
            folder = stage / job.out.name
            folder.mkdir()
            if predictor is None:
                default = DEFAULT_TEXT_MODEL if any(j.prompts.text for j in jobs) else DEFAULT_MODEL
                predictor = with_refiner(load_predictor(ModelChoice.from_args(args), default), args.refine,
                                         args.mirror)
            _, annotations = segment(image, job.image_path, job.prompts, ModelChoice.from_args(args), folder,
                                     max_pixels=args.max_pixels, save_logits=args.save_logits, predictor=predictor)
            if log is not None:
                log(f"{job.image_path.name}: {len(annotations)} mask(s)")
        remove_stale(found, set())  # every image done: the earlier run's folders go, the new ones replace them
    print(f"segment: {len(jobs)} image(s) from {args.prompts} -> {args.out}/<stem>/ (masks.json, mask_*.png, "
          "overlay.png)")
    return 0


def read_prompts_file(path: Path, root: Path, out: Path, multimask: bool) -> list[Job]:
    """Parse a --prompts file: ``{"<file name>": {"points", "labels", "box", "text", "semantic", "multimask"}}``
    (names relative to ``root``, a folder; or ``root`` is the one image). Every problem is one PromptError."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"prompts file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptError(f"cannot read prompts file {path}: {exc}") from None
    if not isinstance(doc, dict) or not doc:
        raise PromptError(f"prompts file {path} must be a JSON object mapping image file names to prompt sets")
    jobs, stems = [], set()
    for name, entry in doc.items():
        image = root if root.is_file() and Path(name).name == root.name else root / name
        where = f"prompts file {path}, {name!r}"
        if not image.is_file():
            raise PromptError(f"{where}: image not found: {image}")
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            raise PromptError(f"{where}: not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        if image.stem in stems:
            raise PromptError(f"{where}: another image has the stem {image.stem!r} (outputs are named by stem)")
        stems.add(image.stem)
        prompts = _prompt_set(entry, where, multimask)
        check_prompts(prompts)
        jobs.append(Job(image, prompts, out / image.stem))
    return jobs


def _prompt_set(entry: object, where: str, multimask: bool) -> SegmentPrompts:
    """One prompt set of a --prompts file, checked like the command-line options."""
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: expected an object with points/labels/box/text")
    unknown = sorted(set(entry) - {"points", "labels", "box", "text", "semantic", "multimask"})
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {', '.join(unknown)} (points, labels, box, text, semantic, "
                          "multimask)")
    try:
        points = [tuple(float(v) for v in p) for p in entry.get("points", [])]
        labels = [int(v) for v in entry.get("labels", [1] * len(points))]
        box = entry.get("box")
        box = None if box is None else parse_box(",".join(str(float(v)) for v in box))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise PromptError(f"{where}: {exc}") from None
    if any(len(p) != 2 for p in points) or len(labels) != len(points) or not set(labels) <= {0, 1}:
        raise PromptError(f"{where}: points must be [[x, y], ...] with as many labels (1 or 0)")
    text = entry.get("text")
    return SegmentPrompts([(x, y) for x, y in points], labels, box, None, bool(entry.get("multimask", multimask)),
                          None if text is None else str(text), bool(entry.get("semantic", False)))


# -------------------------------------------------------------------------------------------- embed


def run_embed(args: argparse.Namespace) -> int:
    setup_runtime(args)
    out = Path(args.out)
    if out.is_dir() or args.out.endswith(("/", os.sep)) or out.suffix == "":
        out = out / f"{Path(args.image).stem}.safetensors"  # a folder given: the embedding goes inside
    check_writable(out.parent, "--out folder")
    if out.is_dir() or (out.exists() and not os.access(out, os.W_OK)):
        raise SamkitError(f"cannot write --out {out}: it is a folder or a read-only file")
    image = _read_image(Path(args.image), args.max_pixels)
    predictor = load_predictor(ModelChoice.from_args(args), DEFAULT_MODEL)
    predictor.set_image(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        predictor.save_embedding(out)
    except (SafetensorError, OSError) as exc:
        raise SamkitError(f"cannot write --out {out}: {getattr(exc, 'strerror', None) or exc}") from None
    os.chmod(out, 0o666 & ~_umask())  # the usual permissions of a new file
    assert predictor.original_size is not None  # set_image ran
    h, w = predictor.original_size
    print(f"{predictor.model.arch}: embedding of {args.image} ({w} x {h}) -> {out}")
    return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
