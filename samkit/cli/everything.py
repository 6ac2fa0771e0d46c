"""``samkit everything``: SAM's automatic mask generator on an image or a folder (local or Ray engine).

Its generator flags are derived from :class:`samkit.predict.everything.EverythingSettings` (one flag per
field, help and default from the dataclass), so SAM's defaults live in one place.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from samkit.cli.args import add_model_options, add_overwrite_option, positive_int
from samkit.cli.common import (
    DEFAULT_MODEL,
    LineLog,
    ModelChoice,
    logs_lines,
    setup_runtime,
)
from samkit.engine.everything import (
    FORMATS,
    EverythingJob,
    explain_empty,
    run_local,
    run_ray,
)
from samkit.errors import SamkitError
from samkit.predict.everything import EverythingSettings

DESCRIPTION = (
    "SAM's automatic mask generator (point grid, IoU and stability filters, NMS, optional crops) on IMAGE or on "
    "every image of a folder. --format sa1b: <stem>.json per image; coco: one annotations.json; png: "
    "<stem>/mask_NNN.png; yolo: <stem>.txt (YOLO-seg); labelme: <stem>.json (LabelMe polygons); labelmap: "
    "<stem>.png (16-bit, 0 = background, i + 1 = mask i). Resumable: images whose output exists are skipped; a "
    "folder holds one job (other settings are refused unless --overwrite). A failing image is reported in "
    "errors.jsonl and the run goes on; summary.json holds the counts. When an image keeps no mask, the run says "
    "which filter removed the candidates and which flag to relax.")
_METAVARS = {int: "N", float: "T"}


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = commands.add_parser(name, help=help, description=DESCRIPTION)
    p.add_argument("inputs", metavar="IMAGE|DIR", type=Path, help="an image, or a folder of images")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="sa1b", help="output format")
    p.add_argument("--coco-segmentation", choices=["rle", "polygon"], default="rle",
                   help="coco: masks as RLE (exact) or polygons (outer contours)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>.overlay.png")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray actors, one model each (pip install 'samkit[ray]')")
    p.add_argument("--workers", type=positive_int, default=2, metavar="N", help="ray: number of actors")
    p.add_argument("--address", metavar="ADDR", help="ray: an existing cluster (default: start a local one)")
    group = p.add_argument_group("generator settings (SAM's automatic mask generator)")
    for f in dataclasses.fields(EverythingSettings):
        kind = int if f.type in (int, "int", "int | None") else float
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=f.default,
                           metavar=_METAVARS[kind], help=f.metadata["help"])
    add_model_options(p, DEFAULT_MODEL)
    add_overwrite_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    setup_runtime(args)
    settings = {name: getattr(args, name) for name in EverythingSettings.names()}
    try:
        EverythingSettings(**settings)
    except ValueError as exc:
        raise SamkitError(exc.args[0]) from None
    choice = ModelChoice.from_args(args)
    model, checkpoint = choice.model_or_checkpoint(DEFAULT_MODEL)
    job = EverythingJob(args.inputs, args.out, args.fmt, model=model, checkpoint=checkpoint, generator=settings,
                        overlay=args.overlay, coco_segmentation=args.coco_segmentation, max_pixels=args.max_pixels,
                        overwrite=args.overwrite, device=args.device)
    total = len(job.images()) if args.overwrite else len(job.pending()[0])
    log = LineLog("everything", total) if logs_lines() else None

    def report(result: dict) -> None:
        name = Path(result["image"]).name
        if not result["ok"]:
            line = f"{name}: failed: {result['reason']}"
        else:
            t = result.get("timings") or {}
            line = (f"{name}: {result['masks']} masks in {result['seconds']:.1f} s (encoder {t.get('encoder', 0):.1f}"
                    f", decoder {t.get('decoder', 0):.1f}, post-processing {t.get('postprocess', 0):.1f})")
            if not result["masks"]:
                line += f"; {explain_empty(result)}"
        if log is not None:
            log(line)

    progress = not logs_lines()
    if args.engine == "ray":
        summary = run_ray(job, workers=args.workers, address=args.address, progress=progress, on_result=report)
    else:
        summary = run_local(job, progress=progress, on_result=report)
    print(f"everything: {summary['processed']} image(s) segmented ({summary['masks']} masks), "
          f"{summary['skipped_done']} already done, {summary['failed']} failed; "
          f"{summary['seconds']:.1f} s -> {args.out}")
    for empty in summary["without_masks"]:
        print(f"  {Path(empty['image']).name}: {empty['why']}")
    for failure in summary["failures"]:
        print(f"  failed: {failure['image']}: {failure['reason']}")
    return 0 if not summary["failed"] else 1


