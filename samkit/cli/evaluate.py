"""``samkit eval PROTOCOL``: the benchmarks of :mod:`samkit.eval`; writes <protocol>.json (+ plots) and prints
the headline figures as a table."""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from samkit.cli.args import add_model_options, positive_int
from samkit.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_TEXT_MODEL,
    ModelChoice,
    check_writable,
    load_predictor,
    logs_lines,
    setup_runtime,
    with_refiner,
)
from samkit.data.readers import open_dataset
from samkit.data.refer import open_refs
from samkit.errors import SamkitError
from samkit.eval import PROTOCOLS, evaluate_refer, write_report
from samkit.predict.grabcut import BASELINE_NAME, GrabCutPredictor
from samkit.predict.predictor import Predictor
from samkit.predict.text import require_text_encoder

DESCRIPTION = (
    "interactive: RITM click protocol (NoC/NoF@85/90/95, mIoU@k) and single-point: SAM's first-click mIoU, "
    "on --dataset KIND --root PATH (grabcut, berkeley, davis, ...); boxes: GT-box-prompted mask AP on "
    "--coco-json FILE --images DIR; edges: zero-shot ODS/OIS on BSDS500 (--root, --split test); refer: "
    "referring-expression cIoU/gIoU/precision@0.5-0.9 of a text-promptable model on --refs FILE (RefCOCO-style "
    "refs.json). Writes <protocol>.json and plots into --out (refer: --out may also be a .json file, or left out) "
    "and prints the headline figures as a table. Without a terminal, progress is one line per 10 samples. "
    f"--model {BASELINE_NAME} evaluates OpenCV's GrabCut driven by the same clicks (the classical baseline; "
    "interactive and single-point).")


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = commands.add_parser(name, help=help, description=DESCRIPTION)
    p.add_argument("protocol", choices=["interactive", "single-point", "boxes", "edges", "refer"])
    p.add_argument("--dataset", default=None, metavar="KIND",
                   help="dataset layout for interactive/single-point (grabcut, berkeley, davis, bsds500, coco, "
                        "yolo, sa1b); edges always reads bsds500")
    p.add_argument("--root", metavar="PATH", help="dataset folder")
    p.add_argument("--split", default=None,
                   help="split for bsds500/yolo (edges: default test); refer: keep one split (testA, val, ...)")
    p.add_argument("--coco-json", metavar="FILE", help="boxes: COCO annotation file")
    p.add_argument("--images", metavar="DIR",
                   help="boxes: image folder; refer: image root (default: the refs file's folder)")
    p.add_argument("--max-clicks", type=positive_int, default=20, help="interactive: clicks per object")
    p.add_argument("--points-per-side", type=positive_int, default=16, help="edges: prompt grid")
    p.add_argument("--refs", metavar="FILE",
                   help="refer: refs JSON/JSONL file, a refer-toolkit refs(unc).p with instances.json beside it, "
                        "or a folder with either")
    p.add_argument("--max-samples", "--limit", type=positive_int, metavar="N",
                   help="evaluate only the first N images (refer: expressions)")
    p.add_argument("--every", type=positive_int, default=1, metavar="N",
                   help="interactive / single-point: every Nth image only, from the first (a fixed subset, e.g. "
                        "--every 3 on a validation set between checkpoints); --max-samples counts within it")
    add_model_options(p, DEFAULT_MODEL)
    p.add_argument("--refiner", metavar="NAME|FILE",
                   help="interactive / single-point: refine every answer with a SAM-REF refiner (samkit_tiny_ref "
                        "or the more accurate, dearer samkit_tiny_ref_hq for samkit_tiny, or a refiner file)")
    p.add_argument("--mirror", action="store_true",
                   help="interactive / single-point: test-time mirror ensemble (each click also answered on the "
                        "left-right mirror of the image, logits averaged; twice the encoder and decoder work)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder for JSON and plots (required; refer: optional, DIR or a .json file)")
    p.set_defaults(func=run)
    return p


def _load(choice: ModelChoice, default: str) -> Predictor:
    """The predictor to evaluate (a seam for tests: they replace it with a stand-in)."""
    return load_predictor(choice, default)


