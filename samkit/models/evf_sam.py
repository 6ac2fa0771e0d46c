"""EVF-SAM: text-prompted SAM by early vision-language fusion (Zhang et al. 2024).

BEiT-3 encodes the image (at 224 px) and the sentence together; its output at the vision CLS
position, projected to 256 channels, is appended to SAM's sparse prompt embeddings as one token.
State-dict layout of the released checkpoints: ``visual_model.*`` (a SAM), ``mm_extractor.beit3.*``
and ``text_hidden_fcs.0.{0,2}``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samkit.errors import PromptError
from samkit.models.beit3 import Beit3
from samkit.models.mask_decoder import DecodedMasks
from samkit.models.prompt_encoder import PromptEncoder
from samkit.models.sam import Sam
from samkit.models.text_tokenizer import PAD, XlmrTokenizer

SEMANTIC_PREFIX = "[semantic] "  # multitask checkpoints: ask for the semantic-level (all instances) mask


def beit3_image(rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1,3,size,size) float32: /255, bicubic resize (no antialias), (x - 0.5) / 0.5."""
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    return (x - 0.5) / 0.5


class _MultimodalExtractor(nn.Module):
    """Holds the BEiT-3 under the checkpoint's ``mm_extractor.beit3`` prefix."""

    def __init__(self, beit3: Beit3) -> None:
        super().__init__()
        self.beit3 = beit3


class EvfSam(nn.Module):
    """SAM + BEiT-3 + projector. Behaves like :class:`Sam` for the predictor (image encoder, decode,
    input frame) and adds the text path: :meth:`text_prompt` gives the (B,1,256) prompt token.

    ``tokenizer`` (an :class:`XlmrTokenizer` or None) is not part of the state dict; it comes from the
    checkpoint directory. ``supports_semantic``: the checkpoint was trained with the ``[semantic]`` prefix.
    """

    has_text_encoder: bool = True
    weights: str  # where the weights came from (set by the loaders)
    recommended_amg: dict[str, float]  # everything-mode thresholds stored with the weights (set on loading)

    def __init__(self, visual_model: Sam, beit3: Beit3, out_dim: int = 256, arch: str = "evf_sam") -> None:
        super().__init__()
        hidden = beit3.cfg.embed_dim
        self.visual_model = visual_model
        self.mm_extractor = _MultimodalExtractor(beit3)
        self.text_hidden_fcs = nn.ModuleList(
            [nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))])
        self.arch = arch
        self.tokenizer: XlmrTokenizer | None = None
        self.supports_semantic = False

    # -- what the predictor uses, delegated to the SAM inside --------------------------------------
    @property
    def image_encoder(self) -> nn.Module:
        return self.visual_model.image_encoder

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.visual_model.prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.visual_model.mask_decoder

    @property
    def img_size(self) -> int:
        return self.visual_model.img_size

    def set_input_size(self, img_size: int) -> None:
        """Run the SAM backbone at another input frame (:meth:`Sam.set_input_size`); BEiT-3 keeps its own."""
        self.visual_model.set_input_size(img_size)

    @property
    def mask_threshold(self) -> float:
        return self.visual_model.mask_threshold

    @property
    def device(self) -> torch.device:
        return self.visual_model.device

    @property
    def backbone(self) -> str:
        """Registry name of the SAM inside."""
        return self.visual_model.arch

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) SAM-normalised images -> SAM image embeddings (see :meth:`Sam.encode_image`)."""
        return self.visual_model.encode_image(x)

    def decode(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`Sam.decode`; the text prompt goes in as ``extra_tokens`` (B,1,256)."""
        return self.visual_model.decode(*args, **kwargs)

    def decode_masks(self, *args, **kwargs) -> DecodedMasks:
        """:meth:`Sam.decode_masks` of the SAM inside (text prompts as ``extra_tokens``)."""
        return self.visual_model.decode_masks(*args, **kwargs)

    def decode_confident(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`Sam.decode_confident` of the SAM inside."""
        return self.visual_model.decode_confident(*args, **kwargs)

    def dense_pe(self) -> torch.Tensor:
        return self.visual_model.dense_pe()

    def decoder_cache(self, image_embeddings: torch.Tensor):  # noqa: ANN201 (the inner Sam's cache type)
        """:meth:`Sam.decoder_cache` of the SAM inside."""
        return self.visual_model.decoder_cache(image_embeddings)

    def factored_cache(self, image_embeddings: torch.Tensor):  # noqa: ANN201 (the inner Sam's cache type)
        """:meth:`Sam.factored_cache` of the SAM inside."""
        return self.visual_model.factored_cache(image_embeddings)

    # -- text path ---------------------------------------------------------------------------------
    @property
    def beit3(self) -> Beit3:
        return self.mm_extractor.beit3

    @property
    def text_image_size(self) -> int:
        """Side of the square image BEiT-3 takes (224)."""
        return self.beit3.cfg.img_size

    @property
    def max_text_tokens(self) -> int:
        """Longest token sequence (``<s>`` and ``</s>`` included) the text positions allow."""
        return self.beit3.cfg.max_text_tokens

    @property
    def vocab_size(self) -> int:
        return self.beit3.cfg.vocab_size

    def text_image(self, rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB -> (1,3,224,224) BEiT-3 input on the model's device."""
        return beit3_image(rgb, self.text_image_size).to(self.device)

    def tokenize(self, text: str, semantic: bool = False) -> list[int]:
        """Token ids of ``text`` (``<s>`` ... ``</s>``) with the checkpoint's tokenizer;
        ``semantic`` prepends ``[semantic] `` (multitask checkpoints)."""
        if self.tokenizer is None:
            raise PromptError(f"{self.arch} has no tokenizer: load it from a checkpoint directory holding "
                             "sentencepiece.bpe.model, or pass token ids")
        return self.tokenizer.encode(SEMANTIC_PREFIX + text if semantic else text)

    def fused_cls(self, images: torch.Tensor, input_ids: torch.Tensor,
                  text_padding: torch.Tensor | None = None) -> torch.Tensor:
        """images (B,3,224,224), input_ids (B,T), text_padding (B,T) bool (True = padded) ->
        (B,1,D) BEiT-3 output at the vision CLS position."""
        return self.beit3(images, input_ids, text_padding)[:, :1]

    def text_prompt(self, images: torch.Tensor, input_ids: torch.Tensor,
                    text_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Same inputs as :meth:`fused_cls` -> (B,1,256) prompt tokens for :meth:`decode`'s ``extra_tokens``.

        ``images`` may be (1,3,224,224) for B sentences about the same image.
        """
        if images.shape[0] != input_ids.shape[0]:
            images = images.expand(input_ids.shape[0], -1, -1, -1)
        return self.project(self.fused_cls(images, input_ids, text_padding))

    def project(self, cls: torch.Tensor) -> torch.Tensor:
        """(B,1,D) fused CLS -> (B,1,256) prompt token (the EVF projector ``text_hidden_fcs.0``)."""
        return self.text_hidden_fcs[0](cls)


def pad_token_ids(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token id lists -> (B,T) long ids right-padded with ``<pad>`` and (B,T) bool padding mask
    (None when every sequence has the same length)."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), PAD, dtype=torch.long)
    padding = torch.ones((len(sequences), longest), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        padding[i, :len(seq)] = False
    return ids, (padding if bool(padding.any()) else None)
