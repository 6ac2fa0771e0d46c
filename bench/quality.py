"""A model's quality on every benchmark samkit implements, as one JSON file and a Markdown table.

    .venv/bin/python bench/quality.py [--model samkit_tiny | --checkpoint PATH] [--data ../shared/data]
                                      [--out bench/results/quality_samkit_tiny.json] [--max-samples N]

Runs, with the protocols of :mod:`samkit.eval`:
interactive clicks on GrabCut and Berkeley (NoC@85/90/95, mIoU@1..5), SAM's single-point mIoU on
both, box-prompted mask AP on coco128-seg, and zero-shot edges on BSDS500 test (ODS/OIS).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(model: str, checkpoint: str | None, data: Path, max_samples: int | None,
        save: Callable[[dict], None] = lambda res: None) -> dict:
    """All benchmarks; ``save`` gets the results so far after each one (a long run keeps what it measured)."""
    import samkit
    from samkit.data.readers import open_dataset
    from samkit.eval import evaluate_boxes, evaluate_edges, evaluate_interactive, evaluate_single_point

    net = samkit.load_model(model, checkpoint=checkpoint)
    predictor = samkit.Predictor(net)
    out: dict = {"model": net.arch, "weights": net.weights, "img_size": net.img_size, "max_samples": max_samples}
    for name, kind in (("GrabCut", "grabcut"), ("Berkeley", "berkeley")):
        t0 = time.perf_counter()
        res = evaluate_interactive(predictor, open_dataset(kind, data / name), max_samples=max_samples)
        out[f"interactive_{kind}"] = {"noc": res["noc"], "nof": res["nof"], "miou_at_1_5": res["miou_at_k"][:5],
                                      "num_objects": res["num_objects"],
                                      "seconds_per_click": res.get("seconds_per_click"),
                                      "seconds": time.perf_counter() - t0}
        res = evaluate_single_point(predictor, open_dataset(kind, data / name), max_samples=max_samples)
        out[f"single_point_{kind}"] = {"miou": res["miou"], "miou_oracle": res["miou_oracle"]}
        save(out)
    coco = data / "coco128-seg"
    res = evaluate_boxes(predictor, coco / "annotations_coco_format.json", coco, max_samples=max_samples)
    out["boxes_coco128"] = {k: v for k, v in res.items() if isinstance(v, (int, float))}
    save(out)
    res = evaluate_edges(predictor, open_dataset("bsds500", data / "BSDS500", split="test"), max_samples=max_samples)
    out["edges_bsds500_test"] = {"ods": res["ods"], "ois": res["ois"], "ap": res["ap"],
                                 "num_images": res.get("num_images")}
    return out


def markdown(res: dict) -> str:
    """The headline figures as a Markdown table."""
    rows = ["| benchmark | figure | value |", "|---|---|---|"]
    for kind in ("grabcut", "berkeley"):
        it = res[f"interactive_{kind}"]
        rows.append(f"| {kind} interactive | NoC@85 / @90 / @95 | "
                    f"{it['noc']['85']:.2f} / {it['noc']['90']:.2f} / {it['noc']['95']:.2f} |")
        rows.append(f"| {kind} interactive | mIoU@1..5 | {' / '.join(f'{v:.3f}' for v in it['miou_at_1_5'])} |")
        sp = res[f"single_point_{kind}"]
        rows.append(f"| {kind} single point | mIoU (top-scored / oracle) "
                    f"| {sp['miou']:.3f} / {sp['miou_oracle']:.3f} |")
    ap = res["boxes_coco128"]
    rows.append(f"| coco128-seg boxes | mask AP / AP50 | {ap['ap']:.3f} / {ap['ap50']:.3f} |")
    ed = res["edges_bsds500_test"]
    rows.append(f"| BSDS500 test edges | ODS / OIS F | {ed['ods']['f']:.3f} / {ed['ois']['f']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="samkit_tiny")
    ap.add_argument("--checkpoint")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--max-samples", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from samkit.data.formats import atomic_write_text

    name = Path(args.checkpoint).stem if args.checkpoint else args.model
    out = args.out or REPO / "bench" / "results" / f"quality_{name}.json"

    def save(res: dict) -> None:
        atomic_write_text(out, json.dumps(res, indent=1))

    res = run(args.model, args.checkpoint, args.data, args.max_samples, save)
    save(res)
    print(markdown(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
