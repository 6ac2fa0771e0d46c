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

Parts: :mod:`~samkit.train.text.config` (the config), :mod:`~samkit.train.text.data` (scene cache,
tokenizer), :mod:`~samkit.train.text.steps` (prompter, loss, one step), :mod:`~samkit.train.text.evaluate`
(test metrics), :mod:`~samkit.train.text.loop` (:func:`train_text`: the run and the export).

Output folder: ``config.json``, ``train_log.jsonl``, ``model.fp16.safetensors`` (EVF layout, the
frozen samkit_tiny included), ``tokenizer.model``, ``test_metrics.json``.
"""
from samkit.models.text_tiny import TOKENIZER_NAME, load_text_model
from samkit.train.text.config import TEXT_VARIANTS, TextTrainConfig, load_text_config
from samkit.train.text.data import build_cache, cached, scene_data, scene_expressions, train_tokenizer
from samkit.train.text.evaluate import evaluate_cached
from samkit.train.text.loop import LOG_NAME, active_parameters, text_model_info, train_text
from samkit.train.text.steps import (
    ConstantPrompt,
    build_prompter,
    encode_texts,
    load_frozen_sam,
    mask_loss,
    patch_coverage,
    point_embeddings,
    prompt_logits,
    text_parameters,
    train_step,
)

__all__ = [
    "LOG_NAME", "TEXT_VARIANTS", "TOKENIZER_NAME", "ConstantPrompt", "TextTrainConfig", "active_parameters",
    "build_cache", "build_prompter", "cached", "encode_texts", "evaluate_cached", "load_frozen_sam",
    "load_text_config", "load_text_model", "mask_loss", "patch_coverage", "point_embeddings", "prompt_logits",
    "scene_data", "scene_expressions", "text_model_info", "text_parameters", "train_step", "train_text",
    "train_tokenizer",
]
