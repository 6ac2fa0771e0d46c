"""The mask decoder's click as low-rank updates of per-image products (the browser's decoder graphs, and
segment-everything's batches of point prompts).

In SAM's two-way transformer the image tokens (N, C) change only by attending to the few prompt tokens:
after block j they are ``LayerNorm(X + A V)`` with attention weights A (N, heads * tokens) and values V
(heads * tokens, C). Unrolled, the image tokens after any block are

    X = diag(c) S0 M + F G

with S0 the image's own tokens (embedding + dense prompt), M a fixed (C, C) matrix (the LayerNorms' centring
and scales), c (N,) a per-token scale, and F (N, r), G (r, C) of rank r = 1 + heads * tokens per block. So
every product of the image tokens with a weight matrix W splits into S0 (M W^T), computed once per image,
and F (G W^T), of rank r, per click; a LayerNorm's variance needs S0's products with the fixed directions
G is built from (the attention's output projection), also once per image. G's rows are themselves fixed
matrices (the output projections' rows through the LayerNorms' centring and scales) times per-click
coefficients (the attentions' values per head), so G W^T costs d, not C, multiply-adds per row and output
once the fixed matrices' products with W are made (once per decoder). A sam_vit_b click on a 481 x 321
photo costs ~390 M multiply-adds against ~690 M for the direct computation, the per-image work ~1.75 G
against ~0.40 G (``bench/decoder_macs.py``); the results are the same function (equal up to float rounding).

:class:`FactoredDecoder` has :meth:`~FactoredDecoder.precompute` (per image: named tensors) and, for a
batch of B prompt sets, :meth:`~FactoredDecoder.transform` and :meth:`~FactoredDecoder.upscale`;
:meth:`~FactoredDecoder.click` (batch 1, traceable for ONNX export) and :meth:`~FactoredDecoder.confident`
(segment-everything's batches: only the masks above an IoU threshold are upscaled) are built on them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from samkit.models.common import tracing
from samkit.models.mask_decoder import UPSCALE_ROWS, MaskDecoder, token_masks_to_grid
from samkit.models.transformer import Attention, TwoWayAttentionBlock

# The first block's image-side projections (samkit.models.transformer.ImageCache's): (h,N,d), (h,N,d), (h,d,N).
FIRST_BLOCK = ("t2i_k", "t2i_v", "i2t_q")


@dataclass
class _Term:
    """One part of F G for a batch of B prompt sets: factor rows ft (B, k, N) (F transposed) and rows G made of
    fixed matrices: for an attention's A V, ``v @ m + b`` with v (B, h, k/h, d) the per-head value coefficients,
    m (h, d, C) the output projection's rows per head and b (C,) each head's share of its bias (m and b through
    the LayerNorms since); for a LayerNorm's bias (k = 1), v and m None and the row b (C,). ``key`` names where
    m and b came from (the same for every prompt and call: their products with weights are reused)."""

    ft: torch.Tensor
    v: torch.Tensor | None
    m: torch.Tensor | None
    b: torch.Tensor
    key: tuple[str, ...]

    def rows(self, m: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        """The rows ``v @ m + b`` (B, k, out) for this term's m and b or their products with a weight (h, d, out)
        and (out,): d multiply-adds per row and output instead of C."""
        if self.v is None or m is None:
            return b.expand(self.ft.shape[0], 1, -1)
        batch, h, _, d = self.v.shape  # the token count stays symbolic in an exported graph: -1 where it appears
        per_head = (self.v.transpose(0, 1).reshape(h, -1, d) @ m).view(h, batch, -1, m.shape[-1])
        return per_head.transpose(0, 1).flatten(1, 2) + b

    def normalised(self, s: torch.Tensor, gamma: torch.Tensor, name: str) -> _Term:
        """The term through a LayerNorm (``name``) with per-token scales s (B, N) and weight gamma (C,): factor rows
        scaled, rows centred and scaled."""
        m = None if self.m is None else (self.m - self.m.mean(-1, keepdim=True)) * gamma
        return _Term(ft=self.ft * s[:, None], v=self.v, m=m, b=(self.b - self.b.mean()) * gamma, key=(*self.key, name))


@dataclass
class _State:
    """Image tokens diag(c) S0 M + sum of the terms' F G (see the module docstring)."""

    c: torch.Tensor | None  # (B, N), None = ones
    terms: list[_Term]

    @functools.cached_property
    def ft(self) -> torch.Tensor | None:
        """F^T (B, r, N) of all terms, or None when there are none (made once: a state's terms do not change)."""
        return torch.cat([t.ft for t in self.terms], dim=1) if self.terms else None


