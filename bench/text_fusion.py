"""Early vs late fusion on a frozen samkit_tiny: referring-segmentation figures of the trained runs and baselines.

    .venv/bin/python bench/text_fusion.py [--configs configs] [--split test|val] [--out bench/results/text_fusion.json]

Reads the runs of ``samkit train-text configs/samkit_tiny_text_{early,late,constant}.json`` (their
``summary.json``, ``model.fp16.safetensors`` / ``constant_token.pt``) and evaluates, with the same frozen
samkit_tiny and CPU fp32:

* the held-out TEST referring scenes (the cached test split of the configs: one expression per scene;
  embeddings computed once; masks at 256 px), cIoU / gIoU overall and per query kind; with
  ``--split val`` the validation scenes instead (for choosing between runs without looking at the test
  scenes; the report's ``split`` says which, its per-model key stays ``test``);
* the RefCOCO subset ``../shared/data/refcoco_coco128_subset/refs.json`` through the Predictor
  (``samkit.eval.refer.evaluate``), a domain the models never saw.

For early fusion also ``image_swapped``: the same expressions with each BEiT-3 input image taken from
another scene of the split (the decoder still sees the right image): how much of early fusion's score
needs the image in the text encoder. ``early_minus_late``: the paired gIoU difference on the synthetic
split with a 95 % bootstrap interval (2000 resamples of the expressions, seed 0).

Baselines: ``constant`` (one learned prompt token, no text: the best text-free guess) and ``oracle_box``
(the frozen samkit_tiny prompted with the target mask's bounding box: what the decoder can do when the
text side localises the object perfectly).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _report import new_report, save_report

REPO = Path(__file__).resolve().parents[1]
REFS = REPO.parent / "shared" / "data" / "refcoco_coco128_subset" / "refs.json"
VARIANTS = ("early", "late", "constant")


class ConstantSegmenter:
    """Referring segmenter from one prompt token for every expression (``set_image`` + ``(image, text)``)."""

    def __init__(self, sam: torch.nn.Module, token: torch.Tensor) -> None:
        from samkit.predict.predictor import Predictor

        self.pred, self.token = Predictor(sam), token

    def set_image(self, image: np.ndarray) -> None:
        self.pred.set_image(image)

    def __call__(self, image: np.ndarray, text: str) -> np.ndarray:
        low, _ = self.pred.decode_low_res(None, multimask=False, extra_tokens=self.token)
        return (self.pred.upscale(low)[0, 0] > 0).numpy()


class OracleBoxSegmenter:
    """The target's bounding box as the prompt; targets are consumed in the evaluation's sample order."""

    def __init__(self, sam: torch.nn.Module, samples: list) -> None:
        from samkit.predict.predictor import Predictor

        self.pred, self.targets = Predictor(sam), [s.masks[0] for s in samples]

    def set_image(self, image: np.ndarray) -> None:
        self.pred.set_image(image)

    def __call__(self, image: np.ndarray, text: str) -> np.ndarray:
        target = self.targets.pop(0)
        ys, xs = np.nonzero(target)
        if ys.size == 0:
            return np.zeros_like(target)
        box = [xs.min(), ys.min(), xs.max(), ys.max()]
        return np.asarray(self.pred.predict(box=box, multimask=False).masks[0], dtype=bool)


def headline(metrics: dict) -> dict:
    keep = ("num_expressions", "ciou", "giou", "precision", "by_kind", "seconds_per_expression")
    out = {k: metrics[k] for k in keep if k in metrics}
    if "by_kind" in out:
        out["by_kind"] = {k: {"n": v["num_expressions"], "ciou": v["ciou"], "giou": v["giou"]}
                          for k, v in out["by_kind"].items()}
    return out


def paired_bootstrap(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b (paired per expression) and its 95 % percentile bootstrap interval."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(len(diff), size=(resamples, len(diff)))].mean(1)
    return {"mean": float(diff.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "resamples": resamples, "expressions": len(diff)}


def main() -> None:
    from samkit.data.refer import open_refs
    from samkit.eval.refer import evaluate
    from samkit.predict.predictor import Predictor
    from samkit.train.text import (
        evaluate_cached,
        load_frozen_sam,
        load_text_config,
        load_text_model,
        scene_data,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=Path, default=REPO / "configs")
    ap.add_argument("--split", choices=("test", "val"), default="test", help="synthetic scenes to score")
    ap.add_argument("--refs", type=Path, default=REFS)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "text_fusion.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfgs = {v: load_text_config(args.configs / f"samkit_tiny_text_{v}.json") for v in VARIANTS}
    sam = load_frozen_sam("samkit_tiny", torch.device("cpu"))
    test = scene_data(cfgs["early"], sam, 160, args.split)  # the cached split (same for every variant)
    refs = list(open_refs(args.refs)) if args.refs.is_file() else None
    report = new_report("text_fusion", split=args.split, test_expressions=len(test["texts"]),
                        refcoco=str(args.refs) if refs else None, results={})
    ious: dict[str, list[float]] = {}
    for variant, cfg in cfgs.items():
        run = Path(cfg.out_dir)
        if not (run / "summary.json").is_file():
            print(f"{variant}: no finished run in {run}, skipped")
            continue
        summary = json.loads((run / "summary.json").read_text())
        entry = {"train": {k: v for k, v in summary.items() if k != "test"}, "config": cfg.to_dict()}
        with torch.no_grad():
            if variant == "constant":
                token = torch.load(run / "constant_token.pt")["token"]
                from samkit.train.text import ConstantPrompt

                prompter = ConstantPrompt()
                prompter.token.data.copy_(token)
                scored = evaluate_cached(sam, test, prompter, None, per_expression=True)
                segmenter = ConstantSegmenter(sam, token)
            else:
                model = load_text_model(run / "model.fp16.safetensors")
                scored = evaluate_cached(model.visual_model, test, model, model.tokenizer, per_expression=True)
                if variant == "early":  # every BEiT-3 image from the next scene of the split
                    swapped = {**test, "beit_images": test["beit_images"].roll(1, dims=0)}
                    entry["image_swapped"] = headline(evaluate_cached(model.visual_model, swapped, model,
                                                                      model.tokenizer))
                segmenter = Predictor(model)
            ious[variant] = scored.pop("ious")
            entry["test"] = headline(scored)
            if refs:
                entry["refcoco"] = headline(evaluate(segmenter, refs))
        report["results"][variant] = entry
        if "image_swapped" in entry:
            print(f"{variant:9s} with swapped BEiT-3 images: gIoU {entry['image_swapped']['giou']:.3f}")
        print(f"{variant:9s} {args.split} cIoU {entry['test']['ciou']:.3f} gIoU {entry['test']['giou']:.3f}"
              + (f"   RefCOCO cIoU {entry['refcoco']['ciou']:.3f} gIoU {entry['refcoco']['giou']:.3f}" if refs else ""),
              flush=True)
    with torch.no_grad():
        entry = {"test": headline(evaluate_cached(sam, test, oracle_box=True))}
        if refs:
            entry["refcoco"] = headline(evaluate(OracleBoxSegmenter(sam, refs), refs))
    report["results"]["oracle_box"] = entry
    if {"early", "late"} <= set(ious):
        report["early_minus_late"] = paired_bootstrap(ious["early"], ious["late"])
        d = report["early_minus_late"]
        print(f"early - late gIoU {d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})")
    print(f"oracle_box {args.split} cIoU {entry['test']['ciou']:.3f} gIoU {entry['test']['giou']:.3f}"
          + (f"   RefCOCO cIoU {entry['refcoco']['ciou']:.3f} gIoU {entry['refcoco']['giou']:.3f}" if refs else ""))
    save_report(report, args.out)


if __name__ == "__main__":
    main()