def _check_options(args: argparse.Namespace) -> None:
    """Options that do not go together, refused before any data or model is read."""
    clicks = args.protocol in ("interactive", "single-point")
    if args.every != 1 and not clicks:
        raise SamkitError("--every takes every Nth image of a click benchmark: use it with eval interactive or "
                          "single-point")
    if args.refiner is not None and not clicks:
        raise SamkitError("--refiner refines answers to clicks: use it with eval interactive or single-point")
    if args.mirror and not clicks:
        raise SamkitError("--mirror answers clicks on the image and its mirror: use it with eval interactive or "
                          "single-point")
    if args.model == BASELINE_NAME:
        if args.refiner is not None or args.mirror:
            raise SamkitError(f"--model {BASELINE_NAME} is OpenCV's GrabCut: it takes no --refiner or --mirror")
        if args.checkpoint is not None:
            raise SamkitError(f"--model {BASELINE_NAME} is OpenCV's GrabCut: it takes no --checkpoint")
        if not clicks:
            raise SamkitError(f"--model {BASELINE_NAME} answers clicks: use it with eval interactive or single-point")


def _load_segmenter(args: argparse.Namespace) -> Predictor | GrabCutPredictor:
    """``--model opencv_grabcut``: the classical baseline (clicks only); else the model's predictor."""
    if args.model != BASELINE_NAME:
        return with_refiner(_load(ModelChoice.from_args(args), DEFAULT_MODEL), args.refiner, args.mirror)
    return GrabCutPredictor()


def _progress() -> bool | str:
    """A bar on a terminal, else a line per batch of samples (see :func:`samkit.eval.report.track`)."""
    return "log" if logs_lines() else True


def run(args: argparse.Namespace) -> int:
    setup_runtime(args)
    _check_options(args)
    if args.protocol == "refer":
        return _run_refer(args)
    if args.out is None:
        raise SamkitError(f"eval {args.protocol} needs --out DIR")
    check_writable(args.out)
    common: dict = {"max_samples": args.max_samples, "progress": _progress()}
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
        dataset = open_dataset(kind, args.root, **kwargs)
        data = (dataset if args.every == 1 else itertools.islice(dataset, 0, None, args.every),)
    if args.protocol == "interactive":
        common["max_clicks"] = args.max_clicks
    if args.protocol == "edges":
        common["points_per_side"] = args.points_per_side
    predictor = _load_segmenter(args)
    results = PROTOCOLS[args.protocol](predictor, *data, **common)
    model = getattr(predictor, "model", None)
    results["model"] = BASELINE_NAME if model is None else model.arch
    results["weights"] = getattr(model, "weights", None)
    results["refiner"] = args.refiner
    results["mirror"] = args.mirror
    results["every"] = args.every
    files = write_report(results, args.out, args.protocol.replace("-", "_"))
    print(format_table(results))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _run_refer(args: argparse.Namespace) -> int:
    """``eval refer``: one mask per expression from ``predict(text=..., multimask=False)``."""
    if not args.refs:
        raise SamkitError("eval refer needs --refs FILE (a RefCOCO-style refs.json)")
    options = {k: v for k, v in (("image_root", args.images), ("split", args.split)) if v is not None}
    samples = open_refs(args.refs, **options)
    predictor = _load(ModelChoice.from_args(args), DEFAULT_TEXT_MODEL)
    require_text_encoder(predictor.model)  # before any image is encoded
    results = evaluate_refer(predictor, samples, max_samples=args.max_samples, progress=_progress())
    results.update(model=predictor.model.arch, weights=getattr(predictor.model, "weights", None), refs=str(args.refs))
    files = []
    if args.out is not None:  # a .json file, else a folder getting refer.json
        out_dir, name = (args.out.parent, args.out.stem) if args.out.suffix.lower() == ".json" else (args.out, "refer")
        files = write_report(results, out_dir, name)
    print(format_table(results))
    for group, m in results["by_group"].items():
        print(f"  {group}: {m['num_expressions']} expressions, cIoU {m['ciou']:.4f}, gIoU {m['giou']:.4f}")
    if files:
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


def format_table(results: dict) -> str:
    """The headline figures of a result dict as a two-column table (scalars; dicts and short numeric lists
    one row per entry, e.g. ``noc@90``, ``miou_at_k[5]``); the per-object details stay in the JSON file."""
    rows: list[tuple[str, str]] = []
    for key, value in results.items():
        if isinstance(value, dict) and all(_is_scalar(v) for v in value.values()):
            rows.extend((f"{key}@{k}", _cell(v)) for k, v in value.items())
        elif isinstance(value, list) and len(value) <= 20 and all(isinstance(v, (int, float)) for v in value):
            rows.extend((f"{key}[{i}]", _cell(v)) for i, v in enumerate(value, start=1 if key.endswith("_k") else 0))
        elif _is_scalar(value):
            rows.append((key, _cell(value)))
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _is_scalar(value: object) -> bool:
    return isinstance(value, (int, float, str, type(None)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)
