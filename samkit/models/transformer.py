"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from samkit.models.common import MLPBlock, tracing


@dataclass
class ImageCache:
    """Prompt-independent work of the first two-way block for one image embedding without a mask prompt.

    keys, key_pe (1,N,C) token-major image tokens (embedding + no-mask embedding) and positional encoding;
    t2i_k, t2i_v (h,N,d) keys/values of the first token->image attention, projected;
    i2t_q (h,d,N) image queries of the first image->token attention, projected and transposed;
    pe_proj: per later block, the positional encoding through its token->image keys' and image->token queries'
    projections, and last through the final attention's keys' (each (h,d,N), no bias: :meth:`Attention.project_pe`);
    grid (h, w) of the embedding.
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor
    grid: tuple[int, int]
    pe_proj: list[torch.Tensor] = field(default_factory=list)


class Attention(nn.Module):
    """Multi-head attention with an optional down-projected internal width. (B,Nq,C),(B,Nk,C) -> (B,Nq,C)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                residual: torch.Tensor | None = None, q_pe: tuple[torch.Tensor, torch.Tensor] | None = None,
                k_pe: tuple[torch.Tensor, torch.Tensor] | None = None, inplace: bool = False) -> torch.Tensor:
        """Attention output, plus ``residual`` (B,Nq,C) when given (fused where that saves a pass).

        ``q_pe`` / ``k_pe``: (encoding (1,N,C), :meth:`project_pe` of it through q_proj / k_proj) of the many
        image-side queries or keys, which are then passed without it: on the few-token paths the encoding's
        product with the projection is added to the scores (small) instead of the encoding to the N image tokens.
        ``inplace``: the residual may be overwritten (a tensor of the caller's own).
        """
        nq, nk = q.shape[1], k.shape[1]
        if nq > nk and self.num_heads * nk < self.internal_dim and k_pe is None:
            return self._few_keys(q, k, v, residual, None if q_pe is None else q_pe[1], inplace)
        if nk > nq and self.num_heads * nq < self.internal_dim and q_pe is None:
            out = self._few_queries(q, k, v, None if k_pe is None else k_pe[1])
        else:
            q = q if q_pe is None else q + q_pe[0]
            k = k if k_pe is None else k + k_pe[0]
            qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
            out = F.scaled_dot_product_attention(qh, kh, vh)
            out = self.out_proj(out.transpose(1, 2).reshape(q.shape[0], nq, self.internal_dim))
        return out if residual is None else residual + out

    # The decoder's cross-attentions pair ~7 prompt tokens with 4096 image tokens. Projecting all
    # image tokens costs N*C*internal_dim; multiplying the few tokens through the projection
    # matrices first costs N*C*heads*n_tokens (56 < 128 columns). Same function, reassociated.

    def _few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     k_pe: torch.Tensor | None = None) -> torch.Tensor:
        """Few queries (B,Nq,C) attend to many keys (B,Nk,C) without projecting the keys. ``k_pe`` (h,d,Nk): the
        keys' encoding through k_proj (:meth:`project_pe`), left out of ``k`` (not of the values)."""
        b, nq, c = q.shape
        h, d = self.num_heads, self.internal_dim // self.num_heads
        qh = self._heads(self.q_proj(q)) * d**-0.5  # (B,h,Nq,d)
        wk = self.k_proj.weight.view(h, d, c)
        # k_proj's bias adds the same value to every key's score: softmax ignores it.
        if k_pe is None:
            scores = (qh @ wk).reshape(b, h * nq, c) @ k.transpose(1, 2)  # (B,h*Nq,Nk)
        else:
            scores = torch.baddbmm((qh @ k_pe).reshape(b, h * nq, -1), (qh @ wk).reshape(b, h * nq, c),
                                   k.transpose(1, 2))
        mixed = torch.softmax(scores, dim=-1) @ v  # (B,h*Nq,C); weights sum to 1, so v's bias passes through
        wv = self.v_proj.weight.view(h, d, c)
        out = mixed.view(b, h, nq, c) @ wv.transpose(1, 2) + self.v_proj.bias.view(h, 1, d)  # (B,h,Nq,d)
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, self.internal_dim))

    # With an image cache the image side of the first block is projected once per image; what is left
    # per prompt is the few tokens' own projections and two products with (h, N, d) tensors.

    def project_heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """(1,N,C) -> (h,N,d) through one of the q/k/v projections."""
        return self._heads(proj(x))[0].contiguous()

    def project_pe(self, pe: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """An image-side encoding (1,N,C) through ``proj``'s weight, no bias -> (h,d,N): what the encoding adds to
        the scores of the few-token paths, once per image."""
        h, d = self.num_heads, self.internal_dim // self.num_heads
        return (proj.weight.view(h, d, -1) @ pe[0].t()).contiguous()

    def attend_projected_keys(self, q: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
        """Queries (B,Nq,C) attend to already projected keys/values (h,Nk,d) shared by the batch -> (B,Nq,C)."""
        b, nq, _ = q.shape
        h, d = self.num_heads, self.internal_dim // self.num_heads
        # Batch folded into the query rows: (h, B*Nq, d) against the shared (h, Nk, d).
        qh = self.q_proj(q).view(b, nq, h, d).permute(2, 0, 1, 3).reshape(h, b * nq, d)
        out = F.scaled_dot_product_attention(qh, kh, vh)  # (h, B*Nq, d)
        return self.out_proj(out.view(h, b, nq, d).permute(1, 2, 0, 3).reshape(b, nq, self.internal_dim))

    def attend_projected_queries(self, qt: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 residual: torch.Tensor) -> torch.Tensor:
        """Already projected image queries qt (h,d,Nq) attend to few keys (B,Nk,C); plus residual (1 or B,Nq,C)."""
        b, nk, c = k.shape
        h, d = self.num_heads, self.internal_dim // self.num_heads
        kh = self.k_proj(k).view(b, nk, h, d).permute(2, 0, 1, 3).reshape(h, b * nk, d) * d**-0.5
        scores = torch.bmm(kh, qt).view(h, b, nk, -1)  # (h, B, Nk, Nq)
        attn = torch.softmax(scores, dim=2).transpose(0, 1).reshape(b, h * nk, -1)  # (B, h*Nk, Nq)
        vh = self._heads(self.v_proj(v))  # (B,h,Nk,d)
        wo = self.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (h,d,C)
        values = (vh @ wo + self.out_proj.bias / h).reshape(b, h * nk, c)  # as in _few_keys
        return torch.baddbmm(residual, attn.transpose(1, 2), values)

    def _few_keys(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  residual: torch.Tensor | None, q_pe: torch.Tensor | None = None,
                  inplace: bool = False) -> torch.Tensor:
        """Many queries (B,Nq,C) attend to few keys (B,Nk,C) without projecting the queries. ``q_pe`` (h,d,Nq): the
        queries' encoding through q_proj (:meth:`project_pe`), left out of ``q``. ``inplace``: the result is
        written into ``residual``."""
        b, nq, c = q.shape
        nk = k.shape[1]
        h, d = self.num_heads, self.internal_dim // self.num_heads
        kh = self._heads(self.k_proj(k)) * d**-0.5  # (B,h,Nk,d)
        vh = self._heads(self.v_proj(v))  # (B,h,Nk,d)
        wq = self.q_proj.weight.view(h, d, c)
        score_w = (kh @ wq).reshape(b, h * nk, c)  # (B,h*Nk,C): keys pulled back through q_proj
        score_b = (kh @ self.q_proj.bias.view(h, d, 1)).reshape(b, h * nk, 1)
        if q_pe is not None:  # the queries' encoding: (B,h,Nk,d) @ (h,d,Nq), plus the bias term
            score_b = (kh @ q_pe).reshape(b, h * nk, nq) + score_b
        # Scores laid out (B, h*Nk, Nq): softmax over the small key axis is fast when it is not the last one.
        scores = torch.baddbmm(score_b, score_w, q.transpose(1, 2))
        attn = torch.softmax(scores.view(b, h, nk, nq), dim=2).view(b, h * nk, nq)
        wo = self.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (h,d,C)
        # Values pushed through out_proj; each head's weights sum to 1, so a 1/h share of out_proj's
        # bias per head adds up to the bias. The residual is added by the same GEMM (one pass fewer).
        values = (vh @ wo + self.out_proj.bias / h).reshape(b, h * nk, c)  # (B,h*Nk,C)
        if residual is None:
            return torch.bmm(attn.transpose(1, 2), values)
        if inplace:
            return residual.baddbmm_(attn.transpose(1, 2), values)
        return torch.baddbmm(residual, attn.transpose(1, 2), values)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act=nn.ReLU, onednn=True)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor, cache: ImageCache | None = None,
                pe_proj: tuple[torch.Tensor, torch.Tensor] | None = None,
                own_keys: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B,Nq,C) tokens, keys (B or 1,Nk,C) image, key_pe (B or 1,Nk,C); returns both updated.

        ``cache`` (from :meth:`TwoWayTransformer.precompute`, for these keys) replaces the image-side
        projections of both cross-attentions. ``pe_proj``: key_pe through the token->image keys' and the
        image->token queries' projections (:meth:`Attention.project_pe`; key_pe (1,Nk,C) then): the encoding is
        never added to the image tokens. ``own_keys``: ``keys`` may be overwritten.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        if cache is None and pe_proj is not None:
            attended = self.cross_attn_token_to_image(queries + query_pe, keys, keys, k_pe=(key_pe, pe_proj[0]))
        elif cache is None:
            keys_pe = keys + key_pe  # used by both cross-attentions: keys do not change in between
            attended = self.cross_attn_token_to_image(queries + query_pe, keys_pe, keys)
        else:
            attended = self.cross_attn_token_to_image.attend_projected_keys(queries + query_pe, cache.t2i_k,
                                                                            cache.t2i_v)
        queries = self.norm2(queries + attended)
        queries = self.norm3(queries + self.mlp(queries))

        if cache is None and pe_proj is not None:
            keys = self.cross_attn_image_to_token(keys, queries + query_pe, queries, residual=keys,
                                                  q_pe=(key_pe, pe_proj[1]), inplace=own_keys)
        elif cache is None:
            keys = self.cross_attn_image_to_token(keys_pe, queries + query_pe, queries, residual=keys)
        else:
            keys = self.cross_attn_image_to_token.attend_projected_queries(
                cache.i2t_q, queries + query_pe, queries, residual=cache.keys)
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention."""

    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    @staticmethod
    def _token_major(x: torch.Tensor) -> torch.Tensor:
        # Token-major and contiguous: the element-wise ops and norms over 4096 tokens are memory-bound.
        return x.flatten(2).transpose(1, 2).contiguous()

    def precompute(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageCache:
        """The prompt-independent part of the first block for (1,C,h,w) image tokens and their (1,C,h,w) encoding."""
        if image_embedding.shape[0] != 1:
            raise ValueError("an image cache holds one image: image_embedding must have batch size 1")
        return self.precompute_tokens(self._token_major(image_embedding), self._token_major(image_pe),
                                      (image_embedding.shape[2], image_embedding.shape[3]))

    def precompute_tokens(self, keys: torch.Tensor, key_pe: torch.Tensor, grid: tuple[int, int]) -> ImageCache:
        """:meth:`precompute` of token-major (1,N,C) image tokens and their (1 or B,N,C) encoding on an h x w grid."""
        keys_pe = keys + key_pe
        first = self.layers[0]
        assert isinstance(first, TwoWayAttentionBlock)
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        pe_proj: list[torch.Tensor] = []
        if key_pe.shape[0] == 1:  # one encoding for the batch: its products with the later projections
            for layer in self.layers[1:]:
                assert isinstance(layer, TwoWayAttentionBlock)
                pe_proj += [layer.cross_attn_token_to_image.project_pe(key_pe, layer.cross_attn_token_to_image.k_proj),
                            layer.cross_attn_image_to_token.project_pe(key_pe, layer.cross_attn_image_to_token.q_proj)]
            final = self.final_attn_token_to_image
            pe_proj.append(final.project_pe(key_pe, final.k_proj))
        return ImageCache(
            keys=keys, key_pe=key_pe,
            t2i_k=t2i.project_heads(keys_pe, t2i.k_proj), t2i_v=t2i.project_heads(keys, t2i.v_proj),
            i2t_q=i2t.project_heads(keys_pe, i2t.q_proj).transpose(1, 2).contiguous(),
            grid=grid, pe_proj=pe_proj,
        )

    def forward(self, image_embedding: torch.Tensor | None, image_pe: torch.Tensor,
                point_embedding: torch.Tensor, cache: ImageCache | None = None,
                n_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (B,C,h,w), image_pe (B or 1,C,h,w); point_embedding (B,N,C)
        -> tokens (B,N,C), image (B,h*w,C). With ``cache`` (see :meth:`precompute`) image_embedding is not read.
        ``n_out``: only the first n_out tokens are wanted (B,n_out,C): the final attention runs for those alone
        (each token's row of it is independent of the others')."""
        if cache is None:
            if image_embedding is None:
                raise ValueError("image_embedding is needed without an image cache")
            keys, key_pe = self._token_major(image_embedding), self._token_major(image_pe)
        else:
            keys, key_pe = cache.keys, cache.key_pe
        # With the cache's encoding products the encoding is never added to the image tokens (two passes over
        # them fewer), and the later blocks add their attention into the keys they own (one copy fewer).
        pe = cache.pe_proj if cache is not None and len(cache.pe_proj) == 2 * len(self.layers) - 1 else None
        own = not torch.is_grad_enabled() and not tracing()
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            pe_i = None if pe is None or i == 0 else (pe[2 * i - 2], pe[2 * i - 1])
            queries, keys = layer(queries, keys, point_embedding, key_pe, cache if i == 0 else None, pe_i,
                                  own_keys=own and i > 0)
        if n_out is not None:
            queries, point_embedding = queries[:, :n_out], point_embedding[:, :n_out]
        if pe is not None:
            attended = self.final_attn_token_to_image(queries + point_embedding, keys, keys, k_pe=(key_pe, pe[-1]))
        else:
            attended = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attended)
        return queries, keys
