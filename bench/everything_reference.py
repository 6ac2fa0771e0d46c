"""Segment-everything, samkit vs the reference generator (facebookresearch/segment-anything) on the same weights
and thresholds, at 1 and 2 threads (issue 17: >= 3x faster, and no worse at 2 threads than at 1).

    .venv/bin/python bench/everything_reference.py [--images 3] [--runs 2] \
        [--out bench/results/everything_reference.json]

The reference is the ``segment-anything`` package from PyPI (``pip install segment-anything``; it is a
``samkit[bench]`` extra). It imports torchvision, which has no CPU build here, for four functions; this
script gives it stand-ins with the same semantics (``batched_nms``: greedy NMS per category, as
torchvision's; ``box_area``; ``resize`` / ``to_pil_image`` of a PIL image: PIL bilinear, which is what
torchvision does for PIL input). Its NMS is then this script's plain torch loop: a small share of the time.

The model is samkit_tiny (bundled weights: MobileSAM layout at 256 px). The reference has no TinyViT, so both
generators run samkit's image encoder module (same weights, same time: one figure for it is reported
separately); the prompt encoder and mask decoder are the reference's own modules with samkit_tiny's weights
(``load_state_dict(strict=True)``). Thresholds: the model file's recommended everything-mode thresholds (what
``samkit everything`` uses with no flags), given to both. 32 x 32 points, 64 per batch, no crops (samkit_tiny's
file also recommends a crop layer, which ``samkit everything`` uses; here both generators run without).
Outputs are compared too: masks per image and the matched-mask IoU (greedy, by IoU).
Each (generator, threads) pair runs in turn on every image, ``--runs`` times; medians are reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from _report import new_report, save_report
from PIL import Image

from samkit.data.image_io import load_image
from samkit.models.load import load_model
from samkit.predict.everything import AutomaticMaskGenerator, EverythingSettings

REPO = Path(__file__).resolve().parents[1]
GRABCUT = REPO.parent / "shared" / "data" / "GrabCut" / "data_GT"
IMAGES = ("106024.jpg", "124080.jpg", "153077.jpg", "181079.jpg", "189080.jpg")


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms: greedy NMS within each category; kept indices by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    b = boxes + offsets[:, None]
    order = scores.argsort(descending=True)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep: list[int] = []
    suppressed = torch.zeros(len(b), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(b[i, :2], b[:, :2])
        rb = torch.minimum(b[i, 2:], b[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        suppressed |= inter / (area[i] + area - inter) > iou_threshold
    return torch.as_tensor(keep, dtype=torch.int64)


def _install_torchvision_stand_in() -> None:
    """The four torchvision functions segment_anything imports (see the module docstring)."""
    tv = types.ModuleType("torchvision")
    ops, boxes = types.ModuleType("torchvision.ops"), types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _batched_nms  # type: ignore[attr-defined]
    boxes.box_area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # type: ignore[attr-defined]
    ops.boxes = boxes  # type: ignore[attr-defined]
    transforms, functional = types.ModuleType("torchvision.transforms"), types.ModuleType(
        "torchvision.transforms.functional")
    functional.to_pil_image = Image.fromarray  # type: ignore[attr-defined]
    functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    tv.ops, tv.transforms = ops, transforms  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
                        "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})


def reference_generator(model, thresholds: tuple[float, float, float]):  # noqa: ANN001, ANN201 (foreign types)
    """segment_anything's SamAutomaticMaskGenerator over samkit_tiny's weights (samkit's encoder module)."""
    _install_torchvision_stand_in()
    from segment_anything import SamAutomaticMaskGenerator  # noqa: PLC0415 -- after the stand-in
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer  # noqa: PLC0415

    grid = model.img_size // 16
    ref = Sam(image_encoder=model.image_encoder,
              prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                           input_image_size=(model.img_size, model.img_size), mask_in_chans=16),
              mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                  depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256,
                  iou_head_depth=3, iou_head_hidden_dim=256)).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    if not hasattr(model.image_encoder, "img_size"):
        raise SystemExit("samkit's image encoder has no img_size attribute for the reference's transforms")
    iou, stability, offset = thresholds
    return SamAutomaticMaskGenerator(ref, points_per_side=32, points_per_batch=64, pred_iou_thresh=iou,
                                     stability_score_thresh=stability, stability_score_offset=offset)


def _match_iou(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean IoU of greedily matched masks (unmatched count as 0), over the larger set."""
    if not a and not b:
        return 1.0
    ious = np.zeros((len(a), len(b)))
    for i, m in enumerate(a):
        for j, n in enumerate(b):
            inter = np.logical_and(m, n).sum()
            ious[i, j] = inter / max(1, np.logical_or(m, n).sum())
    total = 0.0
    while ious.size and ious.max() > 0:
        i, j = np.unravel_index(ious.argmax(), ious.shape)
        total += ious[i, j]
        ious[i, :], ious[:, j] = 0, 0
    return total / max(len(a), len(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "everything_reference.json")
    args = ap.parse_args()
    model = load_model("samkit_tiny")
    thresholds = EverythingSettings().thresholds(model)
    # no crops for either: the reference is given none, and samkit_tiny's file recommends a crop layer
    samkit_gen = AutomaticMaskGenerator(model, points_per_side=32, points_per_batch=64, crop_n_layers=0)
    ref_gen = reference_generator(model, thresholds)
    images = [load_image(GRABCUT / name) for name in IMAGES[:args.images]]
    times: dict[str, list[float]] = {}
    encoder: list[float] = []
    agreement: list[float] = []
    counts: dict[str, list[int]] = {"samkit": [], "reference": []}
    load_start = os.getloadavg()[0]
    for run in range(args.runs):
        for k, image in enumerate(images):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                t = time.perf_counter()
                ours = samkit_gen.generate(image)
                times.setdefault(f"samkit_{threads}t", []).append(time.perf_counter() - t)
                encoder.append(samkit_gen.timings["encoder"])
                t = time.perf_counter()
                theirs = ref_gen.generate(image)
                times.setdefault(f"reference_{threads}t", []).append(time.perf_counter() - t)
                if run == 0 and threads == 2:
                    counts["samkit"].append(len(ours))
                    counts["reference"].append(len(theirs))
                    agreement.append(_match_iou([r["segmentation"] for r in ours],
                                                [r["segmentation"] for r in theirs]))
                print(f"run {run} image {k} {threads}t: samkit {times[f'samkit_{threads}t'][-1]:.2f} s, "
                      f"reference {times[f'reference_{threads}t'][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    report = new_report(
        "everything_reference", model="samkit_tiny", images=list(IMAGES[:args.images]), runs=args.runs,
        thresholds=dict(zip(("pred_iou_thresh", "stability_score_thresh", "stability_score_offset"), thresholds,
                            strict=True)),
        seconds_per_image_median=med, encoder_s_median=statistics.median(encoder),
        speedup_1t=med["reference_1t"] / med["samkit_1t"], speedup_2t=med["reference_2t"] / med["samkit_2t"],
        samkit_2t_over_1t=med["samkit_2t"] / med["samkit_1t"], masks_per_image=counts,
        matched_mask_iou_mean=float(np.mean(agreement)), cpus=os.cpu_count(),
        load_avg_start=load_start, load_avg_end=os.getloadavg()[0])
    save_report(report, args.out)
    print({k: round(v, 2) for k, v in med.items()}, f"speed-up 1t {report['speedup_1t']:.2f}x, "
          f"2t {report['speedup_2t']:.2f}x; masks {counts}; matched IoU {report['matched_mask_iou_mean']:.4f}")


if __name__ == "__main__":
    main()
