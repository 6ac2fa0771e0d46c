"""Predictor speed: image-encoder seconds, per-click latency, peak RSS.

    .venv/bin/python bench/predictor.py [--models sam_vit_b mobile_sam] [--out bench/results/predictor.json]

Each model runs in its own process (so peak RSS is per model), fp32, on the CPU, with random
weights (speed does not depend on weight values). The image is a real GrabCut photo when
../shared/data is present, else the bundled sample.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import new_report, save_report

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGE = REPO.parent / "shared" / "data" / "GrabCut" / "data_GT" / "124080.jpg"
SAMPLE_IMAGE = REPO / "samkit" / "assets" / "sample.png"


def bench_one(name: str, encoder_runs: int, clicks: int, image_path: Path) -> dict:
    """Measure one model in this process."""
    import numpy as np
    import torch

    from samkit.data.image_io import load_image
    from samkit.models.registry import resolve_name
    from samkit.predict.predictor import Predictor
    from samkit.predict.transforms import preprocess

    torch.manual_seed(0)
    model = resolve_name(name).builder().eval()
    image = load_image(image_path)
    x, _ = preprocess(image, model.img_size)
    enc = []
    with torch.inference_mode():
        model.encode_image(x)  # warm-up
        for _ in range(encoder_runs):
            t = time.perf_counter()
            model.encode_image(x)
            enc.append(time.perf_counter() - t)
    pred = Predictor(model)
    pred.set_image(image)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [w, h], size=(clicks + 5, 2))
    lat = []
    for i, p in enumerate(points):
        t = time.perf_counter()
        pred.predict(points=p[None], labels=[1], multimask=True)
        if i >= 5:  # first calls warm caches
            lat.append(time.perf_counter() - t)
    return {
        "model": name,
        "image": str(image_path.name), "image_hw": [h, w],
        "encoder_s_median": statistics.median(enc), "encoder_s_all": enc,
        "click_ms_median": 1000 * statistics.median(lat), "click_ms_p90": 1000 * sorted(lat)[int(0.9 * len(lat))],
        "clicks": len(lat),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sam_vit_b", "mobile_sam"])
    ap.add_argument("--encoder-runs", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--image", type=Path, default=SHARED_IMAGE if SHARED_IMAGE.exists() else SAMPLE_IMAGE)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "predictor.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(bench_one(args.one, args.encoder_runs, args.clicks, args.image)))
        return
    results = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name, "--encoder-runs", str(args.encoder_runs),
               "--clicks", str(args.clicks), "--image", str(args.image)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        results.append(r)
        print(f"{name:12s} encoder {r['encoder_s_median']:.2f} s (median of {args.encoder_runs})  "
              f"click {r['click_ms_median']:.1f} ms (median of {r['clicks']}, p90 {r['click_ms_p90']:.1f})  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    save_report(new_report("predictor", results=results), args.out)


if __name__ == "__main__":
    main()
