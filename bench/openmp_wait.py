"""How OpenMP threads wait, and what a sam_vit_b click costs with each setting: quiet, beside one CPU hog, beside
three.

    .venv/bin/python bench/openmp_wait.py [--rounds 2] [--clicks 40] [--out bench/results/openmp_wait.json]

libgomp reads its waiting policy once, when torch loads it, so each setting runs in its own child process:
``samkit`` (samkit's default since 2026-12-06, :func:`samkit.runtime.tune_openmp`: ``GOMP_SPINCOUNT=3000``,
spin about 30 microseconds, then sleep), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``: sleep at once, samkit's default
before), ``spin_10k`` (``GOMP_SPINCOUNT=10000``) and ``default_spin`` (libgomp's own 300,000-iteration spin).
The children run in turn, ``--rounds`` times, each timing ``--clicks`` multimask clicks (median ms) with the
Predictor's adaptive thread count on the deterministic fill.py weights of ../shared/parity and a GrabCut photo
(speed does not depend on weight values). A hog is ``while True: pass`` in its own process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import new_report, save_report
from speed import IMAGE, click_fn, cpu_hog, fill_model, timed

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"samkit": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin_10k": {"GOMP_SPINCOUNT": "10000"},
            "default_spin": {"SAMKIT_OMP_TUNING": "0"}}


def child(emb: Path, clicks: int) -> dict:
    from samkit.predict.predictor import Predictor

    pred = Predictor(fill_model("sam_vit_b"))
    pred.load_embedding(emb)
    size = pred.original_size
    out = {"env": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")},
           "quiet_ms": timed(click_fn(pred, size), clicks, 3)["median_ms"]}
    with cpu_hog():
        out["one_hog_ms"] = timed(click_fn(pred, size, seed=1), clicks, 3)["median_ms"]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        time.sleep(1)
        out["three_hogs_ms"] = timed(click_fn(pred, size, seed=2), clicks, 3)["median_ms"]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=40)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "openmp_wait.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.clicks)))
        return
    from samkit.data.image_io import load_image
    from samkit.predict.predictor import Predictor

    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="samkit-omp-") as tmp:
        emb = Path(tmp) / "image.emb.safetensors"
        pred = Predictor(fill_model("sam_vit_b"))
        pred.set_image(load_image(IMAGE))
        pred.save_embedding(emb)
        for _ in range(args.rounds):
            for name, extra in SETTINGS.items():
                env = {k: v for k, v in os.environ.items()
                       if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SAMKIT_OMP_TUNING")} | extra
                cmd = [sys.executable, __file__, "--child", str(emb), "--clicks", str(args.clicks)]
                result = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                                   text=True).stdout.splitlines()[-1])
                runs[name].append(result)
                print(name, {k: v for k, v in result.items() if k.endswith("_ms")}, flush=True)
    report = new_report("openmp_wait", rounds=args.rounds, clicks=args.clicks, cpus=os.cpu_count(),
                        load_avg_start=load_start, load_avg_end=os.getloadavg()[0], runs=runs)
    save_report(report, args.out)


if __name__ == "__main__":
    main()
