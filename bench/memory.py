"""Peak RSS vs image size for the CLI's full-resolution work (issue: 6.6 GB at 14000 x 14000).

    .venv/bin/python bench/memory.py [--sizes 1000 2000 4000] [--out bench/results/memory.json]

For each N, the bundled sample photo resized to N x N, then, each in a fresh process (its peak RSS read
with getrusage in a wrapper process):

* ``segment``: ``samkit segment IMG --point N/2,N/2 --multimask --save-logits`` (3 masks, overlay, logits);
* ``predict``: ``Predictor.predict(..., multimask=True)`` alone, the API path that returns every mask's
  full-resolution logits at once (for comparison);
* ``everything``: ``samkit everything IMG --points-per-side 8 --overlay`` with relaxed thresholds.

The figure that matters is the growth with N: the CLI works one mask and one band of rows at a time.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import new_report, save_report
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samkit" / "assets" / "sample.png"
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if rc == 0 else -rc)")
PREDICT = ("import sys, samkit; p = samkit.Predictor(samkit.load_model('samkit_tiny')); p.set_image(sys.argv[1]); "
           "n = int(sys.argv[2]); p.predict(points=[[n / 2, n / 2]], labels=[1], multimask=True)")


def peak_mb(argv: list[str]) -> float:
    """Peak RSS (MB) of ``argv`` run in its own process."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True)
    kb = int(out.stdout.strip().splitlines()[-1])
    if kb < 0:
        raise RuntimeError(f"{argv} failed with exit status {-kb}")
    return kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory.json")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "samkit.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            image = Path(tmp) / f"img{n}.png"
            Image.open(SAMPLE).convert("RGB").resize((n, n)).save(image)
            row = {"size": n, "megapixels": n * n / 1e6}
            row["segment_mb"] = peak_mb([*cli, "segment", str(image), "--point", f"{n // 2},{n // 2}", "--multimask",
                                         "--save-logits", "--out", f"{tmp}/seg{n}"])
            row["predict_mb"] = peak_mb([sys.executable, "-c", PREDICT, str(image), str(n)])
            row["everything_mb"] = peak_mb([*cli, "everything", str(image), "--out", f"{tmp}/ev{n}", "--overlay",
                                            "--points-per-side", "8", "--pred-iou-thresh", "0.25",
                                            "--stability-score-thresh", "0.7", "--stability-score-offset", "0.1",
                                            "--crop-n-layers", "0"])
            rows.append(row)
            print(f"{n:>6} px: segment {row['segment_mb']:.0f} MB, Predictor.predict {row['predict_mb']:.0f} MB, "
                  f"everything {row['everything_mb']:.0f} MB", flush=True)
    save_report(new_report("memory", model="samkit_tiny", rows=rows), args.out)


if __name__ == "__main__":
    main()
