"""The text trainer's run: data, tokenizer, prompter, the training loop, export and test evaluation."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from samkit.models.evf_sam import EvfSam
from samkit.models.model_file import ModelFileInfo, write_model_file
from samkit.models.text_tiny import TOKENIZER_NAME, small_beit3_config
from samkit.models.text_tokenizer import XlmrTokenizer
from samkit.train.device import peak_memory_mb, resolve_device
from samkit.train.model import atomic_save
from samkit.train.optim import build_optimizer, build_schedule
from samkit.train.text.config import TextTrainConfig, load_text_config
from samkit.train.text.data import scene_data, train_tokenizer
from samkit.train.text.evaluate import evaluate_cached
from samkit.train.text.steps import (
    build_prompter,
    load_frozen_sam,
    patch_coverage,
    point_embeddings,
    text_parameters,
    train_step,
)

LOG_NAME = "train_log.jsonl"


def train_text(source: TextTrainConfig | dict | str | os.PathLike) -> dict:
    """Run a text-prompter training (and its test evaluation); returns a summary dict (also written to
    ``out_dir/summary.json``)."""
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
    if cfg.patch_grounding > 0 and isinstance(prompter, EvfSam):  # early fusion (checked by validate)
        patch_head = nn.Linear(prompter.beit3.cfg.embed_dim, 1)
        params = params + list(patch_head.parameters())
        grid = prompter.beit3.cfg.img_size // prompter.beit3.cfg.patch_size
        data["patches"] = patch_coverage(data["targets"], grid)
    optimizer = build_optimizer(params, cfg)
    scheduler = build_schedule(optimizer, cfg, cfg.steps)
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
    if isinstance(prompter, EvfSam) and tokenizer is not None:  # variant early / late
        summary["active_params"] = active_parameters(prompter, cfg.variant)
        summary["vocab_size"] = tokenizer.vocab_size
        write_model_file(prompter, out / "model.fp16.safetensors", text_model_info(prompter, cfg))
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


def text_model_info(model: EvfSam, cfg: TextTrainConfig) -> ModelFileInfo:
    """Model-file metadata of an exported text model: arch, frame, variant, backbone, BEiT-3 config, recipe."""
    return ModelFileInfo(arch="samkit_tiny_text", img_size=model.img_size, variant=cfg.variant, backbone=cfg.model,
                         beit3=dataclasses.asdict(model.beit3.cfg),
                         extra={"steps": str(cfg.steps), "batch_size": str(cfg.batch_size),
                                "train_scenes": str(cfg.train_scenes), "recipe": "docs/samkit_tiny_text.md"})
