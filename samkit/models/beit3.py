"""BEiT-3: a multiway transformer that encodes an image and a sentence jointly.

Every token goes through shared self-attention (one softmax over image and text tokens together),
but the projections, layer norms and feed-forward networks come in two copies ("multiway"):
``A`` for vision tokens, ``B`` for text tokens. The sequence is [CLS, patches..., text tokens...],
split at the number of vision tokens. State-dict layout of torchscale's ``BEiT3`` (the released
BEiT-3 / EVF-SAM checkpoints): ``text_embed``, ``vision_embed``, ``encoder.{embed_positions,
layers.N, layer_norm}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

POSITION_OFFSET = 2  # fairseq convention: positional-embedding rows 0 and 1 are never used


@dataclass(frozen=True)
class Beit3Config:
    """Sizes of a BEiT-3 encoder. ``max_text_positions`` rows of text positions, of which the first
    :data:`POSITION_OFFSET` are unused, so at most ``max_text_positions - 2`` text tokens."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    vocab_size: int = 64010
    img_size: int = 224
    patch_size: int = 16
    max_text_positions: int = 1024
    eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def max_text_tokens(self) -> int:
        return self.max_text_positions - POSITION_OFFSET


BEIT3_CONFIGS: dict[str, Beit3Config] = {
    "base": Beit3Config(embed_dim=768, depth=12, num_heads=12, ffn_dim=3072),
    "large": Beit3Config(embed_dim=1024, depth=24, num_heads=16, ffn_dim=4096),
}


class Multiway(nn.Module):
    """Two copies of a token-wise module: ``A`` for the first ``split`` tokens (vision), ``B`` for the rest (text).

    (B, L, ...) -> (B, L, ...); ``split`` >= L uses only A, ``split`` == 0 only B.
    """

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.A = a
        self.B = b

    def forward(self, x: torch.Tensor, split: int) -> torch.Tensor:
        if split >= x.shape[1]:
            return self.A(x)
        if split <= 0:
            return self.B(x)
        return torch.cat([self.A(x[:, :split]), self.B(x[:, split:])], dim=1)


def _multiway_norm(dim: int, eps: float) -> Multiway:
    return Multiway(nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps))


def _multiway_linear(dim: int) -> Multiway:
    return Multiway(nn.Linear(dim, dim), nn.Linear(dim, dim))


class VisionEmbedding(nn.Module):
    """(B,3,S,S) normalised image -> (B, 1 + (S/p)^2, D): CLS token then the patch tokens.

    ``mask_token`` (masked-image pretraining) is kept only for the checkpoint layout.
    """

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.img_size = img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"BEiT-3 takes {self.img_size}x{self.img_size} images, got {tuple(images.shape[-2:])}")
        patches = self.proj(images).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(images.shape[0], -1, -1), patches], dim=1)


class PositionalEmbeddings(nn.Module):
    """Learned absolute positions, one table per modality, each counted from :data:`POSITION_OFFSET`.

    ``A`` (vision): 1 + patches + 2 rows; ``B`` (text): ``max_text_positions`` rows.
    """

    def __init__(self, num_vision: int, max_text_positions: int, embed_dim: int) -> None:
        super().__init__()
        self.A = nn.Embedding(num_vision + POSITION_OFFSET, embed_dim)
        self.B = nn.Embedding(max_text_positions, embed_dim)

    def forward(self, num_vision: int, num_text: int) -> torch.Tensor:
        """(1, num_vision + num_text, D) embeddings of [vision positions; text positions]."""
        if num_text > self.B.num_embeddings - POSITION_OFFSET:
            raise ValueError(f"{num_text} text tokens exceed the model's limit of "
                             f"{self.B.num_embeddings - POSITION_OFFSET}")
        vision = self.A.weight[POSITION_OFFSET:POSITION_OFFSET + num_vision]
        text = self.B.weight[POSITION_OFFSET:POSITION_OFFSET + num_text]
        return torch.cat([vision, text], dim=0).unsqueeze(0)


