"""Segment-everything speed and memory: where the time goes, peak RSS vs grid size, and the Ray engine.

    .venv/bin/python bench/everything.py [--out bench/results/everything.json] [--images N]

1. Seconds per image split into encoder / decoder / post-processing, 32 x 32 points, SAM's default
   thresholds, for samkit_tiny (bundled weights) and sam_vit_b (deterministic fill.py weights from
   ../shared/parity: its masks are meaningless, so its post-processing share is only indicative).
2. Peak RSS of one samkit_tiny generator run with 16^2, 32^2 and 64^2 points (each in a fresh process).
3. Images/s of `samkit everything DIR` with the local engine and Ray with 1 and 2 workers.
Images: GrabCut photos from ../shared/data. Each measurement runs in its own process.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import new_report, save_report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GRABCUT = SHARED / "data" / "GrabCut" / "data_GT"


def _model(name: str):
    import samkit

    if name == "samkit_tiny":
        return samkit.load_model(name)
    from samkit.models.registry import resolve_name

    sys.path.insert(0, str(SHARED / "parity"))
    from fill import fill_state_dict

    model = resolve_name(name).builder()
    model.load_state_dict(fill_state_dict(model.state_dict()))
    return model.eval()


# samkit_tiny's soft logits pass none of SAM's default thresholds; these keep masks, so that
# post-processing (upsampling, stability, RLE, NMS) is really measured
RELAXED = {"pred_iou_thresh": 0.25, "stability_score_thresh": 0.7, "stability_score_offset": 0.1}


def split_times(name: str, images: list[str], points_per_side: int, relaxed: bool = False) -> dict:
    """Generator timings on ``images`` (first one also run once as warm-up)."""
    from samkit.predict.everything import AutomaticMaskGenerator

    settings = RELAXED if relaxed else {}
    # whole image only (no crops, whatever the model recommends), as the reference runs it is compared with
    gen = AutomaticMaskGenerator(_model(name), points_per_side=points_per_side, output_mode="coco_rle", crop_n_layers=0,
                                 **settings)
    gen.generate(images[0])
    rows = []
    for path in images:
        t0 = time.perf_counter()
        records = gen.generate(path)
        rows.append({"total": time.perf_counter() - t0, "masks": len(records), **gen.timings})
    med = {k: statistics.median(r[k] for r in rows) for k in ("total", "encoder", "decoder", "postprocess", "masks")}
    return {"model": name, "points_per_side": points_per_side, "settings": settings or "SAM defaults",
            "images": len(images), "median": med,
            "postprocess_share": med["postprocess"] / med["total"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def engine_rate(engine: str, workers: int, folder: str) -> dict:
    from samkit.engine.everything import EverythingJob, run_local, run_ray

    out = tempfile.mkdtemp(prefix="samkit-bench-")
    try:
        job = EverythingJob(Path(folder), Path(out), "sa1b", generator={"points_per_side": 32})
        t0 = time.perf_counter()
        summary = run_local(job, progress=False) if engine == "local" else run_ray(
            job, workers=workers, progress=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"engine": engine, "workers": workers, "images": summary["processed"], "seconds": wall,
            "images_per_s": summary["processed"] / wall}


def _sub(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--one", json.dumps(list(args))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "everything.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, *rest = json.loads(args.one)
        if kind in ("split", "split-relaxed"):
            print(json.dumps(split_times(rest[0], rest[2:], int(rest[1]), kind == "split-relaxed")))
        else:
            print(json.dumps(engine_rate(rest[0], int(rest[1]), rest[2])))
        return
    images = [str(p) for p in sorted(GRABCUT.glob("*.jpg"))[:args.images]]
    report = new_report("everything", split=[], memory=[], engines=[])
    for kind, name in (("split", "samkit_tiny"), ("split-relaxed", "samkit_tiny"), ("split", "sam_vit_b")):
        r = _sub(kind, name, "32", *(images if name == "samkit_tiny" else images[:2]))
        report["split"].append(r)
        m = r["median"]
        print(f"{name:12s} {'relaxed' if kind == 'split-relaxed' else 'defaults'} 32x32: {m['total']:.2f} s/img "
              f"= encoder {m['encoder']:.2f} + decoder {m['decoder']:.2f} "
              f"+ post {m['postprocess']:.2f} (post share {r['postprocess_share']:.0%}), {m['masks']:.0f} masks, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    for n in (16, 32, 64):
        r = _sub("split", "samkit_tiny", str(n), images[0])
        report["memory"].append({"points_per_side": n, "peak_rss_mb": r["peak_rss_mb"],
                                 "total_s": r["median"]["total"]})
        print(f"samkit_tiny {n}x{n} points: peak RSS {r['peak_rss_mb']:.0f} MB, {r['median']['total']:.2f} s",
              flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for p in images:
            shutil.copy(p, folder)
        for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            r = _sub("engine", engine, str(workers), folder)
            report["engines"].append(r)
            print(f"{engine:5s} x{workers}: {r['images_per_s']:.2f} images/s ({r['images']} images, "
                  f"{r['seconds']:.1f} s incl. start-up)", flush=True)
    save_report(report, args.out)


if __name__ == "__main__":
    main()
