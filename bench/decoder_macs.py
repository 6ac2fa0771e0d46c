"""Multiply-adds of a sam_vit_b click: the browser's factored decoder against the direct computation.

Counts the matrix products (``torch.utils.flop_counter``) of one click on a 481 x 321 photo's grid (43 of 64
token rows read) for 1 and 2 prompt points, and of the per-image work, for
:class:`samkit.models.factored_decoder.FactoredDecoder` (the graphs ``web/decoder.js`` runs) and for
``MaskDecoder`` with its first-block image cache (the graphs before 2026-12-06; random weights: the counts do
not depend on them). Writes one JSON.

    .venv/bin/python bench/decoder_macs.py --out bench/results/decoder_macs.json
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from samkit.export.onnx import DecoderGraph
from samkit.models.factored_decoder import FactoredDecoder
from samkit.models.registry import resolve_name

ROWS = 43  # token rows of a 481 x 321 photo's grid that the upsampling reads (samkit.predict.transforms.upscale_grid)


def macs(fn) -> float:
    """Millions of multiply-adds in fn's matrix products. Gradients stay enabled so that samkit's oneDNN
    products (samkit.models.common.dense) take torch's counted path."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return round(counter.get_total_flops() / 2e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/decoder_macs.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = resolve_name("sam_vit_b").builder().eval()
    graph = DecoderGraph(model)
    decoder = model.mask_decoder
    g = model.prompt_encoder.image_embedding_size[0]
    pe = model.dense_pe().detach()
    embedding = torch.randn(1, decoder.transformer_dim, g, g) + graph._dense(torch.zeros(1, 1, 4, 4), torch.zeros(1))
    factored = FactoredDecoder(decoder, pe)
    image = factored.precompute(embedding.flatten(2)[0].t())
    cache = decoder.two_way_transformer().precompute(embedding, pe)
    report: dict = {"bench": "decoder_macs", "model": "sam_vit_b", "grid": [g, g], "token_rows_read": ROWS,
                    "per_image_M": {"factored": macs(lambda: factored.precompute(embedding.flatten(2)[0].t())),
                                    "direct": macs(lambda: decoder.two_way_transformer().precompute(embedding, pe))},
                    "per_click_M": {}}
    for points in (1, 2):
        coords = torch.tensor([[[300.0 + 100 * i, 400.0 - 50 * i] for i in range(points)] + [[0.0, 0.0]]])
        labels = torch.tensor([[1.0] * points + [-1.0]])
        sparse = graph._embed_points(coords, labels)

        def direct(sparse: torch.Tensor = sparse) -> None:
            hs, src, _ = decoder.run_transformer(embedding, pe, sparse, None, cache)
            kept = src.view(1, g, g, -1)[:, :ROWS].reshape(1, -1, src.shape[2])
            decoder.upscale_tokens(kept, decoder.hypernetwork(hs))

        # products of weights alone are made once per FactoredDecoder (an exported graph holds them as constants)
        factored.click(image, sparse, torch.tensor([ROWS, g]))
        report["per_click_M"][f"{points} point(s)"] = {
            "factored": macs(lambda s=sparse: factored.click(image, s, torch.tensor([ROWS, g]))),
            "direct": macs(direct)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
