"""The text trainer's data: referring scenes encoded once by the frozen SAM and cached (embeddings, BEiT-3
input images, every expression's low-res target), several expressions per scene, and the tokenizer
trained on the expressions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from samkit._optional import require
from samkit.data.refer_scenes import QUERY_KINDS, candidate_queries, describe, open_refer_scenes
from samkit.models.evf_sam import beit3_image
from samkit.models.sam import Sam
from samkit.models.text_tokenizer import XlmrTokenizer
from samkit.predict.transforms import preprocess
from samkit.train.data import low_res_targets
from samkit.train.device import autocast
from samkit.train.model import atomic_save
from samkit.train.text.config import TextTrainConfig

_TOKENIZER_PREFIX = "samkit_text_spm"


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
def build_cache(sam: Sam, samples: Any, expressions_per_scene: int, beit_size: int, seed: int = 0,
                bf16: bool = True, full_targets: bool = False, progress: bool = False) -> dict:
    """Frozen-encoder data of referring scenes: ``embeddings`` (N,256,g,g) bf16, ``beit_images``
    (N,3,s,s) fp16, and per expression ``texts``, ``scene`` (N index), ``kinds``, ``targets`` (E,S/4,S/4)
    bool and, with ``full_targets``, ``full`` (E,S,S) bool."""
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


def scene_data(cfg: TextTrainConfig, sam: Sam, beit_size: int, split: str) -> dict:
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
    require("sentencepiece", "text", "text training")
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
