"""SAM's ViT image encoder: patch embedding, windowed/global blocks with decomposed relative
positions, and a neck down to a 256-channel 64x64 embedding."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from samkit.models.common import LayerNorm2d, MLPBlock, linear, tracing


def relative_positions(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather (q_size, k_size, C) embeddings from a (L, C) table of relative offsets.

    The table is linearly resized when it was trained for another resolution.
    """
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        rel_pos = F.interpolate(rel_pos.T[None], size=max_dist, mode="linear")[0].T
    q = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    idx = (q - k) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[idx.long()]


def decomposed_rel_pos(rq: torch.Tensor, rh: torch.Tensor, rw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (B,n,h,w,d) against relative positions rh (h,h,d) and rw (w,w,d): the row term (B,n,h,w,h) and
    the column term (B,n,h,w,w) of the attention logits (einsum ``bnhwd,hkd->bnhwk`` and ``bnhwd,wkd->bnhwk``).

    Written as batched matrix products (batch = the query's row, resp. column) rather than ``einsum``: the
    same arithmetic, but onnxruntime runs an exported Einsum of these shapes about 7x slower than MatMul."""
    b, n, h, w, d = rq.shape
    rows = torch.matmul(rq.permute(2, 0, 1, 3, 4).reshape(h, b * n * w, d), rh.transpose(1, 2))  # (h, B*n*w, h)
    cols = torch.matmul(rq.permute(3, 0, 1, 2, 4).reshape(w, b * n * h, d), rw.transpose(1, 2))  # (w, B*n*h, w)
    return (rows.view(h, b, n, w, h).permute(1, 2, 0, 3, 4),
            cols.view(w, b, n, h, w).permute(1, 2, 3, 0, 4))


class Attention(nn.Module):
    """Multi-head self-attention over a (B,H,W,C) grid with decomposed relative positions.

    The relative-position term is an additive bias built for a band of query rows at a time, at most
    :attr:`mask_bytes` per band (bounded memory for global attention). When no gradient is needed, every band
    is built in one reused buffer that becomes the band's logits in place (explicit softmax attention);
    otherwise, and under export, it is ``scaled_dot_product_attention``'s mask.
    """

    # 32 MB is glibc's largest mmap threshold (samkit.runtime.tune_allocator): a band's mask below it comes
    # from the heap, reused, where a fresh mapping pays a page fault per 4 KB (sam_vit_b's encoder: 8.2 s
    # with 201 MB bands built by a broadcast add that also had to be copied to be flattened; 6.0 s with
    # these bands, before its linear layers moved to oneDNN).
    mask_bytes: int = 32 * 2**20

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int], qkv_bias: bool = True,
                 use_rel_pos: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,H,W,C) -> (B,H,W,C)."""
        b, h, w, c = x.shape
        qkv = linear(self.qkv, x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            rh = relative_positions(h, h, self.rel_pos_h).to(q.dtype)  # (h, h, d)
            rw = relative_positions(w, w, self.rel_pos_w).to(q.dtype)  # (w, w, d)
            rel_h, rel_w = decomposed_rel_pos(q.reshape(b, self.num_heads, h, w, -1), rh, rw)
            # Queries in bands of rows, so the (rows*w, h*w) bias never exists for the whole grid at once.
            rows = max(1, min(h, self.mask_bytes // (b * self.num_heads * w * h * w * q.element_size())))
            reuse = not (torch.is_grad_enabled() and q.requires_grad) and not tracing()  # out=: no autograd, no export
            bands = []
            if reuse:
                # Each band's bias becomes its logits in place in one reused buffer (one GEMM adds q k^T / sqrt(d)
                # to it), then softmax and the product with v: the reference's explicit form, which this CPU runs
                # faster than scaled_dot_product_attention with a mask (sam_vit_b's encoder: README, *ONNX, int8*).
                bh, d = b * self.num_heads, q.shape[-1]
                buffer = q.new_empty(bh * rows * w * h * w)
                qs, kt, vs = q.reshape(bh, h * w, d), k.transpose(-2, -1).reshape(bh, d, h * w), v.reshape(bh, h * w, d)
                for r in range(0, h, rows):
                    n = min(rows, h - r)
                    logits = buffer[:bh * n * w * h * w].view(b, self.num_heads, n, w, h, w)
                    torch.add(rel_h[:, :, r:r + n, :, :, None], rel_w[:, :, r:r + n, :, None, :], out=logits)
                    logits = logits.view(bh, n * w, h * w).baddbmm_(qs[:, r * w:(r + n) * w], kt, alpha=d**-0.5)
                    bands.append(torch.bmm(logits.softmax(-1), vs).view(b, self.num_heads, n * w, d))
            else:
                for r in range(0, h, rows):
                    mask = (rel_h[:, :, r:r + rows, :, :, None] + rel_w[:, :, r:r + rows, :, None, :]).contiguous()
                    bands.append(F.scaled_dot_product_attention(q[:, :, r * w:(r + rows) * w], k, v,
                                                                attn_mask=mask.flatten(-2).flatten(2, 3)))
            out = torch.cat(bands, dim=2)
        return linear(self.proj, out.transpose(1, 2).reshape(b, h, w, c))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B,H,W,C) -> (B*nW, window, window, C), zero-padding H and W up to multiples of ``window``."""
    b, h, w, c = x.shape
    ph, pw = (window - h % window) % window, (window - w % window) % window
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*nW, window, window, C) -> (B,H,W,C)."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous() if (hp, wp) != (h, w) else x


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when ``window_size > 0``. (B,H,W,C) -> same."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        size = (window_size, window_size) if window_size > 0 else grid_size
        self.attn = Attention(dim, num_heads, input_size=size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU, onednn=True)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """(B,3,H,W) -> (B,H/p,W/p,D) with a strided convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM's ViT backbone. (B,3,img_size,img_size) normalised -> (B,out_chans,img_size/16,img_size/16)."""

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256,
                 window_size: int = 14, global_attn_indexes: Sequence[int] = (2, 5, 8, 11)) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, (grid, grid))
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def set_input_size(self, img_size: int) -> None:
        """Take (B,3,img_size,img_size) inputs: the position embedding (stored for the frame it was built
        with) is resized (bicubic) to the patch grid in :meth:`forward`; the weights are unchanged."""
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        pos: torch.Tensor = self.pos_embed
        if pos.shape[1:3] != x.shape[1:3]:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic",
                                align_corners=False).permute(0, 2, 3, 1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