@dataclass
class FactoredImage:
    """One image's :meth:`FactoredDecoder.precompute` tensors with the decoder that made them (what
    :meth:`samkit.models.sam.Sam.decode_confident` takes as its image cache for prompts without a mask)."""

    decoder: FactoredDecoder
    tensors: dict[str, torch.Tensor]


class FactoredDecoder(nn.Module):
    """A :class:`MaskDecoder` with a :class:`TwoWayTransformer`, run as per-image products plus low-rank
    per-click work. ``precompute(keys)`` (keys (N, C): embedding + dense prompt, token-major) -> named
    tensors (:meth:`image_names`); ``confident(image, sparse, outputs, min_iou)`` for a batch of prompt sets;
    ``click(image, sparse, grid)`` -> IoU (1, M+1), low-res logits of the
    first ``grid`` token rows x columns (1, M+1, 4 rows, 4 cols), the mask weights and the factors
    :meth:`rest` needs for the other tokens."""

    key_pe: torch.Tensor  # (N, C) buffer: the image tokens' positional encoding, token-major
    pe_products: torch.Tensor  # (k, h, d, N) buffer: _encoding_products()

    def __init__(self, decoder: MaskDecoder, image_pe: torch.Tensor) -> None:
        """image_pe (1, C, h, w): the dense positional encoding of the image tokens. The encoding's products
        with the decoder's weights are taken here, once: build a new FactoredDecoder after changing weights."""
        super().__init__()
        self.decoder = decoder
        self.transformer = decoder.two_way_transformer()
        self.grid = (int(image_pe.shape[2]), int(image_pe.shape[3]))
        self.tokens = self.grid[0] * self.grid[1]
        self.register_buffer("key_pe", image_pe.flatten(2)[0].t().contiguous(), persistent=False)  # (N, C)
        with torch.no_grad():  # constants of an exported click graph; products of 4096 x 256 x 128 each for ViTs
            self.register_buffer("pe_products", torch.stack(self._encoding_products()), persistent=False)
        # the terms' fixed matrices times weights, by (term key, weight name): the same for every call
        self._weight_products: dict[tuple[tuple[str, ...], str], tuple[torch.Tensor | None, torch.Tensor]] = {}

    # -- the fixed matrices -------------------------------------------------------------------------------

    def _layers(self) -> list[TwoWayAttentionBlock]:
        layers = list(self.transformer.layers)
        assert all(isinstance(layer, TwoWayAttentionBlock) for layer in layers)
        return layers  # type: ignore[return-value]

    def _plan(self) -> list[tuple[str, torch.Tensor | None]]:
        """The per-image work in order: (name, fixed (k, C) matrix or (C,) row) for a product of the image
        tokens as the next block reads them (S0 M: name k*, q*, v*, kf, vf, ct1) or centred (S0 M J: e*),
        ("n*", None) for the centred tokens' squared norms, then ("scale*", gamma) where a LayerNorm
        centres and scales M (M <- M J diag(gamma))."""
        c = self._layers()[0].norm4.normalized_shape[0]
        # the rows an attention's A V and a LayerNorm's bias are made of, through the same centring and scales
        dictionary: list[tuple[torch.Tensor | None, torch.Tensor]] = []  # (out_proj rows (hd, C) or None, row)
        out: list[tuple[str, torch.Tensor | None]] = []
        for j, layer in enumerate(self._layers()):
            if j:
                t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
                out += [(f"k{j}", t2i.k_proj.weight), (f"v{j}", t2i.v_proj.weight), (f"q{j}", i2t.q_proj.weight)]
            proj = layer.cross_attn_image_to_token.out_proj
            dictionary.append((proj.weight.t(), proj.bias))
            out.append((f"n{j}", None))
            for t, (rows, row) in enumerate(dictionary):
                if rows is not None:
                    out.append((f"e{j}_{t}", rows))
                out.append((f"e{j}_{t}b", row))
            gamma = layer.norm4.weight
            out.append((f"scale{j}", gamma))
            dictionary = [(None if rows is None else (rows - rows.mean(1, keepdim=True)) * gamma,
                           (row - row.mean()) * gamma) for rows, row in dictionary]
            dictionary.append((None, layer.norm4.bias))
        assert all(x is None or x.shape[-1] == c for _, x in out)
        final = self.transformer.final_attn_token_to_image
        w1, _ = self.decoder.upscale_first_weights()
        return [*out, ("kf", final.k_proj.weight), ("vf", final.v_proj.weight), ("ct1", w1)]

    def image_names(self) -> list[str]:
        """Names of :meth:`precompute`'s tensors, in order."""
        return [*FIRST_BLOCK, *(name for name, _ in self._plan() if not name.startswith("scale"))]

    # -- per image -----------------------------------------------------------------------------------------

    def precompute(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        """keys (N, C) -> per-image tensors (layouts chosen for the click's products: (h,d,N) for scores
        against few tokens, (h,N,d) for values, (N,) for norms and fixed rows, (N, 4*C/4) for ``ct1``)."""
        cache = self.transformer.precompute_tokens(keys[None], self.key_pe[None], self.grid)
        out = {name: getattr(cache, name) for name in FIRST_BLOCK}
        h = self._layers()[0].cross_attn_image_to_token.num_heads
        base = keys  # S0 M
        centred = base - base.mean(1, keepdim=True)  # S0 M J
        for name, matrix in self._plan():
            if name.startswith("scale"):
                assert matrix is not None
                base = centred * matrix
                centred = base - base.mean(1, keepdim=True)
            elif matrix is None:
                out[name] = centred.square().sum(1)
            elif matrix.dim() == 1:  # a (N, C) @ (C,) product exported as such came out wrong in onnxruntime
                out[name] = (centred @ matrix[:, None])[:, 0]
            else:
                x = (centred if name[0] == "e" else base) @ matrix.t()  # (N, k)
                if name[0] == "v":
                    out[name] = x.view(self.tokens, h, -1).transpose(0, 1).contiguous()  # (h, N, d)
                elif name == "ct1":
                    out[name] = x
                else:
                    out[name] = x.t().reshape(h, -1, self.tokens).contiguous()  # (h, d, N)
        return out

    # -- per click (a batch of B prompt sets) -------------------------------------------------------------

    @staticmethod
    def _heads(attn: Attention, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """(B, n, C) tokens through q/k/v projection -> (B, h, n, d)."""
        return proj(x).unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)

    def _rows(self, state: _State, w: torch.Tensor | None = None, name: str = "") -> torch.Tensor:
        """The state's rows G (B, r, C), or G W^T (B, r, out) for the weight w (out, C) called ``name``."""
        return torch.cat([t.rows(*self._fixed(t, w, name)) for t in state.terms], dim=1)

    def _fixed(self, term: _Term, w: torch.Tensor | None, name: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """A term's fixed m and b, or their products with the weight w (out, C) called ``name``, made once per
        decoder (an exported graph folds them into constants)."""
        if w is None:
            return term.m, term.b
        key = (term.key, name)
        if key in self._weight_products and not tracing():
            return self._weight_products[key]
        products = (None if term.m is None else term.m @ w.t(), term.b @ w.t())
        if not tracing():
            self._weight_products[key] = products
        return products

    def _weights_heads(self, attn: Attention, state: _State, proj: nn.Linear) -> torch.Tensor:
        """The state's rows G (B, r, C) through a projection's weight (no bias) -> (B, h, r, d)."""
        return self._rows(state, proj.weight, str(id(proj))).unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)

    @staticmethod
    def _image_product(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Per-head rows x (B, h, k, d) times a per-image product m (h, d, N) -> (h, B, k, N), as one batched
        product over the heads (a broadcast over B would copy m once per prompt set)."""
        b, h, _, d = x.shape  # k stays symbolic in an exported graph
        return (x.transpose(0, 1).reshape(h, -1, d) @ m).view(h, b, -1, m.shape[-1])

    def _tokens_to_image(self, attn: Attention, q: torch.Tensor, state: _State, keys: torch.Tensor,
                         key_pe: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Tokens q (B, n, C) attend to the image tokens (state + positional encoding, values the state):
        keys (h,d,N) per-image products, key_pe (h,d,N) the encoding's, values (h,N,d) -> (B, n, C)."""
        h = attn.num_heads
        d = attn.internal_dim // h
        b, big = q.shape[0], self.tokens  # the token count n stays symbolic: -1
        qh = self._heads(attn, q, attn.q_proj) * d**-0.5  # (B, h, n, d)
        scores = self._image_product(qh, keys)  # (h, B, n, N); k_proj's bias: softmax ignores it
        if state.c is not None:
            scores = scores * state.c[:, None]
        scores = scores + self._image_product(qh, key_pe)
        ft = state.ft
        if ft is not None:
            z = qh @ self._weights_heads(attn, state, attn.k_proj).transpose(2, 3)  # (B, h, n, r)
            scores = scores + (z.flatten(1, 2) @ ft).view(b, h, -1, big).transpose(0, 1)
        w = torch.softmax(scores, dim=-1)  # (h, B, n, N)
        out = ((w if state.c is None else w * state.c[:, None]).view(h, -1, big) @ values).view(h, b, -1, d)
        if ft is not None:
            wf = (w.transpose(0, 1).reshape(b, -1, big) @ ft.transpose(1, 2)).unflatten(1, (h, -1))  # (B,h,n,r)
            out = out + (wf @ self._weights_heads(attn, state, attn.v_proj)).transpose(0, 1)
        out = out + attn.v_proj.bias.view(h, 1, 1, d)  # each row's weights sum to 1
        return attn.out_proj(out.permute(1, 2, 0, 3).reshape(b, -1, h * d))

    def _image_to_tokens(self, attn: Attention, k: torch.Tensor, v: torch.Tensor, state: _State,
                         queries: torch.Tensor, query_pe: torch.Tensor | None, name: str) -> _Term:
        """The image tokens (state + encoding; per-image products ``queries`` (h,d,N), the encoding's plus
        q_proj's bias ``query_pe``) attend to tokens k (B, n, C), values v (B, n, C) -> the term A V they add
        (``name``: the attention's)."""
        h = attn.num_heads
        d = attn.internal_dim // h
        b, big = k.shape[0], self.tokens  # the token count n stays symbolic: -1
        kh = self._heads(attn, k, attn.k_proj) * d**-0.5  # (B, h, n, d)
        scores = self._image_product(kh, queries)  # (h, B, n, N)
        if state.c is not None:
            scores = scores * state.c[:, None]
        if query_pe is not None:
            scores = scores + self._image_product(kh, query_pe)
        ft = state.ft
        if ft is not None:
            z = kh @ self._weights_heads(attn, state, attn.q_proj).transpose(2, 3)  # (B, h, n, r)
            scores = scores + (z.flatten(1, 2) @ ft).view(b, h, -1, big).transpose(0, 1)
        if tracing():  # softmax over the tokens, written out: onnxruntime(-web) transposes for a middle axis
            e = torch.exp(scores - scores.amax(dim=2, keepdim=True))
            w = e / e.sum(dim=2, keepdim=True)
        else:
            w = torch.softmax(scores, dim=2)
        wo = attn.out_proj.weight.t().reshape(h, d, -1)  # (h, d, C)
        # each head's weights sum to 1: the bias splits into equal shares
        return _Term(ft=w.transpose(0, 1).reshape(b, -1, big), v=self._heads(attn, v, attn.v_proj), m=wo,
                     b=attn.out_proj.bias / h, key=(name,))

    def _norm(self, norm: nn.LayerNorm, j: int, state: _State, image: dict[str, torch.Tensor]) -> _State:
        """LayerNorm of the state (whose last term is the block's A V) -> the normalised state."""
        cross = []
        for t, term in enumerate(state.terms):
            e = image[f"e{j}_{t}b"]  # (N,)
            if term.v is not None:
                h = term.v.shape[1]
                e = self._image_product(term.v, image[f"e{j}_{t}"]).transpose(0, 1).flatten(1, 2) + e / h  # (B,k,N)
            cross.append((term.ft * e).sum(1))
        ft, g = state.ft, self._rows(state)
        assert ft is not None  # the block's A V at least
        gc = g - g.mean(2, keepdim=True)
        own = image[f"n{j}"]
        if state.c is not None:
            own = own * state.c.square()
        mixed = torch.stack(cross).sum(0)
        if state.c is not None:
            mixed = mixed * state.c
        low = ((gc @ gc.transpose(1, 2)) @ ft * ft).sum(1)
        var = (own + 2.0 * mixed + low).clamp(min=0.0) / norm.normalized_shape[0]
        s = torch.rsqrt(var + norm.eps)  # (B, N)
        terms = [t.normalised(s, norm.weight, f"norm{j}") for t in state.terms]
        terms.append(_Term(ft=torch.ones_like(s)[:, None], v=None, m=None, b=norm.bias, key=(f"norm{j}.bias",)))
        return _State(c=s if state.c is None else s * state.c, terms=terms)

    def _encoding_products(self) -> list[torch.Tensor]:
        """The positional encoding's products the clicks read, (h, d, N) each, fixed for the weights: per block
        after the first, through the token->image k_proj (no bias) and the image->token q_proj (plus its bias),
        then through the final attention's k_proj."""
        products = []

        def heads(x: torch.Tensor, attn: Attention) -> torch.Tensor:
            return x.t().reshape(attn.num_heads, -1, self.tokens)

        for layer in self._layers()[1:]:
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            products += [heads(self.key_pe @ t2i.k_proj.weight.t(), t2i),
                         heads(self.key_pe @ i2t.q_proj.weight.t() + i2t.q_proj.bias, i2t)]
        final = self.transformer.final_attn_token_to_image
        return [*products, heads(self.key_pe @ final.k_proj.weight.t(), final)]

    def transform(self, image: dict[str, torch.Tensor], sparse: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The two-way transformer for a batch of prompt sets: image (:meth:`precompute`), sparse (B, n, C) prompt
        embeddings -> output tokens hs (B, M+1, C) (IoU token, mask tokens) and the image tokens after the
        transformer as ``diag(row_scale) S0 M + factors^T G``: row_scale (B, N), factors (B, r, N), and G through the
        first transposed convolution's per-token Linear, ct1_factor (B, r, 4 C/4)."""
        dec, tr = self.decoder, self.transformer
        n_out = 1 + dec.num_mask_tokens
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        query_pe = torch.cat([output_tokens.expand(sparse.shape[0], -1, -1), sparse], dim=1)  # (B, T, C)
        queries = query_pe
        state = _State(c=None, terms=[])
        pe = iter(self.pe_products)
        for j, layer in enumerate(self._layers()):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + query_pe
                queries = queries + layer.self_attn(q, q, queries)
            queries = layer.norm1(queries)
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if j == 0:
                attended = t2i.attend_projected_keys(queries + query_pe, image["t2i_k"], image["t2i_v"])
            else:
                attended = self._tokens_to_image(t2i, queries + query_pe, state, image[f"k{j}"], next(pe),
                                                 image[f"v{j}"])
            queries = layer.norm2(queries + attended)
            queries = layer.norm3(queries + layer.mlp(queries))
            if j == 0:
                term = self._image_to_tokens(i2t, queries + query_pe, queries, state, image["i2t_q"], None, "i2t0")
            else:
                term = self._image_to_tokens(i2t, queries + query_pe, queries, state, image[f"q{j}"],
                                             next(pe), f"i2t{j}")
            state = self._norm(layer.norm4, j, _State(c=state.c, terms=[*state.terms, term]), image)
        final = tr.final_attn_token_to_image
        q = queries[:, :n_out]
        attended = self._tokens_to_image(final, q + query_pe[:, :n_out], state, image["kf"], next(pe),
                                         image["vf"])
        assert state.ft is not None and state.c is not None
        ct1_factor = self._rows(state, self.decoder.upscale_first_weights()[0], "ct1")
        return tr.norm_final_attn(q + attended), state.c, state.ft, ct1_factor

    def upscale(self, image: dict[str, torch.Tensor], row_scale: torch.Tensor, factors: torch.Tensor,
                ct1_factor: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor | tuple[int, int]
                ) -> torch.Tensor:
        """Low-res logits (B, K, 4 rows, 4 cols) of the first ``grid`` (rows, columns) of image tokens, from
        :meth:`transform`'s row_scale (B, N) and factors (B, r, N), ct1_factor (B, r, 4 C/4) (its G through the
        first transposed convolution) and mask weights (B, K, C/8) (the hypernetwork's, of the K masks wanted)."""
        _, b1 = self.decoder.upscale_first_weights()
        h, w = self.grid
        ct1 = image["ct1"].view(h, w, -1)[:grid[0], :grid[1]]  # traced as dynamic ends
        rows, cols = ct1.shape[0], ct1.shape[1]
        ct1 = ct1.reshape(rows * cols, -1)
        scale = row_scale.view(-1, h, w)[:, :grid[0], :grid[1]].reshape(row_scale.shape[0], -1, 1)
        kept = factors.view(factors.shape[0], -1, h, w)[:, :, :grid[0], :grid[1]].flatten(2).transpose(1, 2)
        # a few prompt sets at a time: one step's intermediates stay in cache (MaskDecoder.upscale_masks)
        per = max(1, UPSCALE_ROWS // (rows * cols))
        second = self.decoder.upscale_second_weights()
        steps = [self.decoder.upscale_rest(torch.baddbmm(torch.addcmul(b1, scale[i:i + per], ct1), kept[i:i + per],
                                                         ct1_factor[i:i + per]), weights[i:i + per], second)
                 for i in range(0, row_scale.shape[0], per)]
        return token_masks_to_grid(steps[0] if len(steps) == 1 else torch.cat(steps), rows, cols)

    def click(self, image: dict[str, torch.Tensor], sparse: torch.Tensor, grid: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image (:meth:`precompute`), sparse (1, n, C) prompt embeddings, grid (2,) token rows and columns
        to decode -> iou (1, M+1), low-res logits (1, M+1, 4 rows, 4 cols), row_scale (N,), factors (r, N),
        ct1_factor (r, 4 C/4), mask weights (1, M+1, C/8)."""
        hs, row_scale, factors, ct1_factor = self.transform(image, sparse)
        weights = self.decoder.hypernetwork(hs)
        low = self.upscale(image, row_scale, factors, ct1_factor, weights, grid)
        return self.decoder.iou_prediction_head(hs[:, 0]), low, row_scale[0], factors[0], ct1_factor[0], weights

    def confident(self, image: dict[str, torch.Tensor], sparse: torch.Tensor, outputs: slice, min_iou: float,
                  grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`samkit.models.mask_decoder.MaskDecoder.confident_masks` for a batch of prompt sets (B, n, C)
        without a mask prompt: the ``outputs`` masks whose predicted IoU is above ``min_iou``, and only those,
        as low-res logits (K, 4h, 4w) (``grid`` (rows, cols): of that top-left block of tokens only, (K, 4*rows,
        4*cols)), IoU (K,) and index (K, 2) = (prompt, output)."""
        hs, row_scale, factors, ct1_factor = self.transform(image, sparse)
        rows, cols = grid or self.grid
        return self.decoder.keep_confident(hs, outputs, min_iou, (4 * rows, 4 * cols), lambda p, weights: self.upscale(
            image, row_scale[p], factors[p], ct1_factor[p], weights, (rows, cols)))

    def rest(self, ct1: torch.Tensor, row_scale: torch.Tensor, factors: torch.Tensor, ct1_factor: torch.Tensor,
             weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Any image tokens' logits from :meth:`precompute`'s ``ct1`` and :meth:`click`'s outputs: index (n,)
        token numbers -> (1, n*16, M+1) as :meth:`MaskDecoder.upscale_tokens` gives them."""
        _, b1 = self.decoder.upscale_first_weights()
        y = row_scale[index, None] * ct1[index] + factors[:, index].t() @ ct1_factor + b1
        return self.decoder.upscale_rest(y[None], weights)

    def forward(self, keys: torch.Tensor, sparse: torch.Tensor, grid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """keys (N, C), sparse (1, n, C), grid (2,) -> iou (1, M+1), low-res logits (1, M+1, 4 rows, 4 cols)."""
        iou, low, *_ = self.click(self.precompute(keys), sparse, grid)
        return iou, low

