"""The SAM model: an image encoder plus the shared prompt encoder and mask decoder."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samkit.models.factored_decoder import FactoredDecoder, FactoredImage
from samkit.models.mask_decoder import DecodedMasks, MaskDecoder, output_slice
from samkit.models.prompt_encoder import PromptEncoder
from samkit.models.transformer import ImageCache


class Sam(nn.Module):
    """Image encoder + prompt encoder + mask decoder, state-dict layout of the released checkpoints.

    ``image_encoder`` maps (B,3,1024,1024) normalised, padded images to (B,256,64,64) embeddings.
    ``arch`` is the registry name of the architecture (set by the builders). :meth:`set_input_size` runs
    the same weights at another input frame (a model trained at 256 or 512 has exactly the registry's
    state-dict keys and shapes).
    """

    patch_size: int = 16  # input pixels per embedding cell, for every registered encoder
    _pe_key: tuple[Any, ...] | None = None  # what dense_pe's cached encoding was computed from

    mask_threshold: float = 0.0
    has_text_encoder: bool = False  # text prompts need an EvfSam
    weights: str  # where the weights came from: a path, or "random" (set by samkit.models.load)
    recommended_amg: dict[str, float]  # everything-mode thresholds stored with the weights (set on loading)

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 img_size: int = 1024, arch: str = "sam") -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.img_size = img_size
        self.arch = arch

    def set_input_size(self, img_size: int) -> None:
        """Take (B,3,img_size,img_size) inputs: prompt frame, embedding grid (img_size / 16), mask-input
        size (4x the grid) and the image encoder's frame (its ``set_input_size``, when it has one: SAM's
        ViT resizes its position embedding; TinyViT is size-agnostic). Weights are unchanged."""
        patch = self.patch_size
        if img_size % patch or img_size < 4 * patch:
            raise ValueError(f"img_size must be a multiple of {patch} and at least {4 * patch}, got {img_size}")
        grid = img_size // patch
        pe = self.prompt_encoder
        pe.input_image_size = (img_size, img_size)
        pe.image_embedding_size = (grid, grid)
        pe.mask_input_size = (4 * grid, 4 * grid)
        self.img_size = img_size
        self._pe_key = None  # dense_pe caches the grid's encoding: recompute it
        set_encoder_size = getattr(self.image_encoder, "set_input_size", None)
        if set_encoder_size is not None:
            set_encoder_size(img_size)

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,1024,1024) normalised images -> (B,256,64,64) embeddings."""
        return self.image_encoder(x)

    def decode(self, image_embeddings: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
               boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
               multimask_output: bool = True,
               extra_tokens: torch.Tensor | None = None,
               cache: ImageCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in the 1024 input frame -> low-res logits (B,M,256,256) and IoU predictions (B,M).

        points: ((B,N,2) x,y, (B,N) labels); boxes (B,4); mask_input (B,1,256,256) logits;
        extra_tokens (B,T,256) appended to the sparse prompt (text prompts);
        cache: :meth:`decoder_cache` of these image_embeddings (used when there is no mask_input).
        """
        sparse, dense, cache = self._prompt_embeddings(points, boxes, mask_input, extra_tokens, cache)
        return self.mask_decoder(image_embeddings, self.dense_pe(), sparse, dense, multimask_output, cache=cache)

    def decode_masks(self, image_embeddings: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
                     boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                     multimask_output: bool = True, extra_tokens: torch.Tensor | None = None,
                     cache: ImageCache | None = None) -> DecodedMasks:
        """:meth:`decode` up to the upscaling chain, for the masks it returns (3 or 1): the caller upscales the
        part of the (h, w) token grid it reads (:class:`~samkit.models.mask_decoder.DecodedMasks`); its ``iou``
        holds all 4 predictions (select with :func:`~samkit.models.mask_decoder.output_slice`)."""
        sparse, dense, cache = self._prompt_embeddings(points, boxes, mask_input, extra_tokens, cache)
        return self.mask_decoder.decode_masks(image_embeddings, self.dense_pe(), sparse, dense,
                                              output_slice(multimask_output), cache)

    def decode_confident(self, image_embeddings: torch.Tensor, min_iou: float,
                         points: tuple[torch.Tensor, torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
                         mask_input: torch.Tensor | None = None, multimask_output: bool = True,
                         extra_tokens: torch.Tensor | None = None, cache: ImageCache | FactoredImage | None = None,
                         grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode`, keeping only the masks whose predicted IoU is above ``min_iou`` (the others are not
        computed): logits (K,256,256), IoU (K,), index (K,2) = (prompt, output) in decode's (B,M). ``grid`` (rows,
        cols): only the logits of that top-left block of image tokens, (K,4*rows,4*cols). ``cache``: either image
        cache (:meth:`decoder_cache`; :meth:`factored_cache`: less work per prompt for large batches)."""
        if isinstance(cache, FactoredImage) and mask_input is None:
            sparse, _, _ = self._prompt_embeddings(points, boxes, None, extra_tokens, None)
            return cache.decoder.confident(cache.tensors, sparse, output_slice(multimask_output), min_iou, grid)
        sparse, dense, cache = self._prompt_embeddings(points, boxes, mask_input, extra_tokens,
                                                       cache if isinstance(cache, ImageCache) else None)
        return self.mask_decoder.confident_masks(image_embeddings, self.dense_pe(), sparse, dense, multimask_output,
                                                 min_iou, cache=cache, grid=grid)

    def factored_cache(self, image_embeddings: torch.Tensor) -> FactoredImage:
        """:meth:`decoder_cache`'s counterpart for :class:`~samkit.models.factored_decoder.FactoredDecoder`: the
        per-image products of one (1,256,64,64) embedding without a mask prompt, for :meth:`decode_confident`.
        Made for the current weights (make a new one after changing them)."""
        decoder = FactoredDecoder(self.mask_decoder, self.dense_pe())
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return FactoredImage(decoder, decoder.precompute((image_embeddings + no_mask).flatten(2)[0].t()))

    def _prompt_embeddings(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                           mask_input: torch.Tensor | None, extra_tokens: torch.Tensor | None,
                           cache: ImageCache | None) -> tuple[torch.Tensor, torch.Tensor, ImageCache | None]:
        """Sparse (B,N,256) and dense (B,256,h,w) prompt embeddings, and the image cache when it applies."""
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        if extra_tokens is not None:
            sparse = torch.cat([sparse.expand(extra_tokens.shape[0], -1, -1), extra_tokens], dim=1)
            dense = dense.expand(extra_tokens.shape[0], -1, -1, -1)
        return sparse, dense, None if mask_input is not None else cache  # the cache is for the no-mask embedding

    def decoder_cache(self, image_embeddings: torch.Tensor) -> ImageCache:
        """Prompt-independent decoder work for one (1,256,64,64) embedding; pass it to :meth:`decode` for each
        prompt without a mask input. Same results, fewer operations per prompt."""
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_decoder.two_way_transformer().precompute(image_embeddings + no_mask, self.dense_pe())

    def dense_pe(self) -> torch.Tensor:
        """(1,256,64,64) positional encoding of the embedding grid, cached until the (buffer) matrix changes."""
        gauss = self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        key = (gauss.data_ptr(), gauss._version, gauss.device, gauss.dtype)
        if getattr(self, "_pe_key", None) != key:
            # Channels-last = token-major: the decoder reads it as (1, h*w, 256) without a copy.
            self._pe_cache = self.prompt_encoder.get_dense_pe().contiguous(memory_format=torch.channels_last)
            self._pe_key = key
        return self._pe_cache
