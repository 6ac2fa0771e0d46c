"""samkit_tiny's click today against the click of an earlier commit (issue 15: "a click stays under 1.5x today's",
today's being the day the issue was filed: commit fcdc35e, samkit_tiny v1 at its 256 px frame), plain and with the
test-time mirror ensemble (``Predictor(mirror=True)``).

    .venv/bin/python bench/click_cost.py [--baseline fcdc35e] [--rounds 3] [--clicks 150]
                                         [--out bench/results/click_cost.json]

The baseline's code is checked out in a temporary git worktree (its own bundled weights); every setting runs in
its own process, the settings alternating round by round; each figure is the median of ``--clicks`` clicks after
15 untimed: a first click (one point, three masks) and a third click (three points and the first click's mask fed
back, one mask) on a GrabCut photo. Check the machine is quiet first (``uptime``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import new_report, save_report

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO.parent / "shared" / "data" / "GrabCut" / "data_GT" / "124080.jpg"
FILED = "fcdc35e"  # the last commit before issue 15's work began (2026-12-02 06:53)

# Runs in a child process on whichever samkit PYTHONPATH names; only API the baseline commit has.
CHILD = """
import json, sys, time
import numpy as np
from PIL import Image
import samkit
from samkit.predict.predictor import Predictor
image, clicks, mirror = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "mirror"
rgb = np.asarray(Image.open(image).convert("RGB"))
model = samkit.load_model("samkit_tiny")
pred = Predictor(model, mirror=True) if mirror else Predictor(model)
encoder = []
for _ in range(2):
    t = time.perf_counter(); pred.set_image(rgb); encoder.append(time.perf_counter() - t)
h, w = rgb.shape[:2]
rng = np.random.default_rng(0)
def first():
    return pred.predict(points=rng.uniform([0, 0], [w - 1, h - 1], size=(1, 2)), labels=[1], multimask=True)
prev = first()
def third():
    out = pred.predict(points=rng.uniform([0, 0], [w - 1, h - 1], size=(3, 2)), labels=[1, 0, 1],
                       mask_input=prev.low_res_logits[int(np.argmax(prev.scores))][None], multimask=False)
    return out.low_res_logits
res = {"encoder_ms": 1000 * min(encoder)}
for name, f in (("first_ms", first), ("third_ms", third)):
    for _ in range(15):
        f()
    ts = []
    for _ in range(clicks):
        t = time.perf_counter(); f(); ts.append(1000 * (time.perf_counter() - t))
    res[name] = float(np.median(ts))
print(json.dumps(res))
"""


def run_child(code_root: Path, image: Path, clicks: int, variant: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(image), str(clicks), variant], env=env, cwd=code_root,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=FILED, help="git commit whose click is the reference (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=150)
    ap.add_argument("--image", type=Path, default=IMAGE)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "click_cost.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="samkit-baseline-") as tmp:
        worktree = Path(tmp) / "code"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), args.baseline],
                       check=True)
        try:
            settings = {"baseline": (worktree, "plain"), "plain": (REPO, "plain"), "mirror": (REPO, "mirror")}
            rounds: dict[str, list[dict]] = {name: [] for name in settings}
            for r in range(args.rounds):  # alternating: a busy moment slows every setting of its round
                for name, (root, variant) in settings.items():
                    rounds[name].append(run_child(root, args.image, args.clicks, variant))
                    print(f"round {r + 1} {name:8s} " + "  ".join(f"{k} {v:.2f}" for k, v in rounds[name][-1].items()),
                          flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    ratios = {name: {k: [round(x[k] / b[k], 3) for x, b in zip(rounds[name], rounds["baseline"], strict=True)]
                     for k in ("first_ms", "third_ms")} for name in ("plain", "mirror")}
    report = new_report("click_cost", baseline=args.baseline, image=args.image.name, clicks=args.clicks,
                        load_avg=os.getloadavg()[0], rounds=rounds, ratio_to_baseline=ratios)
    for name, r in ratios.items():
        print(f"{name:8s} / baseline: first click {r['first_ms']}, third click {r['third_ms']}")
    save_report(report, args.out)


if __name__ == "__main__":
    main()
