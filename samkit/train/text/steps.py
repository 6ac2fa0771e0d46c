"""The text trainer's model side: the trained prompter (EVF layout around the frozen SAM, or one constant
token), its inputs (token ids), its logits and auxiliary targets, and one optimiser step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samkit.models.evf_sam import EvfSam, pad_token_ids
from samkit.models.load import load_model
from samkit.models.sam import Sam
from samkit.models.text_tiny import build_text_model, small_beit3_config
from samkit.models.text_tokenizer import PAD, XlmrTokenizer, truncate_ids
from samkit.train.device import autocast
from samkit.train.losses import DICE_WEIGHT, FOCAL_WEIGHT, dice_loss, sigmoid_focal_loss
from samkit.train.text.config import TextTrainConfig


class ConstantPrompt(nn.Module):
    """No-text baseline: one learned (1,1,256) prompt token, whatever the image and text."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)

    def text_prompt(self, images: torch.Tensor, input_ids: torch.Tensor,
                    text_padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.token.expand(input_ids.shape[0], -1, -1)


Prompter = EvfSam | ConstantPrompt  # what trains: an EVF model around the frozen SAM, or one token


def load_frozen_sam(name: str, device: torch.device) -> Sam:
    """Registry model ``name`` with its released / bundled weights, frozen, in eval mode."""
    sam = load_model(name, device=device, progress=False)
    if not isinstance(sam, Sam):
        raise ValueError(f"text training needs a SAM model to stay frozen, got {name!r} ({type(sam).__name__})")
    sam.requires_grad_(False)
    return sam.eval()


def build_prompter(cfg: TextTrainConfig, sam: Sam, vocab_size: int) -> Prompter:
    """The trained part's container: an EVF model around the frozen ``sam`` (early / late) or a
    :class:`ConstantPrompt`."""
    if cfg.variant == "constant":
        return ConstantPrompt(sam.prompt_encoder.embed_dim)
    model = build_text_model(sam, small_beit3_config(vocab_size, **cfg.beit3), cfg.variant,
                             arch=f"samkit_tiny_text_{cfg.variant}")
    model.visual_model.requires_grad_(False)
    return model


def text_parameters(prompter: nn.Module) -> list[nn.Parameter]:
    """The parameters that train: everything except the frozen SAM."""
    return [p for n, p in prompter.named_parameters() if not n.startswith("visual_model.") and p.requires_grad]


def mask_loss(low: torch.Tensor, targets: torch.Tensor, focal_alpha: float = 0.25) -> tuple[torch.Tensor, dict]:
    """SAM's mask loss (20 focal + dice) of (B,1,s,s) logits vs (B,s,s) targets; (scalar, floats)."""
    focal = sigmoid_focal_loss(low, targets, None, alpha=focal_alpha).mean()
    dice = dice_loss(low, targets).mean()
    total = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice
    return total, {"loss": float(total.detach()), "focal": float(focal.detach()), "dice": float(dice.detach())}


def encode_texts(tokenizer: XlmrTokenizer, texts: list[str], limit: int,
                 pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Padded (B,T) ids and padding mask of ``texts`` (each cut to ``limit`` tokens); ``pad_to``: at
    least that many positions (a fixed T keeps the CPU kernels' shapes, hence their caches, stable)."""
    ids, padding = pad_token_ids([truncate_ids(tokenizer.encode(t), limit) for t in texts])
    extra = 0 if pad_to is None else min(pad_to, limit) - ids.shape[1]
    if extra > 0:
        padding = torch.zeros(ids.shape, dtype=torch.bool) if padding is None else padding
        ids = F.pad(ids, (0, extra), value=PAD)
        padding = F.pad(padding, (0, extra), value=True)
    return ids, padding


def prompt_logits(prompter: Prompter, sam: Sam, data: dict, index: torch.Tensor, ids: torch.Tensor,
                  padding: torch.Tensor | None, patches: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B,1,s,s) low-res logits, (B,1,256) prompt tokens of expressions ``index`` of ``data`` with token ids
    ``ids``, and with ``patches`` (early fusion only) the BEiT-3's (B,P,D) final patch tokens (else None)."""
    scenes = data["scene"][index]
    images = data["beit_images"][scenes].float()
    patch_tokens = None
    if patches:  # one BEiT-3 pass for both: the vision CLS (-> prompt token) and the patch tokens after it
        if not isinstance(prompter, EvfSam):
            raise ValueError("patch tokens need an early-fusion EVF prompter")
        out = prompter.beit3(images, ids, padding)
        tokens, patch_tokens = prompter.project(out[:, :1]), out[:, 1:1 + prompter.beit3.cfg.num_patches]
    else:
        tokens = prompter.text_prompt(images, ids, padding)
    emb = data["embeddings"][scenes].float()
    low, _ = sam.decode(emb, extra_tokens=tokens, multimask_output=False)
    return low, tokens, patch_tokens


def patch_coverage(targets: torch.Tensor, grid: int) -> torch.Tensor:
    """(E,s,s) low-res targets -> (E,grid*grid) fraction of each BEiT-3 patch the target covers (row-major,
    the patch tokens' order; the BEiT-3 image and the targets span the same square scene)."""
    return F.adaptive_avg_pool2d(targets.float()[:, None], grid)[:, 0].flatten(1)


@torch.no_grad()
def point_embeddings(sam: Sam, targets: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(E,256) embeddings by ``sam``'s prompt encoder of one foreground point per (E,s,s) low-res target:
    the target pixel nearest the target's centroid, in the input frame (the point-prompt token a text
    prompt would ideally reproduce; targets for ``point_distill``)."""
    e, s = targets.shape[0], targets.shape[-1]
    stride = sam.img_size / s
    ys, xs = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    out = []
    for start in range(0, e, chunk):
        t = targets[start:start + chunk].float()
        area = t.sum((1, 2)).clamp_min(1.0)
        cy, cx = (t * ys).sum((1, 2)) / area, (t * xs).sum((1, 2)) / area
        dist = (ys[None] - cy[:, None, None]) ** 2 + (xs[None] - cx[:, None, None]) ** 2
        flat = dist.masked_fill(t == 0, float("inf")).flatten(1).argmin(1)
        points = torch.stack([flat % s, flat // s], dim=1).float()[:, None] * stride + stride / 2
        sparse, _ = sam.prompt_encoder((points, torch.ones(len(points), 1, dtype=torch.long)), None, None)
        out.append(sparse[:, 0].float())
    return torch.cat(out)


def train_step(prompter: Prompter, sam: Sam, data: dict, index: torch.Tensor,
               tokenizer: XlmrTokenizer | None, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
               grad_clip: float | None = 1.0, focal_alpha: float = 0.25, bf16: bool = True,
               max_tokens: int = 64, pad_to: int | None = None, point_distill: float = 0.0,
               patch_head: nn.Module | None = None, patch_grounding: float = 0.0) -> dict[str, float]:
    """One optimiser step on expressions ``index`` of ``data`` (token ids padded to ``pad_to``); returns
    the loss terms. ``point_distill`` > 0 adds that times the MSE of the prompt tokens to ``data["points"]``
    (:func:`point_embeddings`); ``patch_grounding`` > 0 (early fusion) adds that times the BCE of
    ``patch_head`` (D -> 1 logit per patch token) against ``data["patches"]`` (:func:`patch_coverage`)."""
    texts = [data["texts"][int(i)] for i in index]
    ids, padding = (encode_texts(tokenizer, texts, max_tokens, pad_to) if tokenizer is not None
                    else (torch.zeros(len(texts), 1, dtype=torch.long), None))
    optimizer.zero_grad(set_to_none=True)
    grounding = patch_grounding > 0 and patch_head is not None
    with autocast(torch.device("cpu"), bf16):
        low, tokens, patch_tokens = prompt_logits(prompter, sam, data, index, ids, padding, patches=grounding)
    loss, stats = mask_loss(low, data["targets"][index], focal_alpha)
    if grounding and patch_head is not None and patch_tokens is not None:
        patch_logits = patch_head(patch_tokens.float())[..., 0]
        bce = F.binary_cross_entropy_with_logits(patch_logits, data["patches"][index])
        loss = loss + patch_grounding * bce
        stats["patch_bce"] = float(bce.detach())
    if point_distill > 0:
        distill = F.mse_loss(tokens[:, 0].float(), data["points"][index])
        loss = loss + point_distill * distill
        stats["point_mse"] = float(distill.detach())
    loss.backward()
    if grad_clip is not None:
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    optimizer.step()
    return stats
