"""The ``samkit`` command line: ``segment``, ``embed``, ``models`` and ``demo``.

``samkit segment IMAGE --point X,Y --out DIR`` writes into DIR (all files or none):

* ``mask_0.png`` .. ``mask_{C-1}.png``: 8-bit masks (0 background, 255 foreground), ordered by
  predicted IoU, best first (C = 3 with ``--multimask``, else 1);
* ``overlay.png``: the image with every mask tinted (mask_0 in the first colour, painted on top),
  foreground points green, background points red, the box yellow (only when IMAGE is given);
* ``masks.json``::

    {"image": {"file_name": "photo.jpg" | null, "height": H, "width": W},
     "model": "mobile_sam",                      # architecture (registry name)
     "embedding": "photo.safetensors" | null,    # --embedding file used instead of the encoder
     "prompts": {"points": [[x, y], ...], "labels": [1, ...], "box": [x0, y0, x1, y1] | null,
                 "mask_input": "prev.png" | null, "multimask": false,
                 "text": "the dog on the left" | null, "semantic": false},
     "annotations": [                            # sorted by predicted IoU, descending
       {"id": 0, "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"},
        "bbox": [x, y, w, h], "area": 1234, "predicted_iou": 0.93, "mask_file": "mask_0.png"}]}

Coordinates are original-image pixels. Errors print ``samkit: error: <one line>`` on stderr and
exit with code 2, leaving no partial output.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from samkit import __version__
from samkit.data.image_io import load_image
from samkit.data.masks import mask_area, mask_bbox_xywh, mask_colors, mask_to_rle, overlay_masks, save_mask_png
from samkit.data.staging import staged_outputs
from samkit.errors import CheckpointError, ImageError, PromptError, SamkitError
from samkit.models.hub import cache_dir
from samkit.models.load import cached_path, is_cached, load_model
from samkit.models.registry import REGISTRY, ModelSpec
from samkit.predict.predictor import Prediction, Predictor, read_embedding
from samkit.predict.text import require_text_encoder
from samkit.predict.transforms import mask_to_low_res_logits

DEFAULT_MODEL = "samkit_tiny"  # `segment` / `embed` / `eval` without --model or --checkpoint: the bundled model
DEFAULT_TEXT_MODEL = "samkit_tiny_text"  # `segment --text` / `eval refer` without a model: the bundled text model
DEMO_MODELS = ("samkit_tiny", "mobile_sam", "sam_vit_b", "sam_vit_l", "sam_vit_h")  # `demo`: the first one present
DEMO_OUT = "demo_out"
SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "sample.png"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_SEGMENT_DESCRIPTION = ("Segment IMAGE from prompts (pixel coordinates, x to the right, y down) and write "
                        "mask_0.png.., overlay.png and masks.json into --out (best mask first).")
_FG, _BG, _BOX = (40, 220, 60), (230, 40, 40), (250, 210, 0)  # overlay colours of the prompts


@dataclass(frozen=True)
class Prompts:
    """Prompts of one ``segment`` run, in original-image pixels."""

    points: list[tuple[float, float]]
    labels: list[int]
    box: tuple[float, float, float, float] | None = None
    mask_input: str | None = None
    multimask: bool = False
    text: str | None = None
    semantic: bool = False

    def record(self) -> dict:
        """The ``prompts`` entry of masks.json."""
        return {"points": [list(p) for p in self.points], "labels": self.labels,
                "box": None if self.box is None else list(self.box), "mask_input": self.mask_input,
                "multimask": self.multimask, "text": self.text, "semantic": self.semantic}


@dataclass(frozen=True)
class ModelChoice:
    """--model / --checkpoint as given (None = not given)."""

    name: str | None = None
    checkpoint: str | None = None


# ----------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input or usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return args.func(args)
    except SamkitError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # stdout closed early (`samkit models | head`): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.filename is None:  # not about a user path: a bug or system failure, keep the traceback
            raise
        return _fail(f"{exc.strerror or exc}: {exc.filename}")
    except KeyboardInterrupt:
        print("samkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    """Print ``samkit: error: <message>`` on one line to stderr; return the error exit status."""
    print(f"samkit: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one ``samkit: error:`` line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"samkit: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = _Parser(prog="samkit", description="Promptable image segmentation with Segment Anything models.")
    parser.add_argument("--version", action="version", version=f"samkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_segment(commands.add_parser("segment", help="segment an image from point / box / mask / text prompts",
                                     description=_SEGMENT_DESCRIPTION))
    _add_embed(commands.add_parser("embed", help="compute an image embedding once, to prompt it later"))
    commands.add_parser("models", help="list the known models and which checkpoints are cached").set_defaults(
        func=_cmd_models)
    _add_demo(commands.add_parser("demo", help="segment a sample image with a locally available model"))
    _add_train(commands.add_parser("train", help="train or fine-tune a model from a config file (JSON)"))
    _add_train_text(commands.add_parser(
        "train-text", help="train a text prompter on a frozen SAM (samkit_tiny_text; config file, JSON)"))
    _add_eval(commands.add_parser("eval", help="run a benchmark: interactive, single-point, boxes, edges, refer",
                                  description=_EVAL_DESCRIPTION))
    _add_everything(commands.add_parser("everything", help="segment everything in an image or a folder of images",
                                        description=_EVERYTHING_DESCRIPTION))
    return parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME",
                   help=f"registry model (see 'samkit models'; default {DEFAULT_MODEL}); with --checkpoint, "
                        "the architecture to load PATH into")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (or EVF-SAM checkpoint directory); alone, its architecture is "
                        "recognised from its contents")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="refuse images larger than N pixels (default: $SAMKIT_MAX_IMAGE_PIXELS or 200 million)")


def _add_segment(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", metavar="IMAGE", help="image file (optional with --embedding: no overlay)")
    p.add_argument("--point", action="append", type=parse_point, default=[], metavar="X,Y[,LABEL]",
                   help="point prompt; LABEL 1 = foreground (default), 0 = background; repeatable")
    p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box prompt (corners)")
    p.add_argument("--mask-input", metavar="PNG",
                   help="binary mask of the image's size (e.g. an earlier mask_0.png) to refine")
    p.add_argument("--text", metavar="SENTENCE",
                   help="text prompt, e.g. 'the dog on the left' (text-promptable models: --model evf_sam)")
    p.add_argument("--semantic", action="store_true",
                   help="with --text: ask for all instances ('[semantic] ' prefix of evf_sam_multitask)")
    p.add_argument("--multimask", action="store_true", help="return 3 candidate masks instead of 1")
    p.add_argument("--embedding", metavar="FILE",
                   help="embedding from 'samkit embed': skips the image encoder; its model is the default")
    _add_model_options(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.set_defaults(func=_cmd_segment)


def _add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="image file")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="embedding file (.safetensors)")
    _add_model_options(p)
    p.set_defaults(func=_cmd_embed)


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", type=Path, metavar="PATH", help="image to segment (default: a bundled sample)")
    p.add_argument("--out", type=Path, default=Path(DEMO_OUT), metavar="DIR",
                   help=f"output folder (default: {DEMO_OUT})")
    p.set_defaults(func=_cmd_demo)


_EVAL_DESCRIPTION = (
    "interactive: RITM click protocol (NoC/NoF@85/90/95, mIoU@k) and single-point: SAM's first-click mIoU, "
    "on --dataset KIND --root PATH (grabcut, berkeley, davis, ...); boxes: GT-box-prompted mask AP on "
    "--coco-json FILE --images DIR; edges: zero-shot ODS/OIS on BSDS500 (--root, --split test); refer: "
    "referring-expression cIoU/gIoU/precision@0.5-0.9 of a text-promptable model on --refs FILE (RefCOCO-style "
    "refs.json). Writes <protocol>.json and plots into --out (refer: --out may also be a .json file, or left out).")


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="training config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the config's out_dir")
    p.add_argument("--out-dir", metavar="DIR", help="override the config's out_dir")
    p.add_argument("--steps", type=int, metavar="N", help="override the config's number of steps")
    p.add_argument("--stop-at", type=int, metavar="N",
                   help="stop after step N (checkpoint and export); the schedule still spans all steps")
    p.set_defaults(func=_cmd_train)


def _add_train_text(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="text training config (configs/samkit_tiny_text_*.json)")
    p.add_argument("--out-dir", metavar="DIR", help="override the config's out_dir")
    p.add_argument("--steps", type=int, metavar="N", help="override the config's number of steps")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (e.g. 1 per run for parallel runs)")
    p.set_defaults(func=_cmd_train_text)


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", choices=["interactive", "single-point", "boxes", "edges", "refer"])
    p.add_argument("--dataset", default=None, metavar="KIND",
                   help="dataset layout for interactive/single-point (grabcut, berkeley, davis, bsds500, coco, "
                        "yolo, sa1b); edges always reads bsds500")
    p.add_argument("--root", metavar="PATH", help="dataset folder")
    p.add_argument("--split", default=None, help="split for bsds500/yolo (edges: default test); refer: keep one split (testA, val, ...)")
    p.add_argument("--coco-json", metavar="FILE", help="boxes: COCO annotation file")
    p.add_argument("--images", metavar="DIR", help="boxes: image folder; refer: image root (default: the refs file's folder)")
    p.add_argument("--max-clicks", type=int, default=20, help="interactive: clicks per object (default 20)")
    p.add_argument("--points-per-side", type=int, default=16, help="edges: prompt grid (default 16)")
    p.add_argument("--refs", metavar="FILE", help="refer: refs JSON/JSONL file, a refer-toolkit refs(unc).p with instances.json beside it, or a folder with either")
    p.add_argument("--max-samples", "--limit", type=int, metavar="N",
                   help="evaluate only the first N images (refer: expressions)")
    _add_model_options(p)
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder for JSON and plots (required; refer: optional, DIR or a .json file)")
    p.set_defaults(func=_cmd_eval)


_EVERYTHING_DESCRIPTION = (
    "SAM's automatic mask generator (point grid, IoU and stability filters, NMS, optional crops) on IMAGE "
    "or on every image of a folder. --format sa1b: <stem>.json per image; coco: one annotations.json; "
    "png: <stem>/mask_NNN.png. Resumable: images whose output exists are skipped. A failing image is "
    "reported in errors.jsonl and the run goes on; summary.json holds the counts.")


def _add_everything(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", metavar="IMAGE|DIR", type=Path, help="an image, or a folder of images")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--format", dest="fmt", choices=["sa1b", "coco", "png"], default="sa1b")
    p.add_argument("--coco-segmentation", choices=["rle", "polygon"], default="rle",
                   help="coco: masks as RLE (exact, default) or polygons (outer contours)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>.overlay.png")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray actors, one model each (pip install 'samkit[ray]')")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="ray: number of actors (default 2)")
    p.add_argument("--address", metavar="ADDR", help="ray: an existing cluster (default: start a local one)")
    p.add_argument("--points-per-side", type=int, default=32, metavar="N")
    p.add_argument("--points-per-batch", type=int, default=64, metavar="N")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88, metavar="T")
    p.add_argument("--stability-score-thresh", type=float, default=0.95, metavar="T")
    p.add_argument("--stability-score-offset", type=float, default=1.0, metavar="T")
    p.add_argument("--box-nms-thresh", type=float, default=0.7, metavar="T")
    p.add_argument("--crop-n-layers", type=int, default=0, metavar="N")
    p.add_argument("--min-mask-region-area", type=int, default=0, metavar="PX")
    _add_model_options(p)
    p.set_defaults(func=_cmd_everything)


# ---------------------------------------------------------------------------------------- prompt parsing


def _numbers(text: str, counts: tuple[int, ...], form: str) -> list[float]:
    """Comma-separated finite numbers; an argparse type error naming ``text`` otherwise."""
    parts = [s.strip() for s in text.split(",")]
    try:
        values = [float(s) for s in parts]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"bad value {text!r}: expected {form}")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"bad value {text!r}: coordinates must be finite numbers")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` -> (x, y, label); LABEL is 1 (foreground, default) or 0 (background)."""
    values = _numbers(text, (2, 3), "X,Y or X,Y,LABEL (numbers; LABEL 1 = foreground, 0 = background)")
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(
            f"bad value {text!r}: label must be 1 (foreground) or 0 (background), got {label:g}")
    return values[0], values[1], int(label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` -> (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1."""
    x0, y0, x1, y1 = _numbers(text, (4,), "X0,Y0,X1,Y1 (four numbers: top-left and bottom-right corners)")
    if x1 < x0 or y1 < y0:
        axis = "x1 < x0" if x1 < x0 else "y1 < y0"
        raise argparse.ArgumentTypeError(
            f"bad value {text!r}: {axis}; expected X0,Y0,X1,Y1 (top-left, bottom-right)")
    return x0, y0, x1, y1


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


# ------------------------------------------------------------------------------------------ models


def _load(choice: ModelChoice, default: str) -> Predictor:
    """A predictor for --model / --checkpoint (``default`` when neither is given)."""
    if choice.checkpoint is None:
        return Predictor(load_model(choice.name or default))
    if not Path(choice.checkpoint).exists():  # a file, or a Hugging Face-format directory (EVF-SAM)
        raise CheckpointError(f"checkpoint not found: {choice.checkpoint}")
    if choice.name is None:
        return Predictor(load_model(choice.checkpoint))
    return Predictor(load_model(choice.name, checkpoint=choice.checkpoint))


def _embedding_arch(path: str) -> str:
    """Architecture recorded in an embedding file written by ``samkit embed``."""
    return read_embedding(path)[0]["arch"]


def _disk_size(path: Path) -> int:
    """Bytes of a file, or of every file in a checkpoint directory."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _human_size(n: int | None) -> str:
    return "?" if n is None else tqdm.format_sizeof(n, "B", 1000)


# ------------------------------------------------------------------------------------------ segment


def _cmd_segment(args: argparse.Namespace) -> int:
    if args.image is None and args.embedding is None:
        raise SamkitError("give an IMAGE to segment, or --embedding FILE written by 'samkit embed'")
    if not args.point and args.box is None and args.mask_input is None and args.text is None:
        raise PromptError("no prompt given: add --point X,Y[,LABEL], --box X0,Y0,X1,Y1, --mask-input PNG "
                          "or --text SENTENCE")
    if args.text is not None and not args.text.strip():
        raise PromptError("--text is empty: describe the object to segment, e.g. --text 'the dog on the left'")
    if args.semantic and args.text is None:
        raise PromptError("--semantic goes with --text")
    prompts = Prompts(points=[(x, y) for x, y, _ in args.point], labels=[lab for _, _, lab in args.point],
                      box=args.box, mask_input=args.mask_input, multimask=args.multimask, text=args.text,
                      semantic=args.semantic)
    image = None if args.image is None else load_image(args.image, max_pixels=args.max_pixels)
    segment(image, args.image, prompts, ModelChoice(args.model, args.checkpoint), args.out,
            embedding=args.embedding, max_pixels=args.max_pixels)
    return 0


def segment(image: np.ndarray | None, image_path: str | os.PathLike | None, prompts: Prompts, choice: ModelChoice,
            out: Path, embedding: str | None = None, max_pixels: int | None = None) -> Prediction:
    """Run one prompt set and write masks, overlay and masks.json into ``out`` (all or nothing); print a summary.

    Without ``embedding`` the image encoder runs on ``image``; with it, ``image`` may be None (no overlay).
    """
    size = None if image is None else (int(image.shape[0]), int(image.shape[1]))
    with staged_outputs(out) as stage:
        mask_input = None
        if prompts.mask_input is not None and size is not None:  # fail before the slow model work
            mask_input = _read_mask_input(prompts.mask_input, size, max_pixels)
        default = (_embedding_arch(embedding) if embedding is not None
                   else DEFAULT_TEXT_MODEL if prompts.text is not None else DEFAULT_MODEL)
        predictor = _load(choice, default)
        if prompts.text is not None:
            require_text_encoder(predictor.model)  # before the image encoder runs
        if embedding is None:
            predictor.set_image(image)
        else:
            predictor.load_embedding(embedding, image_size=size)
        size = predictor.original_size
        if prompts.mask_input is not None and mask_input is None:
            mask_input = _read_mask_input(prompts.mask_input, size, max_pixels)
        if mask_input is not None:  # the model's own low-res mask frame (256 for 1024 inputs)
            mask_input = mask_to_low_res_logits(mask_input, predictor.model.img_size,
                                                predictor.model.prompt_encoder.mask_input_size[0])
        pred = predictor.predict(points=prompts.points or None, labels=prompts.labels or None, box=prompts.box,
                                 mask_input=mask_input, multimask=prompts.multimask, text=prompts.text,
                                 semantic=prompts.semantic)
        header = {"image": {"file_name": None if image_path is None else Path(image_path).name,
                            "height": size[0], "width": size[1]},
                  "model": predictor.model.arch,
                  "embedding": None if embedding is None else Path(embedding).name,
                  "prompts": prompts.record()}
        annotations = _write_masks(stage, pred, header)
        if image is not None:
            _save_png(stage / "overlay.png", _overlay(image, pred, prompts))
    _print_summary(header, annotations, out, overlay=image is not None)
    return pred


def _write_masks(stage: Path, pred: Prediction, header: dict) -> list[dict]:
    """Write mask_i.png (best predicted IoU first) and masks.json; return the annotations."""
    annotations = []
    for rank, i in enumerate(_ranking(pred)):
        mask = pred.masks[i]
        name = f"mask_{rank}.png"
        save_mask_png(stage / name, mask)
        annotations.append({"id": rank, "segmentation": mask_to_rle(mask), "bbox": mask_bbox_xywh(mask),
                            "area": mask_area(mask), "predicted_iou": float(pred.scores[i]), "mask_file": name})
    (stage / "masks.json").write_text(json.dumps({**header, "annotations": annotations}, indent=2) + "\n")
    return annotations


def _ranking(pred: Prediction) -> list[int]:
    """Mask indices by predicted IoU, best first (ties keep the model's order)."""
    return [int(i) for i in np.argsort(-pred.scores, kind="stable")]


def _overlay(image: np.ndarray, pred: Prediction, prompts: Prompts) -> np.ndarray:
    """All masks tinted (colour by rank, best painted last so it is on top), then the prompts drawn."""
    order = _ranking(pred)
    colors = mask_colors(len(order))
    out = overlay_masks(image, pred.masks[order[::-1]], colors=colors[::-1])
    radius = max(3, round(min(image.shape[:2]) / 100))
    for (x, y), label in zip(prompts.points, prompts.labels):
        centre = (round(x), round(y))
        cv2.circle(out, centre, radius + 1, (255, 255, 255), thickness=-1, lineType=cv2.LINE_AA)
        cv2.circle(out, centre, radius, _FG if label == 1 else _BG, thickness=-1, lineType=cv2.LINE_AA)
    if prompts.box is not None:
        x0, y0, x1, y1 = (round(v) for v in prompts.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), _BOX, thickness=max(1, radius // 2))
    return out


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


# -------------------------------------------------------------------------------------------- embed


def _cmd_embed(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError

    out: Path = args.out
    if out.is_dir():
        raise SamkitError(f"--out {out} is a directory; give the embedding file's name, "
                          f"e.g. {out / 'image.safetensors'}")
    image = load_image(args.image, max_pixels=args.max_pixels)
    predictor = _load(ModelChoice(args.model, args.checkpoint), DEFAULT_MODEL)
    predictor.set_image(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        predictor.save_embedding(out)
    except SafetensorError as exc:
        raise SamkitError(f"cannot write {out}: {exc}") from None
    h, w = predictor.original_size
    print(f"{predictor.model.arch}: embedding of {args.image} ({w} x {h}) -> {out}")
    return 0


# ------------------------------------------------------------------------------------------- models


def _cmd_models(args: argparse.Namespace) -> int:
    root = cache_dir()
    print(f"cache dir: {root}  (set $SAMKIT_HOME to use another)")
    rows = [("NAME", "SIZE", "CACHED", "FILE", "DESCRIPTION")]
    details: list[list[str]] = [[]]
    for spec in REGISTRY.values():
        path = cached_path(spec)
        cached = is_cached(spec)
        size = _disk_size(path) if cached else spec.size
        where = ("bundled" if spec.bundled else "yes") if cached else "no"
        shown = (spec.filename + "/" if spec.hub_repo else spec.filename) if spec.filename else "-"
        rows.append((spec.name, _human_size(size), where, shown, spec.description))
        details.append(([f"path: {path}"] if cached else []) + [f"url:  {spec.url or '-'}"])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for row, lines in zip(rows, details):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])
        for line in lines:
            print(f"    {line}")
    return 0


# -------------------------------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from samkit.train import load_config, train

    try:
        cfg = load_config(args.config)
        overrides = {k: v for k, v in (("out_dir", args.out_dir), ("steps", args.steps), ("stop_at", args.stop_at))
                     if v is not None}
        cfg = dataclasses.replace(cfg, resume=args.resume or cfg.resume, **overrides).validate()
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SamkitError(str(exc)) from None
    result = train(cfg)
    print(f"trained {result.steps} steps, final loss {result.final_loss}; model: {result.model_path}")
    return 0


def _cmd_train_text(args: argparse.Namespace) -> int:
    import dataclasses

    from samkit.train.text import load_text_config, train_text

    try:
        cfg = load_text_config(args.config)
        overrides = {k: v for k, v in (("out_dir", args.out_dir), ("steps", args.steps), ("threads", args.threads))
                     if v is not None}
        cfg = dataclasses.replace(cfg, **overrides).validate()
    except (ValueError, FileNotFoundError) as exc:
        raise SamkitError(str(exc)) from None
    summary = train_text(cfg)
    test = summary.get("test") or {}
    print(f"trained {cfg.variant} {summary['steps']} steps in {summary['train_s']:.0f} s "
          f"({summary['images_per_s']:.1f} images/s); test cIoU {test.get('ciou')} gIoU {test.get('giou')}; "
          f"out: {cfg.out_dir}")
    return 0


# --------------------------------------------------------------------------------------------- eval


def _cmd_eval(args: argparse.Namespace) -> int:
    from samkit.data.readers import open_dataset
    from samkit.eval import PROTOCOLS, write_report

    if args.protocol == "refer":
        return _cmd_eval_refer(args)
    if args.out is None:
        raise SamkitError(f"eval {args.protocol} needs --out DIR")
    common = {"max_samples": args.max_samples, "progress": sys.stderr.isatty()}
    if args.protocol == "boxes":
        if not (args.coco_json and args.images):
            raise SamkitError("eval boxes needs --coco-json FILE and --images DIR")
        data: tuple = (args.coco_json, args.images)
    else:
        kind = "bsds500" if args.protocol == "edges" else args.dataset
        if not (kind and args.root):
            raise SamkitError(f"eval {args.protocol} needs --root PATH"
                              + ("" if args.protocol == "edges" else " and --dataset KIND"))
        split = args.split or ("test" if args.protocol == "edges" else None)
        kwargs = {} if split is None else {"split": split}
        data = (open_dataset(kind, args.root, **kwargs),)
    if args.protocol == "interactive":
        common["max_clicks"] = args.max_clicks
    if args.protocol == "edges":
        common["points_per_side"] = args.points_per_side
    predictor = _load(ModelChoice(args.model, args.checkpoint), DEFAULT_MODEL)
    results = PROTOCOLS[args.protocol](predictor, *data, **common)
    results["model"] = predictor.model.arch
    results["weights"] = getattr(predictor.model, "weights", None)
    files = write_report(results, args.out, args.protocol.replace("-", "_"))
    print(json.dumps({k: v for k, v in results.items() if _is_headline(v)}, indent=1))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_eval_refer(args: argparse.Namespace) -> int:
    """``eval refer``: one mask per expression from ``predict(text=..., multimask=False)``."""
    from samkit.data.refer import open_refs
    from samkit.eval import evaluate_refer, write_report

    if not args.refs:
        raise SamkitError("eval refer needs --refs FILE (a RefCOCO-style refs.json)")
    options = {k: v for k, v in (("image_root", args.images), ("split", args.split)) if v is not None}
    samples = open_refs(args.refs, **options)
    predictor = _load(ModelChoice(args.model, args.checkpoint), DEFAULT_TEXT_MODEL)
    require_text_encoder(predictor.model)  # before any image is encoded
    results = evaluate_refer(predictor, samples, max_samples=args.max_samples, progress=sys.stderr.isatty())
    results.update(model=predictor.model.arch, weights=getattr(predictor.model, "weights", None), refs=str(args.refs))
    files = []
    if args.out is not None:  # a .json file, else a folder getting refer.json
        out_dir, name = (args.out.parent, args.out.stem) if args.out.suffix.lower() == ".json" else (args.out, "refer")
        files = write_report(results, out_dir, name)
    print(json.dumps({k: v for k, v in results.items() if _is_headline(v)}, indent=1))
    for group, m in results["by_group"].items():
        print(f"  {group}: {m['num_expressions']} expressions, cIoU {m['ciou']:.4f}, gIoU {m['giou']:.4f}")
    if files:
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _is_headline(value: object) -> bool:
    """Scalars, flat dicts of scalars and short numeric lists: the figures worth printing."""
    scalar = (int, float, str, type(None))
    if isinstance(value, scalar):
        return True
    if isinstance(value, dict):
        return all(isinstance(v, scalar) for v in value.values())
    return isinstance(value, list) and len(value) <= 20 and all(isinstance(v, (int, float)) for v in value)


# --------------------------------------------------------------------------------------- everything


def _cmd_everything(args: argparse.Namespace) -> int:
    from samkit.engine.everything import EverythingJob, run_local, run_ray

    settings = {"points_per_side": args.points_per_side, "points_per_batch": args.points_per_batch,
                "pred_iou_thresh": args.pred_iou_thresh, "stability_score_thresh": args.stability_score_thresh,
                "stability_score_offset": args.stability_score_offset,
                "box_nms_thresh": args.box_nms_thresh, "crop_n_layers": args.crop_n_layers,
                "min_mask_region_area": args.min_mask_region_area}
    if args.points_per_side < 1 or args.points_per_batch < 1 or args.crop_n_layers < 0 or args.workers < 1:
        raise SamkitError("--points-per-side, --points-per-batch and --workers must be >= 1, --crop-n-layers >= 0")
    model = args.model or (None if args.checkpoint else DEFAULT_MODEL)
    job = EverythingJob(args.inputs, args.out, args.fmt, model=model or args.checkpoint,
                        checkpoint=args.checkpoint if model else None, generator=settings, overlay=args.overlay,
                        coco_segmentation=args.coco_segmentation, max_pixels=args.max_pixels)
    if args.engine == "ray":
        summary = run_ray(job, workers=args.workers, address=args.address, progress=sys.stderr.isatty())
    else:
        summary = run_local(job, progress=sys.stderr.isatty())
    print(f"everything: {summary['processed']} image(s) segmented ({summary['masks']} masks), "
          f"{summary['skipped_done']} already done, {summary['failed']} failed; {summary['seconds']:.1f} s -> {args.out}")
    for failure in summary["failures"]:
        print(f"  failed: {failure['image']}: {failure['reason']}")
    return 0 if not summary["failed"] else 1


# --------------------------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    spec = _first_cached(DEMO_MODELS)
    if spec is None:
        print(_download_instructions())
        return 0
    path = args.image or SAMPLE_IMAGE
    image = load_image(path)
    h, w = image.shape[:2]
    prompts = Prompts(points=[(w / 2, h / 2)], labels=[1], multimask=True)
    print(f"demo: {spec.name} ({cached_path(spec)}), one foreground point at the centre of {path}")
    segment(image, path, prompts, ModelChoice(name=spec.name), args.out)
    return 0


def _first_cached(names: Sequence[str]) -> ModelSpec | None:
    """The first of ``names`` whose released checkpoint is in the cache dir."""
    for name in names:
        path = cached_path(REGISTRY[name])
        if path is not None and path.is_file():
            return REGISTRY[name]
    return None


def _download_instructions() -> str:
    root = cache_dir()
    lines = [f"samkit demo needs a model checkpoint, and there is none in {root}",
             "(the cache dir: $SAMKIT_HOME, default ~/.cache/samkit). Download one of these files "
             "(mobile_sam is the smallest and fastest) and put it there under the same file name:"]
    for name in DEMO_MODELS:
        spec = REGISTRY[name]
        if spec.url is None:
            continue
        lines.append(f"  {name:<11} {_human_size(spec.size):>7}  {spec.url}\n  {'':<20} -> {cached_path(spec)}")
    lines.append("Then run 'samkit demo' again. ('samkit segment IMAGE --point X,Y --model mobile_sam --out DIR' "
                 "downloads the checkpoint itself.)")
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
