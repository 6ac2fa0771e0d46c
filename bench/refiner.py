"""Refiner cost: seconds per click of samkit_tiny alone, with the SAM-REF refiner (dynamic selector,
global stage only, local stage on every click), and of a same-size early-fusion baseline that re-runs the
refiner's image branch on every click (what an early-fusion model pays), on a 640x480 image.

    .venv/bin/python bench/refiner.py [--refiner samkit_tiny_ref|FILE] [--clicks 50] [--out bench/results/refiner.json]

One process, CPU, fp32, the variants interleaved session by session (a busy machine slows them alike).
Clicks come in sessions of ``--session`` clicks (all earlier clicks included, the kept mask's low-res logits
fed back, as the interactive evaluation); the first ``--warmup`` clicks are not timed; each figure is the
median of ``--clicks`` timed clicks. Without a trained refiner file an untrained
refiner of the shipped settings is timed (speed does not depend on weight values; the selector's choices do,
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
from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, SamRefiner, load_refiner

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGE = REPO.parent / "shared" / "data" / "GrabCut" / "data_GT" / "124080.jpg"
SAMPLE_IMAGE = REPO / "samkit" / "assets" / "sample.png"


def click_sessions(n: int, session: int, size: tuple[int, int], seed: int = 0) -> list[list[tuple[float, float, int]]]:
    """n clicks (x, y, label) in sessions of ``session`` clicks; the first of each is positive."""
    rng = np.random.default_rng(seed)
    h, w = size
    clicks = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)), int(i % session == 0 or rng.random() < 0.5))
              for i in range(n)]
    return [clicks[i:i + session] for i in range(0, n, session)]


VARIANTS = {  # name: (selector mode, refine, refiner image branch re-run at every click)
    "samkit_tiny": ("never", False, False),
    "refined_dynamic": ("dynamic", True, False),
    "refined_global_only": ("never", True, False),
    "refined_always_local": ("always", True, False),
    "early_fusion_baseline": ("dynamic", True, True),
}


def time_session(pred: Predictor, image: np.ndarray, session: list, variant: str) -> tuple[list[float], list[bool]]:
    """Seconds of each click of one session; and, per refined click, whether the local stage ran."""
    mode, refine, per_click_image = VARIANTS[variant]
    pred.refiner.selector.mode = mode
    seconds, local = [], []
    points, labels, mask_input = [], [], None
    for x, y, label in session:
        points.append([x, y])
        labels.append(label)
        t = time.perf_counter()
        if per_click_image:
            pred.refiner.set_image(image, pred.features)
        out = pred.predict(points=points, labels=labels, mask_input=mask_input, multimask=mask_input is None,
                           refine=refine)
        seconds.append(time.perf_counter() - t)
        mask_input = out.low_res_logits[out.best][None]
        if refine:
            local.append(any(pred.refiner.last_local))
    return seconds, local


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refiner", default="samkit_tiny_ref", help="refiner name or file (default: the bundled one)")
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--session", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--image", type=Path, default=SHARED_IMAGE if SHARED_IMAGE.exists() else SAMPLE_IMAGE)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "refiner.json")
    args = ap.parse_args()

    torch.manual_seed(0)
    image = np.asarray(Image.fromarray(load_image(args.image)).resize((640, 480), Image.BILINEAR))
    model = load_model("samkit_tiny")
    try:
        refiner, weights = load_refiner(args.refiner), str(args.refiner)
    except CheckpointError as exc:
        print(f"note: {exc}; timing an untrained refiner of the default settings")
        refiner = SamRefiner(RefinerConfig(sam_arch=model.arch, sam_img_size=model.img_size)).eval()
        weights = "untrained (speed only)"
    sessions = click_sessions(args.clicks + args.warmup, args.session, image.shape[:2])
    pred = Predictor(model, refiner=refiner)
    t = time.perf_counter()
    pred.set_image(image)
    set_image_s = time.perf_counter() - t
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    local: dict[str, list[bool]] = {v: [] for v in VARIANTS}
    for session in sessions:  # variants interleaved per session: a busy machine slows them alike
        for variant in VARIANTS:
            s, used = time_session(pred, image, session, variant)
            seconds[variant] += s
            local[variant] += used
    rows = {v: {"click_s_median": statistics.median(seconds[v][args.warmup:]), "clicks": len(seconds[v][args.warmup:]),
                "local_rate": float(np.mean(local[v])) if local[v] else None} for v in VARIANTS}
    base = rows["samkit_tiny"]["click_s_median"]
    for row in rows.values():
        row["ratio_to_samkit_tiny"] = row["click_s_median"] / base
    report = new_report("refiner", image=args.image.name, image_hw=list(image.shape[:2]), refiner=weights,
                        refiner_params=sum(p.numel() for p in refiner.parameters()),
                        set_image_s=set_image_s, threads=torch.get_num_threads(), torch=torch.__version__,
                        results=rows)
    for name, row in rows.items():
        print(f"{name:24s} {1000 * row['click_s_median']:7.1f} ms/click  x{row['ratio_to_samkit_tiny']:.2f}"
              + ("" if row["local_rate"] is None else f"  local stage on {100 * row['local_rate']:.0f} % of clicks"))
    save_report(report, args.out)


if __name__ == "__main__":
    main()
