"""Refiner cost: seconds per click of samkit_tiny alone, with each SAM-REF refiner (its file's own selector
setting, dynamic selector, global stage only, local stage on every click), and of a same-size early-fusion
baseline that re-runs the refiner's image branch on every click (what an early-fusion model pays), on a 640x480
image; also samkit_tiny's test-time mirror ensemble (``Predictor(mirror=True)``, no refiner).

    .venv/bin/python bench/refiner.py [--refiner samkit_tiny_ref samkit_tiny_ref_hq|FILE ...] [--clicks 50]
                                      [--out bench/results/refiner.json]

One process, CPU, fp32, the variants (and refiners) interleaved session by session (a busy machine slows them
alike). Clicks come in sessions of ``--session`` clicks (all earlier clicks included, the kept mask's low-res
logits fed back, as the interactive evaluation; a click's time includes reading them); the first ``--warmup``
clicks are not timed; each figure is the median of ``--clicks`` timed clicks. Without a trained refiner file an
untrained refiner of the shipped settings is timed (speed does not depend on weight values; the selector's choices do,
so the dynamic figure is only meaningful with the trained file).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _report import new_report, save_report
from PIL import Image

from samkit.data.image_io import load_image
from samkit.errors import CheckpointError
from samkit.models.load import load_model
from samkit.models.sam import Sam
from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, SamRefiner, load_refiner

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGE = REPO.parent / "shared" / "data" / "GrabCut" / "data_GT" / "124080.jpg"
SAMPLE_IMAGE = REPO / "samkit" / "assets" / "sample.png"


MIRROR = "samkit_tiny/mirror"  # Predictor(mirror=True): each click also on the mirror image, one batch of 2


def click_sessions(n: int, session: int, size: tuple[int, int], seed: int = 0) -> list[list[tuple[float, float, int]]]:
    """n clicks (x, y, label) in sessions of ``session`` clicks; the first of each is positive."""
    rng = np.random.default_rng(seed)
    h, w = size
    clicks = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)), int(i % session == 0 or rng.random() < 0.5))
              for i in range(n)]
    return [clicks[i:i + session] for i in range(0, n, session)]


VARIANTS = {  # name: (selector mode (None: the file's own), refine, refiner image branch re-run at every click)
    "as_shipped": (None, True, False),
    "refined_dynamic": ("dynamic", True, False),
    "refined_global_only": ("never", True, False),
    "refined_always_local": ("always", True, False),
    "early_fusion_baseline": (None, True, True),
}


def time_session(pred: Predictor, image: np.ndarray, session: list, variant: str | None
                 ) -> tuple[list[float], list[bool]]:
    """Seconds of each click of one session (``variant`` None: samkit_tiny alone); and, per refined click,
    whether the local stage ran."""
    mode, refine, per_click_image = VARIANTS[variant] if variant else (None, False, False)
    own_mode = pred.refiner.cfg.selector if pred.refiner is not None else None
    if pred.refiner is not None:
        pred.refiner.selector.mode = mode or own_mode
    seconds, local = [], []
    points, labels, mask_input = [], [], None
    for x, y, label in session:
        points.append([x, y])
        labels.append(label)
        t = time.perf_counter()
        if per_click_image and pred.refiner is not None:
            pred.refiner.set_image(image, pred.features)
        out = pred.predict(points=points, labels=labels, mask_input=mask_input, multimask=mask_input is None,
                           refine=refine)
        mask_input = out.low_res_logits[out.best][None]  # timed: the padding's low-res logits are made at this read
        seconds.append(time.perf_counter() - t)
        if refine and pred.refiner is not None:
            local.append(any(pred.refiner.last_local))
    if pred.refiner is not None:
        pred.refiner.selector.mode = own_mode
    return seconds, local


def open_refiner(name: str, model: Sam) -> tuple[SamRefiner, str]:
    """A refiner by bundled name or file; an untrained one of the default settings when it is not there."""
    try:
        return load_refiner(name), name
    except CheckpointError as exc:
        print(f"note: {exc}; timing an untrained refiner of the default settings")
        return SamRefiner(RefinerConfig(sam_arch=model.arch, sam_img_size=model.img_size)).eval(), \
            f"{name}: untrained (speed only)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refiner", nargs="+", default=["samkit_tiny_ref", "samkit_tiny_ref_hq"],
                    help="refiner names or files (default: the bundled ones)")
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--session", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--image", type=Path, default=SHARED_IMAGE if SHARED_IMAGE.exists() else SAMPLE_IMAGE)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "refiner.json")
    args = ap.parse_args()

    torch.manual_seed(0)
    image = np.asarray(Image.fromarray(load_image(args.image)).resize((640, 480), Image.BILINEAR))
    model = load_model("samkit_tiny")
    sessions = click_sessions(args.clicks + args.warmup, args.session, image.shape[:2])
    preds: dict[str, Predictor] = {}
    files: dict[str, dict] = {}
    for name in args.refiner:
        refiner, weights = open_refiner(name, model)
        preds[name] = Predictor(model, refiner=refiner)
        t = time.perf_counter()
        preds[name].set_image(image)
        files[name] = {"weights": weights, "params": sum(p.numel() for p in refiner.parameters()),
                       "selector": refiner.cfg.selector, "set_image_s": time.perf_counter() - t}
    preds[MIRROR] = Predictor(model, mirror=True)
    preds[MIRROR].set_image(image)
    keys = [("samkit_tiny", None, None), (MIRROR, MIRROR, None)] + [
        (f"{n}/{v}", n, v) for n in args.refiner for v in VARIANTS]
    seconds: dict[str, list[float]] = {k: [] for k, _, _ in keys}
    local: dict[str, list[bool]] = {k: [] for k, _, _ in keys}
    for session in sessions:  # variants interleaved per session: a busy machine slows them alike
        for key, name, variant in keys:
            s, used = time_session(preds[name or args.refiner[0]], image, session, variant)
            seconds[key] += s
            local[key] += used
    rows = {k: {"click_s_median": statistics.median(seconds[k][args.warmup:]), "clicks": len(seconds[k][args.warmup:]),
                "local_rate": float(np.mean(local[k])) if local[k] else None} for k, _, _ in keys}
    base = rows["samkit_tiny"]["click_s_median"]
    for row in rows.values():
        row["ratio_to_samkit_tiny"] = row["click_s_median"] / base
    report = new_report("refiner", image=args.image.name, image_hw=list(image.shape[:2]), refiners=files,
                        threads=torch.get_num_threads(), torch=torch.__version__, results=rows)
    for name, row in rows.items():
        print(f"{name:44s} {1000 * row['click_s_median']:7.1f} ms/click  x{row['ratio_to_samkit_tiny']:.2f}"
              + ("" if row["local_rate"] is None else f"  local stage on {100 * row['local_rate']:.0f} % of clicks"))
    save_report(report, args.out)


if __name__ == "__main__":
    main()
