"""The text trainer's test evaluation on cached scenes: cIoU / gIoU per query kind, or with an oracle box."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from samkit.eval.refer import per_expression_iou, summarize
from samkit.models.sam import Sam
from samkit.models.text_tokenizer import XlmrTokenizer
from samkit.train.text.steps import Prompter, encode_texts, prompt_logits


@torch.no_grad()
def evaluate_cached(sam: Sam, data: dict, prompter: Prompter | None = None,
                    tokenizer: XlmrTokenizer | None = None, oracle_box: bool = False, batch: int = 50,
                    max_tokens: int = 64, per_expression: bool = False) -> dict:
    """cIoU / gIoU (and per query kind) of cached test expressions, masks at the input frame's
    resolution (low-res logits upsampled bilinearly, threshold 0, as the Predictor does for a square
    image of the frame's size). ``oracle_box``: the frozen SAM prompted with the target mask's box.
    ``per_expression``: also ``ious``, every expression's IoU in ``data`` order (empty union: 1)."""
    rows = []
    n = len(data["texts"])
    for start in range(0, n, batch):
        index = torch.arange(start, min(start + batch, n))
        full = data["full"][index]
        if oracle_box:
            boxes = torch.stack([_mask_box(m) for m in full])
            low, _ = sam.decode(data["embeddings"][data["scene"][index]].float(), boxes=boxes, multimask_output=False)
        else:
            if prompter is None:
                raise ValueError("evaluate_cached needs a prompter (or oracle_box=True)")
            texts = [data["texts"][int(i)] for i in index]
            ids, padding = (encode_texts(tokenizer, texts, max_tokens) if tokenizer is not None
                            else (torch.zeros(len(texts), 1, dtype=torch.long), None))
            low, _, _ = prompt_logits(prompter, sam, data, index, ids, padding)
        pred = F.interpolate(low.float(), size=full.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
        inter = (pred & full).sum((1, 2))
        union = (pred | full).sum((1, 2))
        for j, i in enumerate(index.tolist()):
            rows.append({"intersection": int(inter[j]), "union": int(union[j]), "group": data["kinds"][i]})
    out = summarize(rows)
    out["by_kind"] = out.pop("by_group")
    if per_expression:
        out["ious"] = per_expression_iou([r["intersection"] for r in rows], [r["union"] for r in rows]).tolist()
    return out


def _mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
