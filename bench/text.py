"""Text-prompt speed: BEiT-3 text-encoder latency and end-to-end text-to-mask latency (image embedding cached).

    .venv/bin/python bench/text.py [--runs 10] [--out bench/results/text.json]

CPU, fp32, each measurement in its own process (peak RSS per case):

* ``beit3_base``: BEiT-3 base (random weights), one 224 px image + an 8-token sentence -> fused
  features (what EVF-SAM runs per text prompt), median of ``--runs``;
* ``samkit_tiny_text``: the bundled model; ``Predictor.set_image`` once, then ``predict(text=...)``
  (tokenise + small BEiT-3 + projector + mask decoder + upscaling), median over ``--runs`` sentences;
* ``evf_sam_vit_b_base``: the EVF-SAM layout with a SAM ViT-B and a BEiT-3 base (random weights),
  ``predict(text_tokens=...)`` with 8 tokens after one ``set_image`` (image encoder time reported apart).
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
CASES = ("beit3_base", "samkit_tiny_text", "evf_sam_vit_b_base")
TOKENS = [0, 70, 1256, 23, 70, 5987, 4188, 2]  # <s> ... </s>: 8 ids (values do not change the cost)
SENTENCES = ("the red circle", "the small blue square left of the green star", "the largest object",
             "the lowest yellow triangle", "the big purple thing")


def _timed(fn, runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_one(case: str, runs: int, image_path: Path) -> dict:
    """Measure one case in this process."""
    import warnings

    import torch

    import samkit
    from samkit.data.image_io import load_image
    from samkit.predict.predictor import Predictor

    torch.manual_seed(0)
    image = load_image(image_path)
    result: dict = {"case": case, "image": image_path.name, "image_hw": list(image.shape[:2])}
    if case == "beit3_base":
        from samkit.models.beit3 import BEIT3_CONFIGS, Beit3

        model = Beit3(BEIT3_CONFIGS["base"]).eval()
        x = torch.randn(1, 3, 224, 224)
        ids = torch.tensor([TOKENS])
        with torch.inference_mode():
            times = _timed(lambda: model(x, ids), runs)
        result.update(text_encoder_ms_median=1000 * statistics.median(times), tokens=len(TOKENS), img_size=224,
                      params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = (samkit.load_model("samkit_tiny_text") if case == "samkit_tiny_text" else
                     samkit.load_model("evf_sam", pretrained=False, backbone="sam_vit_b", text_encoder="base"))
        pred = Predictor(model)
        t = time.perf_counter()
        pred.set_image(image)
        result["set_image_s"] = time.perf_counter() - t
        if case == "samkit_tiny_text":
            sentences = iter(SENTENCES * (runs + 2))
            times = _timed(lambda: pred.predict(text=next(sentences)), runs)
        else:
            times = _timed(lambda: pred.predict(text_tokens=TOKENS), runs)
        result.update(text_to_mask_ms_median=1000 * statistics.median(times),
                      text_to_mask_ms_p90=1000 * sorted(times)[int(0.9 * (len(times) - 1))],
                      text_params_m=sum(p.numel() for n, p in model.named_parameters()
                                        if not n.startswith("visual_model.")) / 1e6,
                      beit3_img_size=model.text_image_size)
    result.update(runs=runs, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  threads=torch.get_num_threads(), torch=torch.__version__)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--image", type=Path, default=SHARED_IMAGE if SHARED_IMAGE.exists() else SAMPLE_IMAGE)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "text.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(bench_one(args.one, args.runs, args.image)))
        return
    results = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--one", case, "--runs", str(args.runs), "--image", str(args.image)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        results.append(r)
        if "text_encoder_ms_median" in r:
            line = f"text encoder {r['text_encoder_ms_median']:.1f} ms (224 px + {r['tokens']} tokens)"
        else:
            line = (f"text-to-mask {r['text_to_mask_ms_median']:.1f} ms (p90 {r['text_to_mask_ms_p90']:.1f}; "
                    f"set_image {r['set_image_s']:.2f} s once)")
        print(f"{case:20s} {line}  median of {r['runs']}  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    save_report(new_report("text", results=results), args.out)


if __name__ == "__main__":
    main()