class MultiwayAttention(nn.Module):
    """Self-attention over all tokens with modality-specific q/k/v/out projections and a sub-layer norm
    (``inner_attn_ln``) before the output projection. (B,L,D) -> (B,L,D)."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide embed_dim {dim}")
        self.num_heads = num_heads
        self.q_proj = _multiway_linear(dim)
        self.k_proj = _multiway_linear(dim)
        self.v_proj = _multiway_linear(dim)
        self.out_proj = _multiway_linear(dim)
        self.inner_attn_ln = _multiway_norm(dim, eps)

    def forward(self, x: torch.Tensor, split: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``keep`` (B,1,1,L) bool: False for padded key positions (None: attend to all)."""
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

        q, k, v = (heads(proj(x, split)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.out_proj(self.inner_attn_ln(out, split), split)


class FeedForward(nn.Module):
    """fc1 -> GELU -> LayerNorm (sub-layer norm) -> fc2. (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.ffn_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.ffn_layernorm(F.gelu(self.fc1(x))))


class Beit3Layer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)), every norm and the FFN multiway."""

    def __init__(self, cfg: Beit3Config) -> None:
        super().__init__()
        self.self_attn = MultiwayAttention(cfg.embed_dim, cfg.num_heads, cfg.eps)
        self.self_attn_layer_norm = _multiway_norm(cfg.embed_dim, cfg.eps)
        self.ffn = Multiway(FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.eps),
                            FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.eps))
        self.final_layer_norm = _multiway_norm(cfg.embed_dim, cfg.eps)

    def forward(self, x: torch.Tensor, split: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B,L,D) -> (B,L,D); ``split`` = number of vision tokens."""
        x = x + self.self_attn(self.self_attn_layer_norm(x, split), split, keep)
        return x + self.ffn(self.final_layer_norm(x, split), split)


class Beit3Encoder(nn.Module):
    """Positions + layers + final multiway layer norm. (B,L,D) token embeddings -> (B,L,D)."""

    def __init__(self, cfg: Beit3Config) -> None:
        super().__init__()
        self.embed_positions = PositionalEmbeddings(cfg.num_patches + 1, cfg.max_text_positions, cfg.embed_dim)
        self.layers = nn.ModuleList(Beit3Layer(cfg) for _ in range(cfg.depth))
        self.layer_norm = _multiway_norm(cfg.embed_dim, cfg.eps)

    def forward(self, x: torch.Tensor, split: int, padding: torch.Tensor | None = None) -> torch.Tensor:
        """``split`` = number of vision tokens at the start of ``x``; ``padding`` (B,L) bool, True = padded."""
        x = x + self.embed_positions(split, x.shape[1] - split).to(x.dtype)
        keep = None
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
            keep = ~padding[:, None, None, :]
        for layer in self.layers:
            x = layer(x, split, keep)
        return self.layer_norm(x, split)


class Beit3(nn.Module):
    """BEiT-3 over [image tokens; text tokens]. See :meth:`forward` for shapes."""

    def __init__(self, cfg: Beit3Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or BEIT3_CONFIGS["large"]
        self.text_embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.vision_embed = VisionEmbedding(cfg.img_size, cfg.patch_size, cfg.embed_dim)
        self.encoder = Beit3Encoder(cfg)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                text_padding: torch.Tensor | None = None) -> torch.Tensor:
        """images (B,3,224,224) normalised to [-1, 1]; input_ids (B,T) token ids; text_padding (B,T) bool,
        True at padded positions (None: no padding). Returns (B, 197 + T, D): vision CLS at index 0,
        then the 196 patch tokens, then the text tokens."""
        vision = self.vision_embed(images)
        text = self.text_embed(input_ids)
        x = torch.cat([vision, text.to(vision.dtype)], dim=1)
        split = vision.shape[1]
        padding = None
        if text_padding is not None and bool(text_padding.any()):
            padding = torch.cat([text_padding.new_zeros(vision.shape[:2]), text_padding.bool()], dim=1)
        return self.encoder(x, split, padding)
