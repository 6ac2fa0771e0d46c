"""SAM's mask decoder: output tokens + two-way transformer + hypernetwork heads."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from samkit.models.common import MLP, LayerNorm2d, dense
from samkit.models.transformer import ImageCache, TwoWayTransformer

# Rows of image tokens per step of the upscaling chain: the intermediates of one step (~1 MB)
# stay in cache instead of streaming 4-8 MB tensors through memory between element-wise ops.
UPSCALE_ROWS = 512


def output_slice(multimask_output: bool) -> slice:
    """The outputs a call returns of the decoder's 1 + 3: the three ambiguity-aware masks, or the single one."""
    return slice(1, None) if multimask_output else slice(0, 1)


class MaskDecoder(nn.Module):
    """Predicts mask logits (B,M,4h,4w) and IoU scores (B,M) from an image embedding and prompts.

    M is 3 (the ambiguity-aware outputs) when ``multimask_output`` is set, else 1.
    """

    def __init__(self, transformer_dim: int = 256, transformer: nn.Module | None = None,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer(embedding_dim=transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def two_way_transformer(self) -> TwoWayTransformer:
        """``transformer`` as the TwoWayTransformer it is for every registered model (its image cache API)."""
        if not isinstance(self.transformer, TwoWayTransformer):
            raise TypeError(f"an image cache needs a TwoWayTransformer, not {type(self.transformer).__name__}")
        return self.transformer

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor | None, multimask_output: bool,
                cache: ImageCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings (1 or B, C, h, w); image_pe (1, C, h, w); sparse (B, N, C); dense (B, C, h, w).

        ``cache`` (``transformer.precompute`` of image_embeddings + the no-mask embedding) stands for
        the image and dense inputs, which are then not read.
        """
        sel = output_slice(multimask_output)
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                        cache, outputs=sel)
        return masks, iou[:, sel]

    def confident_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                        sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor | None,
                        multimask_output: bool, min_iou: float, cache: ImageCache | None = None,
                        grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward`'s masks whose predicted IoU is above ``min_iou``, and only those: masks (K,4h,4w),
        their IoU (K,), and ``index`` (K,2): (prompt, output) of each in forward()'s (B,M) results.
        ``grid`` (rows, cols): only the tokens of the grid's top-left rows x cols block are upscaled, and the
        masks are that block's logits (K,4*rows,4*cols) (what an upsampling to the image reads).

        The IoU head reads only the transformer's tokens, so a prompt none of whose masks passes skips the
        upscaling chain (a quarter of a decoder call): segment-everything drops most of its grid points there.
        The kept masks are the ones :meth:`forward` computes (the same operations on fewer prompts)."""
        hs, src, (h, w) = self.run_transformer(image_embeddings, image_pe, sparse_prompt_embeddings,
                                               dense_prompt_embeddings, cache)
        rows, cols = (h, w) if grid is None else grid
        return self.keep_confident(hs, output_slice(multimask_output), min_iou, (4 * rows, 4 * cols),
                                   lambda prompts, weights: self.upscale_masks(
                                       grid_block(src[prompts], (h, w), 0, rows, 0, cols), weights, rows, cols))

    def keep_confident(self, hs: torch.Tensor, outputs: slice, min_iou: float, size: tuple[int, int],
                       upscale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``outputs`` masks whose predicted IoU is above ``min_iou``, from the transformer's output tokens hs
        (B,1+M,C): ``upscale(prompts (P,), mask weights (P,K,C/8))`` -> logits (P,K,*size) runs for the prompts with
        a kept mask only. Returns masks (N,*size), their IoU (N,) and index (N,2) = (prompt, output)."""
        iou = self.iou_prediction_head(hs[:, 0])[:, outputs]
        index = (iou > min_iou).nonzero()
        if not len(index):
            return hs.new_zeros((0, *size)), iou.new_zeros((0,)), index
        prompts, kept = torch.unique(index[:, 0], return_inverse=True)
        masks = upscale(prompts, self.hypernetwork(hs[prompts], outputs))
        return masks[kept, index[:, 1]], iou[index[:, 0], index[:, 1]], index

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                      dense: torch.Tensor | None, cache: ImageCache | None = None,
                      upscale_step_tokens: int = UPSCALE_ROWS, outputs: slice = slice(None)
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of the ``outputs`` mask tokens (default all 4) (B,M,4h,4w) and all 4 IoU predictions (B,4).
        ``upscale_step_tokens``: see :meth:`upscale_masks`."""
        decoded = self.decode_masks(image_embeddings, image_pe, sparse, dense, outputs, cache)
        h, w = decoded.grid
        return decoded.region(h, w, upscale_step_tokens), decoded.iou

    def decode_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                     dense: torch.Tensor | None, outputs: slice = slice(None), cache: ImageCache | None = None
                     ) -> DecodedMasks:
        """Everything of a decoder call but the upscaling chain, for the ``outputs`` mask tokens: the caller
        upscales the part of the token grid it reads (:meth:`DecodedMasks.region`) and, when needed, the rest."""
        hs, src, grid = self.run_transformer(image_embeddings, image_pe, sparse, dense, cache)
        return DecodedMasks(self, src, self.hypernetwork(hs, outputs), grid, self.iou_prediction_head(hs[:, 0]))

    def run_transformer(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                        dense: torch.Tensor | None, cache: ImageCache | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Output tokens + prompt tokens through the two-way transformer: the output tokens (B,1+M,C) (IoU token,
        mask tokens), image (B,h*w,C), (h, w)."""
        b = sparse.shape[0]
        n_out = 1 + self.num_mask_tokens  # the prompt tokens' own outputs are never read
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        if cache is None:
            if image_embeddings.shape[0] != b:
                image_embeddings = image_embeddings.expand(b, -1, -1, -1)
            if dense is None:
                raise ValueError("dense prompt embeddings are needed without an image cache")
            src = image_embeddings + dense
            h, w = src.shape[2:]
            # image_pe stays (1,C,h,w): the transformer broadcasts it over the batch.
            hs, src = self.transformer(src, image_pe, tokens, n_out=n_out)
        else:
            h, w = cache.grid
            hs, src = self.transformer(None, image_pe, tokens, cache=cache, n_out=n_out)
        return hs, src, (int(h), int(w))

    def hypernetwork(self, hs: torch.Tensor, outputs: slice = slice(None)) -> torch.Tensor:
        """Output tokens (B,1+M,C) -> hypernetwork outputs (B,K,C/8) of the ``outputs`` mask tokens (default all
        M): the masks a call returns are the only ones upscaled."""
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens]
        return torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i])
                            for i in range(self.num_mask_tokens)[outputs]], dim=1)

    def upscale_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int,
                      step_tokens: int = UPSCALE_ROWS, weights: tuple[torch.Tensor, ...] | None = None,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """``output_upscaling`` then the hypernetwork product: src (B,h*w,C), hyper_in (B,M,C/8) -> (B,M,4h,4w)
        (written into ``out`` when given: any (B,M,4h,4w) view, e.g. a block of a larger grid).

        Image tokens go through :meth:`upscale_tokens` ``step_tokens`` at a time (an exported graph takes
        them all at once: fewer, larger operations run faster in an interpreter such as onnxruntime-web).
        ``weights``: :meth:`upscale_weights` (made once per call when None, not per step).
        """
        b, n = src.shape[:2]
        if n == 0:  # an empty block of the grid
            return src.new_empty((b, hyper_in.shape[1], 4 * h, 4 * w)) if out is None else out
        step = min(n, step_tokens)  # image tokens per step
        per = max(1, step_tokens // n)  # batch items per step (several when a whole grid fits)
        weights = self.upscale_weights() if weights is None else weights
        groups = []
        for i in range(0, b, per):
            pieces = [self.upscale_tokens(src[i:i + per, r:r + step], hyper_in[i:i + per], weights)
                      for r in range(0, n, step)]
            groups.append(torch.cat(pieces, dim=1))
        return token_masks_to_grid(torch.cat(groups), h, w, out)

    def upscale_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both transposed convolutions as per-token Linears: :meth:`upscale_first_weights` and
        :meth:`upscale_second_weights`."""
        return (*self.upscale_first_weights(), *self.upscale_second_weights())

    def upscale_tokens(self, src: torch.Tensor, hyper_in: torch.Tensor,
                       weights: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """The upscaling chain and the hypernetwork product for any image tokens: src (B,n,C), hyper_in
        (B,M,C/8) -> (B,n*16,M), rows (token, di, dj, ei, ej): the 4 x 4 logits each token becomes,
        row ``2*di + ei`` and column ``2*dj + ej`` of its patch (see :func:`token_masks_to_grid`).

        Each stride-2, kernel-2 transposed convolution is a per-pixel Linear (C -> 4*C') followed by a
        pixel shuffle, so the chain runs as matmuls on token-major rows (sub-pixel offsets kept as
        extra rows) and the shuffle is left to the caller, on the M-channel result. A token's logits depend
        on that token alone. ``weights``: :meth:`upscale_weights` (made here when None).
        """
        w1, b1, w2, b2 = self.upscale_weights() if weights is None else weights
        return self.upscale_rest(dense(src.reshape(-1, src.shape[2]), w1, b1).view(src.shape[0], -1, w1.shape[0]),
                                 hyper_in, (w2, b2))

    def upscale_first_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first transposed convolution as a per-token Linear: weight (4*C', C), bias (4*C'), outputs
        ordered (di, dj, out)."""
        ct1 = self.output_upscaling[0]
        assert isinstance(ct1, nn.ConvTranspose2d) and ct1.bias is not None
        return ct1.weight.permute(2, 3, 1, 0).reshape(4 * ct1.out_channels, -1), ct1.bias.repeat(4)

    def upscale_second_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The second transposed convolution as a per-pixel Linear: weight (4*C'', C'), bias (4*C''), outputs
        ordered (ei, ej, out)."""
        ct2 = self.output_upscaling[3]
        assert isinstance(ct2, nn.ConvTranspose2d) and ct2.bias is not None
        return ct2.weight.permute(2, 3, 1, 0).reshape(4 * ct2.out_channels, ct2.in_channels), ct2.bias.repeat(4)

    def upscale_rest(self, y: torch.Tensor, hyper_in: torch.Tensor,
                     second: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`upscale_tokens` after the first transposed convolution: y (B,n,4*C') -> (B,n*16,M).
        ``second``: :meth:`upscale_second_weights` (made here when None)."""
        _, norm, act1, ct2, act2 = self.output_upscaling
        assert isinstance(norm, LayerNorm2d)
        w2, b2 = self.upscale_second_weights() if second is None else second
        c1, c2 = w2.shape[1], w2.shape[0] // 4
        b = y.shape[0]
        y = act1(F.layer_norm(y.reshape(-1, c1), (c1,), norm.weight, norm.bias, norm.eps))
        y = act2(dense(y, w2, b2))  # rows (b, token, di, dj), columns (ei, ej, out)
        return torch.bmm(y.view(b, -1, c2), hyper_in.transpose(1, 2))


class DecodedMasks:
    """A decoder call up to the upscaling chain (:meth:`MaskDecoder.decode_masks`): the transformer's image
    tokens ``src`` (B,h*w,C), the hypernetwork outputs ``hyper_in`` (B,M,C/8) of the masks asked for, the token
    ``grid`` (h, w) and all IoU predictions ``iou`` (B,4). Each token becomes 4 x 4 low-res logits of its own, so
    any block of the grid can be upscaled alone, and the rest later."""

    def __init__(self, decoder: MaskDecoder, src: torch.Tensor, hyper_in: torch.Tensor, grid: tuple[int, int],
                 iou: torch.Tensor) -> None:
        self.decoder, self.src, self.hyper_in, self.grid, self.iou = decoder, src, hyper_in, grid, iou
        self.weights = decoder.upscale_weights()  # shared by the blocks

    def region(self, rows: int, cols: int, step_tokens: int = UPSCALE_ROWS) -> torch.Tensor:
        """Low-res logits (B,M,4*rows,4*cols) of the grid's first ``rows`` rows and ``cols`` columns of tokens, as
        a new tensor (no in-place writes: what an exported graph traces)."""
        return self.decoder.upscale_masks(self._tokens(0, rows, 0, cols), self.hyper_in, rows, cols, step_tokens,
                                          self.weights)

    def fill(self, low: torch.Tensor, rows: slice, cols: slice, step_tokens: int = UPSCALE_ROWS) -> torch.Tensor:
        """Write the low-res logits of the tokens in ``rows`` x ``cols`` (slices of the grid, step 1) at their
        place in ``low`` (B,M,4h,4w), in place; returns ``low``."""
        h, w = self.grid
        r0, r1, _ = rows.indices(h)
        c0, c1, _ = cols.indices(w)
        if r1 > r0 and c1 > c0:  # an empty block (the grid has no padding there) does no work
            self.decoder.upscale_masks(self._tokens(r0, r1, c0, c1), self.hyper_in, r1 - r0, c1 - c0, step_tokens,
                                       self.weights, low[..., 4 * r0:4 * r1, 4 * c0:4 * c1])
        return low

    def _tokens(self, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        return grid_block(self.src, self.grid, r0, r1, c0, c1)

    def complete(self, low: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """``low`` (B,M,4h,4w) whose first 4*rows x 4*cols logits are filled (:meth:`fill`), with the rest
        filled in place (the tokens outside that block); returns it."""
        h, w = self.grid
        self.fill(low, slice(rows, h), slice(0, w))
        if rows > 0:
            self.fill(low, slice(0, rows), slice(cols, w))
        return low


def grid_block(src: torch.Tensor, grid: tuple[int, int], r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    """The image tokens (B,nr*nc,C) of rows r0:r1 and columns c0:c1 of an (h, w) grid of tokens src (B,h*w,C),
    row-major (full-width rows: a slice)."""
    h, w = grid
    b, _, c = src.shape
    if (c0, c1) != (0, w):  # columns of a block: its tokens gathered
        return src.reshape(b, h, w, c)[:, r0:r1, c0:c1].reshape(b, (r1 - r0) * (c1 - c0), c)
    return src if (r0, r1) == (0, h) else src[:, r0 * w:r1 * w]


def token_masks_to_grid(m: torch.Tensor, h: int, w: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """:meth:`MaskDecoder.upscale_tokens` of an h x w token grid (B,h*w*16,M) -> logits (B,M,4h,4w), new or
    written into ``out`` (any (B,M,4h,4w) view: one strided copy)."""
    b = m.shape[0]
    m = m.reshape(b, h, w, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
    if out is None:
        return m.reshape(b, -1, 4 * h, 4 * w)
    out.unflatten(3, (w, 2, 2)).unflatten(2, (h, 2, 2)).copy_(m)
    return out


def token_masks_to_patches(m: torch.Tensor) -> torch.Tensor:
    """:meth:`MaskDecoder.upscale_tokens` of n tokens (B,n*16,M) -> each token's 4 x 4 logits (B,M,n,4,4)."""
    b = m.shape[0]
    m = m.reshape(b, -1, 2, 2, 2, 2, m.shape[2]).permute(0, 6, 1, 2, 4, 3, 5)
    return m.reshape(b, m.shape[1], -1, 4, 4)
