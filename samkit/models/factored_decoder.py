"""The mask decoder's click as low-rank updates of per-image products (the browser's decoder graphs).

In SAM's two-way transformer the image tokens (N, C) change only by attending to the few prompt tokens:
after block j they are ``LayerNorm(X + A V)`` with attention weights A (N, heads * tokens) and values V
(heads * tokens, C). Unrolled, the image tokens after any block are

    X = diag(c) S0 M + F G

with S0 the image's own tokens (embedding + dense prompt), M a fixed (C, C) matrix (the LayerNorms' centring
and scales), c (N,) a per-token scale, and F (N, r), G (r, C) of rank r = 1 + heads * tokens per block. So
every product of the image tokens with a weight matrix W splits into S0 (M W^T), computed once per image,
and F (G W^T), of rank r, per click; a LayerNorm's variance needs S0's products with the fixed directions
G is built from (the attention's output projection), also once per image. A sam_vit_b click on a 481 x 321
photo costs ~400 M multiply-adds against ~690 M for the direct computation, the per-image work ~1.75 G
against ~0.40 G (``bench/decoder_macs.py``); the results are the same function (equal up to float rounding).

:class:`FactoredDecoder` has :meth:`~FactoredDecoder.precompute` (per image: named tensors) and
:meth:`~FactoredDecoder.click` (per prompt set, batch 1), both traceable for ONNX export.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from samkit.models.mask_decoder import MaskDecoder, token_masks_to_grid
from samkit.models.transformer import Attention, TwoWayAttentionBlock

# The first block's image-side projections (samkit.models.transformer.ImageCache's): (h,N,d), (h,N,d), (h,d,N).
FIRST_BLOCK = ("t2i_k", "t2i_v", "i2t_q")


@dataclass
class _Term:
    """One part of F G: factor rows ft (k, N) (F transposed), rows g (k, C), and for an attention's values
    the per-head coefficients v (h, k/h, d) of the output projection's rows (None for a fixed row)."""

    ft: torch.Tensor
    g: torch.Tensor
    v: torch.Tensor | None


