"""Training a small text prompter on top of a frozen ``samkit_tiny`` (samkit_tiny_text), and the
early-vs-late fusion experiment (docs/samkit_tiny_text.md).

The SAM (image encoder, prompt encoder, mask decoder) stays frozen; only the text side trains: a small
BEiT-3 plus the EVF projector (``variant`` "early": image and text encoded jointly, vision CLS -> prompt
token; "late": text tokens only, ``<s>`` -> prompt token) or, as a no-text baseline, one learned prompt
token ("constant"). The prompt token is appended to the decoder's sparse prompt (no points or boxes);
loss: SAM's focal + dice (20:1) on the single-mask low-res (64x64) logits against the target, optionally
plus a point-token distillation (``point_distill``) and, for early fusion, a per-patch grounding BCE on
the BEiT-3's patch tokens (``patch_grounding``; the head is the trainer's and is not exported).

The frozen encoder's embeddings are computed once per scene and cached (``cache_dir``), with the
BEiT-3 input image and every expression's token-free data (text, target mask at low res, query kind).
Training scenes carry several expressions each (other targets / query kinds of the same layout,
from :mod:`samkit.data.refer_scenes`' query helpers), so one embedding serves several steps.

    samkit train-text configs/samkit_tiny_text_early.json

Output folder: ``config.json``, ``train_log.jsonl``, ``model.fp16.safetensors`` (EVF layout, the
frozen samkit_tiny included), ``tokenizer.model``, ``test_metrics.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samkit.data.refer_scenes import QUERY_KINDS, candidate_queries, describe, open_refer_scenes
from samkit.models.evf_sam import beit3_image, pad_token_ids
from samkit.models.text_tiny import VARIANTS, build_text_model, small_beit3_config
from samkit.models.text_tokenizer import XlmrTokenizer
from samkit.train.config import _reject_unknown, check_config, read_config_file
from samkit.train.data import low_res_targets
from samkit.train.losses import DICE_WEIGHT, FOCAL_WEIGHT, dice_loss, sigmoid_focal_loss
from samkit.train.model import atomic_save, export_safetensors_fp16
from samkit.train.trainer import autocast, make_optimizer, make_scheduler, peak_memory_mb, resolve_device

TEXT_VARIANTS = (*VARIANTS, "constant")
LOG_NAME = "train_log.jsonl"
TOKENIZER_NAME = "tokenizer.model"
_TOKENIZER_PREFIX = "samkit_text_spm"


@dataclass
class TextTrainConfig:
    """One text-prompter training run; see ``configs/samkit_tiny_text_*.json``."""

    out_dir: str = "runs/text"
    variant: str = "early"  # "early" | "late" | "constant" (no text: one learned prompt token)
    model: str = "samkit_tiny"  # the frozen SAM (registry name)
    data_root: str = "../shared/data"  # shared/data-like root with BSDS500/images/<split>/
    cache_dir: str = "runs/text_cache"  # embeddings + expressions, shared between runs
    train_scenes: int = 1500
    expressions_per_scene: int = 6  # at most; the scene's own expression first
    test_scenes: int = 300  # held-out test split, one expression each, evaluated at the end (0: none)
    vocab_size: int = 128  # sentencepiece pieces (at most; fewer when the corpus has fewer)
    beit3: dict[str, Any] = field(default_factory=dict)  # small_beit3_config options (vocab from the tokenizer)
    batch_size: int = 32
    steps: int = 3000
    # optimiser and schedule: as TrainConfig (AdamW, linear warm-up, cosine)
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    schedule: str = "cosine"
    min_lr_ratio: float = 0.02
    decay_steps: list[int] = field(default_factory=list)
    decay_gamma: float = 0.1
    grad_clip: float | None = 1.0
    focal_alpha: float = 0.25
    # auxiliary loss weight: MSE between the prompt token and the frozen prompt encoder's embedding of a
    # foreground point at the target's innermost pixel (0: off; the same for every variant)
    point_distill: float = 0.0
    # auxiliary loss weight, early fusion only: per-patch BCE of a linear head (trained, not exported) on the
    # BEiT-3's final patch tokens against the target's coverage of each patch (dense grounding supervision
    # that late fusion cannot have: its encoder sees no image). 0: off
    patch_grounding: float = 0.0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    bf16: bool = True
    seed: int = 0
    log_every: int = 20
    save_every: int = 1000  # model snapshot (model.pt) every N steps
    progress: bool = True

    def validate(self) -> TextTrainConfig:
        checks = [
            (self.variant in TEXT_VARIANTS, f"variant must be one of {TEXT_VARIANTS}, got {self.variant!r}"),
            (self.train_scenes >= 1 and self.expressions_per_scene >= 1,
             "need train_scenes >= 1 and expressions_per_scene >= 1"),
            (self.batch_size >= 1 and self.steps >= 1, "batch_size and steps must be >= 1"),
            (self.test_scenes >= 0 and self.warmup_steps >= 0, "test_scenes and warmup_steps must be >= 0"),
            (0.0 < self.focal_alpha < 1.0, "focal_alpha must be in (0, 1)"),
            (self.point_distill >= 0.0, "point_distill must be >= 0"),
            (self.patch_grounding >= 0.0, "patch_grounding must be >= 0"),
            (self.patch_grounding == 0.0 or self.variant == "early",
             f"patch_grounding needs image patches in the text encoder: variant 'early', got {self.variant!r}"),
            (self.vocab_size >= 16, "vocab_size must be >= 16"),
        ]
        check_config(checks, "text training config")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextTrainConfig:
        data = dict(data)
        _reject_unknown(cls, data, "text training config")
        if "betas" in data:
            data["betas"] = tuple(float(b) for b in data["betas"])
        return cls(**data).validate()


def load_text_config(source: TextTrainConfig | dict | str | os.PathLike) -> TextTrainConfig:
    """A TextTrainConfig from an object, a dict or a JSON / YAML file."""
    if isinstance(source, TextTrainConfig):
        return source.validate()
    return TextTrainConfig.from_dict(source if isinstance(source, dict) else read_config_file(source))


# --------------------------------------------------------------------------------------- scene data


def scene_expressions(sample: Any, limit: int, rng: np.random.Generator) -> list[tuple[str, int, str]]:
    """Up to ``limit`` (text, target object index, query kind) of one referring scene: its own expression
    first, then other unambiguous queries of the same layout (random targets and kinds)."""
    extra = sample.extra
    out = [(sample.sentence, int(extra["target"]), extra["query"]["type"])]
    if limit <= 1:
        return out
    objects = extra["objects"]
    size = sample.image.shape[0]
    seen = {sample.sentence}
    pairs = [(t, k) for t in range(len(objects)) for k in QUERY_KINDS]
    for i in rng.permutation(len(pairs)):
        target, kind = pairs[i]
        queries = candidate_queries(objects, target, kind, size)
        if not queries:
            continue
        text = describe(queries[int(rng.integers(len(queries)))], rng)
        if text not in seen:
            seen.add(text)
            out.append((text, target, kind))
        if len(out) >= limit:
            break
    return out


@torch.no_grad()
def build_cache(sam: nn.Module, samples: Any, expressions_per_scene: int, beit_size: int, seed: int = 0,
                bf16: bool = True, full_targets: bool = False, progress: bool = False) -> dict:
    """Frozen-encoder data of referring scenes: ``embeddings`` (N,256,g,g) bf16, ``beit_images``
    (N,3,s,s) fp16, and per expression ``texts``, ``scene`` (N index), ``kinds``, ``targets`` (E,S/4,S/4)
    bool and, with ``full_targets``, ``full`` (E,S,S) bool."""
    from tqdm import tqdm

    from samkit.predict.transforms import preprocess

    device = next(sam.parameters()).device
    rng = np.random.default_rng([seed, 7])
    emb, bimg, texts, scene, kinds, low, full = [], [], [], [], [], [], []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            with autocast(device, bf16):
                emb.append(sam.encode_image(torch.cat(pending).to(device)).to("cpu", torch.bfloat16))
            pending.clear()

    for i in tqdm(range(len(samples)), desc="cache", disable=not progress):
        sample = samples[i]
        x, _ = preprocess(sample.image, sam.img_size)
        pending.append(x)
        if len(pending) == 16:
            flush()
        bimg.append(beit3_image(sample.image, beit_size).to(torch.float16))
        masks = sample.extra.get("object_masks")
        for text, target, kind in scene_expressions(sample, expressions_per_scene, rng):
            mask = torch.from_numpy(np.ascontiguousarray(masks[target] if masks is not None else sample.masks[0]))
            texts.append(text)
            scene.append(i)
            kinds.append(kind)
            t = F.interpolate(mask[None, None].float(), size=(sam.img_size, sam.img_size), mode="nearest")[0, 0] > 0.5
            low.append(low_res_targets(t[None], t[None])[0][0])
            if full_targets:
                full.append(t)
    flush()
    out = {"embeddings": torch.cat(emb), "beit_images": torch.cat(bimg), "texts": texts,
           "scene": torch.tensor(scene), "kinds": kinds, "targets": torch.stack(low)}
    if full_targets:
        out["full"] = torch.stack(full)
    return out


def cached(path: Path, make: Any) -> dict:
    """``torch.load(path)`` when it exists, else ``make()`` saved there."""
    if path.is_file():
        return torch.load(path, weights_only=False)
    data = make()
    atomic_save(data, path)
    return data


def scene_data(cfg: TextTrainConfig, sam: nn.Module, beit_size: int, split: str) -> dict:
    """The (cached) training or test data of ``cfg``."""
    train = split == "train"
    n, k = (cfg.train_scenes, cfg.expressions_per_scene) if train else (cfg.test_scenes, 1)
    path = Path(cfg.cache_dir) / f"{cfg.model}_{split}_{n}x{k}_b{beit_size}_s{cfg.seed}.pt"
    return cached(path, lambda: build_cache(sam, open_refer_scenes(cfg.data_root, split, length=n, seed=cfg.seed),
                                            k, beit_size, cfg.seed, bf16=train and cfg.bf16, full_targets=not train,
                                            progress=cfg.progress))


def train_tokenizer(texts: list[str], path: Path, vocab_size: int = 128) -> XlmrTokenizer:
    """A word-level sentencepiece model of ``texts`` at ``path`` (XLM-R id conventions through
    :class:`XlmrTokenizer`)."""
    import sentencepiece

    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = path.parent / _TOKENIZER_PREFIX
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sorted(set(texts))), model_prefix=str(prefix), vocab_size=vocab_size,
        model_type="word", hard_vocab_limit=False, character_coverage=1.0, pad_id=-1,
        minloglevel=2, num_threads=1)
    os.replace(f"{prefix}.model", path)
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    return XlmrTokenizer(path)


# ------------------------------------------------------------------------------------------- models


class ConstantPrompt(nn.Module):
    """No-text baseline: one learned (1,1,256) prompt token, whatever the image and text."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)

    def text_prompt(self, images: torch.Tensor, input_ids: torch.Tensor,
                    text_padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.token.expand(input_ids.shape[0], -1, -1)


def load_frozen_sam(name: str, device: torch.device) -> nn.Module:
    """Registry model ``name`` with its released / bundled weights, frozen, in eval mode."""
    from samkit.models.load import load_model

    sam = load_model(name, device=device, progress=False)
    sam.requires_grad_(False)
    return sam.eval()


def build_prompter(cfg: TextTrainConfig, sam: nn.Module, vocab_size: int) -> nn.Module:
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
    from samkit.models.text_tokenizer import PAD, truncate_ids

    ids, padding = pad_token_ids([truncate_ids(tokenizer.encode(t), limit) for t in texts])
    extra = 0 if pad_to is None else min(pad_to, limit) - ids.shape[1]
    if extra > 0:
        padding = torch.zeros(ids.shape, dtype=torch.bool) if padding is None else padding
        ids = F.pad(ids, (0, extra), value=PAD)
        padding = F.pad(padding, (0, extra), value=True)
    return ids, padding


def prompt_logits(prompter: nn.Module, sam: nn.Module, data: dict, index: torch.Tensor, ids: torch.Tensor,
                  padding: torch.Tensor | None, patches: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B,1,s,s) low-res logits, (B,1,256) prompt tokens of expressions ``index`` of ``data`` with token ids
    ``ids``, and with ``patches`` (early fusion only) the BEiT-3's (B,P,D) final patch tokens (else None)."""
    scenes = data["scene"][index]
    images = data["beit_images"][scenes].float()
    patch_tokens = None
    if patches:  # one BEiT-3 pass for both: the vision CLS (-> prompt token) and the patch tokens after it
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
def point_embeddings(sam: nn.Module, targets: torch.Tensor, chunk: int = 512) -> torch.Tensor:
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


def train_step(prompter: nn.Module, sam: nn.Module, data: dict, index: torch.Tensor,
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
    if grounding:
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


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate_cached(sam: nn.Module, data: dict, prompter: nn.Module | None = None,
                    tokenizer: XlmrTokenizer | None = None, oracle_box: bool = False, batch: int = 50,
                    max_tokens: int = 64, per_expression: bool = False) -> dict:
    """cIoU / gIoU (and per query kind) of cached test expressions, masks at the input frame's
    resolution (low-res logits upsampled bilinearly, threshold 0, as the Predictor does for a square
    image of the frame's size). ``oracle_box``: the frozen SAM prompted with the target mask's box.
    ``per_expression``: also ``ious``, every expression's IoU in ``data`` order (empty union: 1)."""
    from samkit.eval.refer import per_expression_iou, summarize

    rows = []
    n = len(data["texts"])
    for start in range(0, n, batch):
        index = torch.arange(start, min(start + batch, n))
        full = data["full"][index]
        if oracle_box:
            boxes = torch.stack([_mask_box(m) for m in full])
            low, _ = sam.decode(data["embeddings"][data["scene"][index]].float(), boxes=boxes, multimask_output=False)
        else:
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


# ----------------------------------------------------------------------------------------------- run


def train_text(source: TextTrainConfig | dict | str | os.PathLike) -> dict:
    """Run a text-prompter training (and its test evaluation); returns a summary dict (also written to
    ``out_dir/summary.json``)."""
    from tqdm import tqdm

    cfg = load_text_config(source)
    device = resolve_device(cfg.device)
    if device.type != "cpu":
        raise ValueError("text training runs on the CPU (the cached embeddings live there)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sam = load_frozen_sam(cfg.model, device)
    beit_size = small_beit3_config(2, **cfg.beit3).img_size
    t0 = time.perf_counter()
    data = scene_data(cfg, sam, beit_size, "train")
    cache_s = time.perf_counter() - t0
    tok_path = Path(cfg.cache_dir) / (f"{cfg.model}_train_{cfg.train_scenes}x{cfg.expressions_per_scene}"
                                      f"_s{cfg.seed}_v{cfg.vocab_size}.spm.model")
    tokenizer = None
    if cfg.variant != "constant":
        tokenizer = (XlmrTokenizer(tok_path) if tok_path.is_file()
                     else train_tokenizer(data["texts"], tok_path, cfg.vocab_size))
        shutil.copyfile(tok_path, out / TOKENIZER_NAME)
    prompter = build_prompter(cfg, sam, tokenizer.vocab_size if tokenizer else 2)
    if tokenizer is not None:
        prompter.tokenizer = XlmrTokenizer(out / TOKENIZER_NAME)
    max_tokens = small_beit3_config(2, **cfg.beit3).max_text_tokens
    pad_to = None if tokenizer is None else -(-max(len(tokenizer.encode(t)) for t in set(data["texts"])) // 8) * 8
    params = text_parameters(prompter)
    patch_head = None
    if cfg.patch_grounding > 0:
        patch_head = nn.Linear(prompter.beit3.cfg.embed_dim, 1)
        params = params + list(patch_head.parameters())
        grid = prompter.beit3.cfg.img_size // prompter.beit3.cfg.patch_size
        data["patches"] = patch_coverage(data["targets"], grid)
    optimizer = make_optimizer(params, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    if cfg.point_distill > 0:
        data["points"] = point_embeddings(sam, data["targets"])
    rng = np.random.default_rng([cfg.seed, 11])
    n_expr = len(data["texts"])
    log_path = out / LOG_NAME
    prompter.train()
    sam.eval()
    recent: list[float] = []
    t_train = time.perf_counter()
    with open(log_path, "w") as log, tqdm(total=cfg.steps, desc=f"train-text {cfg.variant}",
                                          disable=not cfg.progress) as bar:
        for step in range(1, cfg.steps + 1):
            tick = time.perf_counter()
            index = torch.from_numpy(rng.integers(n_expr, size=cfg.batch_size))
            lr = optimizer.param_groups[0]["lr"]
            stats = train_step(prompter, sam, data, index, tokenizer, optimizer, params, cfg.grad_clip,
                               cfg.focal_alpha, cfg.bf16, max_tokens, pad_to, cfg.point_distill,
                               patch_head, cfg.patch_grounding)
            scheduler.step()
            recent.append(stats["loss"])
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {"step": step, **stats, "loss_mean": float(np.mean(recent)), "lr": lr,
                          "images_per_s": cfg.batch_size / max(time.perf_counter() - tick, 1e-9),
                          "elapsed_s": time.perf_counter() - t_train, "peak_mem_mb": peak_memory_mb(device)}
                recent.clear()
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss_mean']:.3f}")
            if step % cfg.save_every == 0 and cfg.variant != "constant":
                atomic_save({k: v for k, v in prompter.state_dict().items() if not k.startswith("visual_model.")},
                            out / "text_model.pt")
            bar.update(1)
    train_s = time.perf_counter() - t_train
    prompter.eval()
    summary: dict[str, Any] = {
        "variant": cfg.variant, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "train_expressions": n_expr, "train_scenes": cfg.train_scenes, "cache_build_s": cache_s,
        "train_s": train_s, "images_per_s": cfg.steps * cfg.batch_size / train_s,
        "trainable_params": sum(p.numel() for p in params),
    }
    if cfg.variant != "constant":
        summary["active_params"] = active_parameters(prompter, cfg.variant)
        summary["vocab_size"] = tokenizer.vocab_size
        export_safetensors_fp16(prompter, out / "model.fp16.safetensors", text_metadata(prompter, cfg))
        summary["model_mb"] = (out / "model.fp16.safetensors").stat().st_size / 2**20
    else:
        atomic_save(prompter.state_dict(), out / "constant_token.pt")
    if cfg.test_scenes:
        test = scene_data(cfg, sam, beit_size, "test")
        summary["test"] = evaluate_cached(sam, test, prompter, tokenizer, max_tokens=max_tokens)
        (out / "test_metrics.json").write_text(json.dumps(summary["test"], indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def active_parameters(model: nn.Module, variant: str) -> int:
    """Parameters the prompt token depends on: for late fusion the text-side ones only (no vision
    embedding, no vision experts ``.A.``), for early fusion the whole BEiT-3 + projector."""
    total = 0
    for name, p in model.named_parameters():
        if name.startswith("visual_model."):
            continue
        if variant == "late" and (".vision_embed." in name or ".A." in name):
            continue
        total += p.numel()
    return total


def text_metadata(model: nn.Module, cfg: TextTrainConfig) -> dict[str, str]:
    """safetensors metadata of an exported text model: arch, frame, variant, BEiT-3 config, recipe."""
    return {"arch": "samkit_tiny_text", "img_size": str(model.img_size), "variant": cfg.variant,
            "backbone": cfg.model, "beit3": json.dumps(dataclasses.asdict(model.beit3.cfg)),
            "steps": str(cfg.steps), "batch_size": str(cfg.batch_size), "train_scenes": str(cfg.train_scenes),
            "recipe": "docs/samkit_tiny_text.md"}


def load_text_model(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> nn.Module:
    """An exported text model (``model.fp16.safetensors`` of a run, or the bundled file): layout from its
    metadata (variant, BEiT-3 config, backbone), weights strictly loaded, ``tokenizer`` (default: the
    run's ``tokenizer.model`` next to it) attached; eval mode."""
    from safetensors import safe_open

    from samkit.models.beit3 import Beit3Config
    from samkit.models.hub import load_state_dict_file, load_weights
    from samkit.models.registry import resolve_name

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    cfg = Beit3Config(**json.loads(meta["beit3"]))
    model = build_text_model(resolve_name(meta.get("backbone", "samkit_tiny")).builder(), cfg,
                             meta.get("variant", "early"))
    load_weights(model, load_state_dict_file(path), model.arch)
    tok = Path(tokenizer) if tokenizer is not None else path.with_name(TOKENIZER_NAME)
    model.tokenizer = XlmrTokenizer(tok) if tok.is_file() else None
    model.weights = str(path)
    return model.to(device).eval()
