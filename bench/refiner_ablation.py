"""Refiner quality and ablation: the interactive protocol (RITM clicks, 20 per object) on GrabCut and Berkeley
for samkit_tiny alone and with the refiner as global only, local only, both on every click, and both with the
dynamic selector; NoC@85/90/95, NoF@90, mIoU@1/5, boundary IoU@5, wrong-side clicks, seconds per click.

    .venv/bin/python bench/refiner_ablation.py [--refiner samkit_tiny_ref|FILE] [--max-samples N]
        [--datasets Berkeley GrabCut] [--settings "global only" ...] [--out bench/results/refiner_ablation.json]

Prints a markdown table (for docs/refiner.md) and writes every run's summary to the JSON report.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _report import new_report, save_report

from samkit.data.readers import open_dataset
from samkit.eval import interactive
from samkit.models.load import load_model
from samkit.predict.predictor import Predictor
from samkit.refine import load_refiner

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DATASETS = {"GrabCut": ("grabcut", DATA / "GrabCut"), "Berkeley": ("berkeley", DATA / "Berkeley")}
SETTINGS = {  # name: (use_global, selector mode); None: samkit_tiny alone
    "samkit_tiny": None,
    "global only": (True, "never"),
    "local only": (False, "always"),
    "global + local (always)": (True, "always"),
    "global + local (selector)": (True, "dynamic"),
}


def summary(result: dict) -> dict:
    """The figures of one interactive run that go in the table."""
    k = result["miou_at_k"]
    b = result["boundary_iou_at_k"]
    return {"noc85": result["noc"]["85"], "noc90": result["noc"]["90"], "noc95": result["noc"]["95"],
            "nof90": result["nof"]["90"], "miou1": k[0], "miou5": k[4], "biou5": b[4],
            "wrong_side": result["click_wrong_side_rate"], "s_per_click": result["seconds_per_click"],
            "objects": result["num_objects"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refiner", default="samkit_tiny_ref")
    ap.add_argument("--max-samples", type=int, default=None, help="first N images of each dataset (a smoke run)")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                    help="run only these rows (e.g. the ones an evaluation has not measured yet)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "refiner_ablation.json")
    args = ap.parse_args()
    model = load_model("samkit_tiny")
    refiner = load_refiner(args.refiner)
    rows = {}
    for dataset in args.datasets:
        kind, root = DATASETS[dataset]
        samples = open_dataset(kind, root)
        for name in args.settings:
            setting = SETTINGS[name]
            if setting is not None:
                refiner.use_global, refiner.selector.mode = setting
            pred = Predictor(model) if setting is None else Predictor(model, refiner=refiner)
            result = interactive.evaluate(pred, samples, max_clicks=args.max_clicks, max_samples=args.max_samples)
            rows[f"{dataset} / {name}"] = summary(result)
    print("| run | NoC@85 | NoC@90 | NoC@95 | NoF@90 | mIoU@1 | mIoU@5 | BIoU@5 | wrong-side | s/click |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['noc85']:.2f} | {r['noc90']:.2f} | {r['noc95']:.2f} | {r['nof90']} | {r['miou1']:.3f} | "
              f"{r['miou5']:.3f} | {r['biou5']:.3f} | {r['wrong_side']:.3f} | {r['s_per_click']:.3f} |")
    save_report(new_report("refiner_ablation", refiner=str(args.refiner), max_samples=args.max_samples,
                           datasets=args.datasets, settings=args.settings, max_clicks=args.max_clicks,
                           results=rows), args.out)


if __name__ == "__main__":
    main()