@dataclass
class _State:
    """Image tokens diag(c) S0 M + sum of the terms' F G (see the module docstring)."""

    c: torch.Tensor | None  # (N,), None = ones
    terms: list[_Term]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(F^T (r, N), G (r, C)) of all terms, or None when there are none."""
        if not self.terms:
            return None
        return torch.cat([t.ft for t in self.terms]), torch.cat([t.g for t in self.terms])


class FactoredDecoder(nn.Module):
    """A :class:`MaskDecoder` with a :class:`TwoWayTransformer`, run as per-image products plus low-rank
    per-click work. ``precompute(keys)`` (keys (N, C): embedding + dense prompt, token-major) -> named
    tensors (:meth:`image_names`); ``click(image, sparse, grid)`` -> IoU (1, M+1), low-res logits of the
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

    # -- per click -----------------------------------------------------------------------------------------

    @staticmethod
    def _heads(attn: Attention, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """(n, C) tokens through q/k/v projection -> (h, n, d)."""
        return proj(x).view(-1, attn.num_heads, attn.internal_dim // attn.num_heads).transpose(0, 1)

    @staticmethod
    def _weights_heads(attn: Attention, g: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """Factor rows g (r, C) through a projection's weight (no bias) -> (h, r, d)."""
        h = attn.num_heads
        return (g @ proj.weight.t()).view(-1, h, attn.internal_dim // h).transpose(0, 1)

    def _tokens_to_image(self, attn: Attention, q: torch.Tensor, state: _State, keys: torch.Tensor,
                         key_pe: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Tokens q (n, C) attend to the image tokens (state + positional encoding, values the state):
        keys (h,d,N) per-image products, key_pe (h,d,N) the encoding's, values (h,N,d) -> (n, C)."""
        h = attn.num_heads
        d = attn.internal_dim // h
        qh = self._heads(attn, q, attn.q_proj) * d**-0.5  # (h, n, d)
        base = keys if state.c is None else state.c * keys
        scores = qh @ (base + key_pe)  # (h, n, N); k_proj's bias shifts each row by a constant: softmax ignores it
        factors = state.factors()
        if factors is not None:
            ft, g = factors
            z = qh @ self._weights_heads(attn, g, attn.k_proj).transpose(1, 2)  # (h, n, r)
            scores = scores + z @ ft
        w = torch.softmax(scores, dim=-1)
        out = (w if state.c is None else w * state.c) @ values  # (h, n, d)
        if factors is not None:
            ft, g = factors
            wf = w @ ft.t()  # (h, n, r)
            out = out + wf @ self._weights_heads(attn, g, attn.v_proj)
        out = out + attn.v_proj.bias.view(h, 1, d)  # each row's weights sum to 1
        return attn.out_proj(out.transpose(0, 1).reshape(-1, attn.internal_dim))

    def _image_to_tokens(self, attn: Attention, k: torch.Tensor, v: torch.Tensor, state: _State,
                         queries: torch.Tensor, query_pe: torch.Tensor | None) -> _Term:
        """The image tokens (state + encoding; per-image products ``queries`` (h,d,N), the encoding's plus
        q_proj's bias ``query_pe``) attend to tokens k (n, C), values v (n, C) -> the term A V they add."""
        h = attn.num_heads
        d = attn.internal_dim // h
        kh = self._heads(attn, k, attn.k_proj) * d**-0.5  # (h, n, d)
        base = queries if state.c is None else state.c * queries
        scores = kh @ (base if query_pe is None else base + query_pe)  # (h, n, N)
        factors = state.factors()
        if factors is not None:
            ft, g = factors
            z = kh @ self._weights_heads(attn, g, attn.q_proj).transpose(1, 2)  # (h, n, r)
            scores = scores + z @ ft
        # softmax over the tokens, written out: onnxruntime(-web) transposes for a softmax over a middle axis
        e = torch.exp(scores - scores.amax(dim=1, keepdim=True))
        w = e / e.sum(dim=1, keepdim=True)
        vh = self._heads(attn, v, attn.v_proj)  # (h, n, d)
        wo = attn.out_proj.weight.t().reshape(h, d, -1)  # (h, d, C)
        g = (vh @ wo + attn.out_proj.bias / h).reshape(-1, wo.shape[2])  # each head's weights sum to 1
        return _Term(ft=w.reshape(-1, self.tokens), g=g, v=vh)

    def _norm(self, norm: nn.LayerNorm, j: int, state: _State, image: dict[str, torch.Tensor]) -> _State:
        """LayerNorm of the state (whose last term is the block's A V) -> the normalised state."""
        cross = []
        for t, term in enumerate(state.terms):
            e = image[f"e{j}_{t}b"]  # (N,)
            if term.v is not None:
                h = term.v.shape[0]
                e = (term.v @ image[f"e{j}_{t}"]).reshape(-1, self.tokens) + e / h  # (k, N)
            cross.append((term.ft * e).sum(0))
        factors = state.factors()
        assert factors is not None  # the block's A V at least
        ft, g = factors
        gc = g - g.mean(1, keepdim=True)
        own = image[f"n{j}"]
        if state.c is not None:
            own = own * state.c.square()
        mixed = torch.stack(cross).sum(0)
        if state.c is not None:
            mixed = mixed * state.c
        low = ((gc @ gc.t()) @ ft * ft).sum(0)
        var = (own + 2.0 * mixed + low).clamp(min=0.0) / norm.normalized_shape[0]
        s = torch.rsqrt(var + norm.eps)
        terms = [_Term(ft=t.ft * s, g=(t.g - t.g.mean(1, keepdim=True)) * norm.weight, v=t.v) for t in state.terms]
        terms.append(_Term(ft=torch.ones_like(s)[None], g=norm.bias[None], v=None))
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

    def click(self, image: dict[str, torch.Tensor], sparse: torch.Tensor, grid: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image (:meth:`precompute`), sparse (1, n, C) prompt embeddings, grid (2,) token rows and columns
        to decode -> iou (1, M+1), low-res logits (1, M+1, 4 rows, 4 cols), row_scale (N,), factors (r, N),
        ct1_factor (r, 4 C/4), mask weights (1, M+1, C/8)."""
        dec, tr = self.decoder, self.transformer
        n_out = 1 + dec.num_mask_tokens
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        query_pe = torch.cat([output_tokens, sparse[0]], dim=0)  # (T, C)
        queries = query_pe
        state = _State(c=None, terms=[])
        pe = iter(self.pe_products)
        for j, layer in enumerate(self._layers()):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries[None], queries[None], queries[None])[0]
            else:
                q = queries + query_pe
                queries = queries + layer.self_attn(q[None], q[None], queries[None])[0]
            queries = layer.norm1(queries)
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if j == 0:
                attended = t2i.attend_projected_keys((queries + query_pe)[None], image["t2i_k"], image["t2i_v"])[0]
            else:
                attended = self._tokens_to_image(t2i, queries + query_pe, state, image[f"k{j}"], next(pe),
                                                 image[f"v{j}"])
            queries = layer.norm2(queries + attended)
            queries = layer.norm3(queries + layer.mlp(queries))
            if j == 0:
                term = self._image_to_tokens(i2t, queries + query_pe, queries, state, image["i2t_q"], None)
            else:
                term = self._image_to_tokens(i2t, queries + query_pe, queries, state, image[f"q{j}"],
                                             next(pe))
            state = self._norm(layer.norm4, j, _State(c=state.c, terms=[*state.terms, term]), image)
        final = tr.final_attn_token_to_image
        q = queries[:n_out]
        attended = self._tokens_to_image(final, q + query_pe[:n_out], state, image["kf"], next(pe),
                                         image["vf"])
        hs = tr.norm_final_attn(q + attended)[None]  # (1, M+1, C)
        weights = dec.hypernetwork(hs)
        factors = state.factors()
        assert factors is not None and state.c is not None
        ft, g = factors
        w1, b1 = dec.upscale_first_weights()
        ct1_factor = g @ w1.t()  # (r, 4 C/4)
        h, w = self.grid
        ct1 = image["ct1"].view(h, w, -1)[:grid[0], :grid[1]]  # traced as dynamic ends
        rows, cols = ct1.shape[0], ct1.shape[1]
        scale = state.c.view(h, w)[:grid[0], :grid[1]].reshape(-1, 1)
        kept = ft.view(-1, h, w)[:, :grid[0], :grid[1]].reshape(ft.shape[0], -1)
        y = scale * ct1.reshape(rows * cols, -1) + kept.t() @ ct1_factor + b1
        low = token_masks_to_grid(dec.upscale_rest(y[None], weights), rows, cols)
        return dec.iou_prediction_head(hs[:, 0]), low, state.c, ft, ct1_factor, weights

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

