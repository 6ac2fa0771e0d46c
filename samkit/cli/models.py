"""``samkit models`` (the registry, the cache dir, what is downloaded) and ``samkit demo``."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from samkit.cli.common import ModelChoice, check_writable, earlier_outputs, remove_stale
from samkit.cli.segment import RUN_FILES, segment
from samkit.data.formats import SegmentPrompts
from samkit.data.image_io import load_image, require_min_size
from samkit.data.staging import staged_outputs
from samkit.models.hub import cache_dir
from samkit.models.load import cached_path, is_cached
from samkit.models.registry import REGISTRY, ModelSpec

DEMO_MODELS = ("samkit_tiny", "mobile_sam", "sam_vit_b", "sam_vit_l", "sam_vit_h")  # `demo`: the first one present
DEMO_OUT = "demo_out"
SAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "sample.png"
MODELS_DESCRIPTION = ("List every registry model: size, whether its checkpoint is cached (or bundled), its file "
                      "and URL. The cache dir is $SAMKIT_HOME (default ~/.cache/samkit).")
DEMO_DESCRIPTION = ("Segment an image (default: a bundled sample) from one click at its centre with the first "
                    f"model available offline ({', '.join(DEMO_MODELS)}); writes {DEMO_OUT}/ (replacing an earlier "
                    "demo's files).")


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Register ``models`` or ``demo``."""
    if name == "demo":
        p = commands.add_parser(name, help=help, description=DEMO_DESCRIPTION)
        p.add_argument("--image", type=Path, metavar="PATH", help="image to segment (default: a bundled sample)")
        p.add_argument("--out", type=Path, default=Path(DEMO_OUT), metavar="DIR", help="output folder")
        p.set_defaults(func=run_demo)
        return p
    p = commands.add_parser(name, help=help, description=MODELS_DESCRIPTION)
    p.set_defaults(func=run_models)
    return p


def run_models(args: argparse.Namespace) -> int:
    root = cache_dir()
    print(f"cache dir: {root}  (set $SAMKIT_HOME to use another)")
    rows = [("NAME", "SIZE", "CACHED", "FILE", "DESCRIPTION")]
    details: list[list[str]] = [[]]
    for spec in REGISTRY.values():
        path = cached_path(spec)
        cached = is_cached(spec)
        size = _disk_size(path) if cached and path is not None else spec.size
        where = ("bundled" if spec.bundled else "yes") if cached else "no"
        shown = (spec.filename + "/" if spec.hub_repo else spec.filename) if spec.filename else "-"
        rows.append((spec.name, _human_size(size), where, shown, spec.description))
        details.append(([f"path: {path}"] if cached else []) + [f"url:  {spec.url or '-'}"])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for row, lines in zip(rows, details, strict=False):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[-1])
        for line in lines:
            print(f"    {line}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    spec = _first_cached(DEMO_MODELS)
    if spec is None:
        print(_download_instructions())
        return 0
    path = args.image or SAMPLE_IMAGE
    check_writable(args.out)
    image = load_image(path)
    require_min_size(image, path)
    h, w = image.shape[:2]
    prompts = SegmentPrompts(points=[(w / 2, h / 2)], labels=[1], multimask=True)
    print(f"demo: {spec.name} ({cached_path(spec)}), one foreground point at the centre of {path}")
    found = earlier_outputs(args.out, RUN_FILES)  # the demo folder is samkit's own: an earlier demo is replaced
    with staged_outputs(args.out) as stage:
        header, annotations = segment(image, Path(path), prompts, ModelChoice(name=spec.name), stage)
        written = {p.name for p in stage.iterdir()}
    remove_stale(found, written)
    print(f"{header['model']}: {len(annotations)} mask(s) -> {args.out} (masks.json, mask_*.png, overlay.png)")
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
             ("(the cache dir: $SAMKIT_HOME, default ~/.cache/samkit). Download one of these files "
              "(mobile_sam is the smallest and fastest) and put it there under the same file name:")]
    for name in DEMO_MODELS:
        spec = REGISTRY[name]
        if spec.url is None:
            continue
        lines.append(f"  {name:<11} {_human_size(spec.size):>7}  {spec.url}\n  {'':<20} -> {cached_path(spec)}")
    lines.append("Then run 'samkit demo' again. ('samkit segment IMAGE --point X,Y --model mobile_sam --out DIR' "
                 "downloads the checkpoint itself.)")
    return "\n".join(lines)


def _disk_size(path: Path) -> int:
    """Bytes of a file, or of every file in a checkpoint directory."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _human_size(n: int | None) -> str:
    return "?" if n is None else tqdm.format_sizeof(n, "B", 1000)
