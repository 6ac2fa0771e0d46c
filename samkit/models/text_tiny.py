"""samkit_tiny_text: a small text-prompted model trained here on top of the frozen ``samkit_tiny``.

Two layouts, both :class:`~samkit.models.evf_sam.EvfSam` (same state-dict keys: ``visual_model.*`` the
frozen samkit_tiny, ``mm_extractor.beit3.*`` a small BEiT-3, ``text_hidden_fcs.*`` the projector), so
the Predictor's text path and the EVF loaders treat them alike:

* early fusion (:class:`EvfSam` itself): the BEiT-3 encodes [image patches; text] jointly and its vision
  CLS output becomes the prompt token (EVF-SAM's design);
* late fusion (:class:`TextOnlyEvfSam`): the same BEiT-3 layers see only the text tokens; the output at
  the first text token (``<s>``) becomes the prompt token, so the image reaches the prompt only through
  SAM's decoder.

The tokenizer is a sentencepiece model trained on the synthetic training expressions
(``samkit/weights/samkit_tiny_text.spm.model``), read by :class:`~samkit.models.text_tokenizer.XlmrTokenizer`
(fairseq ids: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3). See docs/samkit_tiny_text.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from samkit.errors import CheckpointError
from samkit.models.beit3 import Beit3, Beit3Config
from samkit.models.build_sam import SAMKIT_TINY_TRAIN_SIZE, build_samkit_tiny
from samkit.models.evf_sam import EvfSam
from samkit.models.hub import load_state_dict_file, load_weights
from samkit.models.model_file import read_model_info
from samkit.models.registry import register_model, resolve_name
from samkit.models.sam import Sam
from samkit.models.text_tokenizer import XlmrTokenizer

VARIANTS = ("early", "late")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
TINY_TEXT_WEIGHTS = "samkit_tiny_text.fp16.safetensors"
TINY_TEXT_TOKENIZER = "samkit_tiny_text.spm.model"
TOKENIZER_NAME = "tokenizer.model"  # a training run's tokenizer, next to its model.fp16.safetensors


def small_beit3_config(vocab_size: int, embed_dim: int = 192, depth: int = 4, num_heads: int = 4,
                       ffn_dim: int = 768, img_size: int = 160, patch_size: int = 16,
                       max_text_positions: int = 66) -> Beit3Config:
    """A small BEiT-3 (defaults: the shipped samkit_tiny_text): 160 px images in 16 px patches, at most
    64 text tokens."""
    return Beit3Config(embed_dim=embed_dim, depth=depth, num_heads=num_heads, ffn_dim=ffn_dim,
                       vocab_size=vocab_size, img_size=img_size, patch_size=patch_size,
                       max_text_positions=max_text_positions)


class TextOnlyEvfSam(EvfSam):
    """Late fusion: the EVF layout whose BEiT-3 sees only the text; the prompt token is the projected
    output at the first text position. The image input of :meth:`fused_cls` is ignored."""

    def fused_cls(self, images: torch.Tensor, input_ids: torch.Tensor,
                  text_padding: torch.Tensor | None = None) -> torch.Tensor:
        """(B,T) ids (+ (B,T) padding) -> (B,1,D) encoder output at ``<s>``."""
        beit3 = self.beit3
        x = beit3.text_embed(input_ids)
        padding = text_padding.bool() if text_padding is not None and bool(text_padding.any()) else None
        return beit3.encoder(x, 0, padding)[:, :1]


def build_text_model(visual_model: torch.nn.Module, cfg: Beit3Config, variant: str = "early",
                     arch: str = "samkit_tiny_text") -> EvfSam:
    """EVF layout around ``visual_model`` (a Sam) with a BEiT-3 of ``cfg``; ``variant`` early / late fusion."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(visual_model, Sam):
        raise TypeError(f"the visual model of a text model is a Sam, not a {type(visual_model).__name__}")
    cls = EvfSam if variant == "early" else TextOnlyEvfSam
    return cls(visual_model, Beit3(cfg), arch=arch)


@register_model("samkit_tiny_text",
                "samkit's demo text model: frozen samkit_tiny + small early-fusion BEiT-3 trained here on synthetic "
                "referring scenes (docs/samkit_tiny_text.md)",
                filename=TINY_TEXT_WEIGHTS, bundled=TINY_TEXT_WEIGHTS, img_size=SAMKIT_TINY_TRAIN_SIZE,
                aliases=("tiny_text",))
def build_samkit_tiny_text() -> EvfSam:
    """samkit_tiny_text: frozen samkit_tiny + small BEiT-3 + projector (layout and variant from the bundled
    file's metadata), with the bundled tokenizer attached (docs/samkit_tiny_text.md)."""
    path = WEIGHTS_DIR / TINY_TEXT_TOKENIZER
    tokenizer = XlmrTokenizer(path) if path.is_file() else None
    variant, cfg = shipped_layout(tokenizer.vocab_size if tokenizer is not None else SHIPPED_VOCAB_SIZE)
    model = build_text_model(build_samkit_tiny(), cfg, variant)
    model.set_input_size(SAMKIT_TINY_TRAIN_SIZE)  # the frame its text branch was trained behind
    model.tokenizer = tokenizer
    return model


def shipped_layout(vocab_size: int) -> tuple[str, Beit3Config]:
    """(variant, BEiT-3 config) of the bundled weights: their metadata, else the defaults."""
    path = WEIGHTS_DIR / TINY_TEXT_WEIGHTS
    if path.is_file():
        info = read_model_info(path)
        if info.beit3 is not None:
            return info.variant or SHIPPED_VARIANT, Beit3Config(**info.beit3)
    return SHIPPED_VARIANT, small_beit3_config(vocab_size)


def load_text_model(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> EvfSam:
    """An exported text model (``model.fp16.safetensors`` of a training run, or the bundled file): layout
    from its metadata (variant, BEiT-3 config, backbone), weights strictly loaded, ``tokenizer`` (default:
    the run's ``tokenizer.model`` next to it) attached; eval mode."""
    path = Path(path)
    info = read_model_info(path)
    if info.beit3 is None:
        raise CheckpointError(f"{path} is not an exported samkit text model (no 'beit3' metadata)")
    model = build_text_model(resolve_name(info.backbone or "samkit_tiny").builder(), Beit3Config(**info.beit3),
                             info.variant or "early")
    load_weights(model, load_state_dict_file(path), model.arch)
    if info.img_size is not None and info.img_size != model.img_size:
        model.set_input_size(info.img_size)  # the frame it was trained at, not its backbone builder's
    tok = Path(tokenizer) if tokenizer is not None else path.with_name(TOKENIZER_NAME)
    model.tokenizer = XlmrTokenizer(tok) if tok.is_file() else None
    model.weights = str(path)
    return model.to(device).eval()


# Defaults when the bundled file is missing (what it was when exported; see docs/samkit_tiny_text.md).
SHIPPED_VARIANT = "early"
SHIPPED_VOCAB_SIZE = 46
