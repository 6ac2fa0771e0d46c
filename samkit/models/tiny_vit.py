"""TinyViT image encoder of MobileSAM (the TinyViT-5M layout with a SAM neck).

Data flow for a (B,3,1024,1024) input with the default configuration::

    patch_embed   (B,3,1024,1024) -> (B,64,256,256)     two stride-2 conv-BN
    layers[0]     (B,64,256,256)  -> (B,128,128,128)    MBConv blocks + PatchMerging (stride 2)
    layers[1]     (B,128,128,128) -> (B,160,64,64)      windowed attention (7) + PatchMerging (stride 2)
    layers[2]     (B,160,64,64)   -> (B,320,64,64)      windowed attention (14) + PatchMerging (stride 1)
    layers[3]     (B,320,64,64)   -> (B,320,64,64)      windowed attention (7)
    neck          (B,320,64,64)   -> (B,256,64,64)

The parameter names follow the released ``mobile_sam.pt`` checkpoint (``image_encoder.*``), so
that checkpoint loads with ``strict=True``. Every stage maps NCHW to NCHW; attention stages work
on (B,H,W,C) internally.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from samkit.models.common import LayerNorm2d

__all__ = [
    "Attention",
    "BasicLayer",
    "Conv2d_BN",
    "ConvLayer",
    "DropPath",
    "MBConv",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "TinyViT",
    "TinyViTBlock",
    "window_partition",
    "window_unpartition",
]


class DropPath(nn.Module):
    """Stochastic depth: drops whole samples of a residual branch while training. Shape-preserving."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class Conv2d_BN(nn.Module):  # noqa: N801 - name kept from the checkpoint layout
    """Bias-free Conv2d followed by BatchNorm2d (keys ``c`` and ``bn``). (B,Cin,H,W) -> (B,Cout,H',W')."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv weight and bias with the eval-mode BatchNorm folded in (differentiable)."""
        bn = self.bn
        assert bn.running_var is not None and bn.running_mean is not None  # track_running_stats (the default)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.c.weight * scale.view(-1, 1, 1, 1)
        return weight, bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.bn.running_var is None:
            return self.bn(self.c(x))
        # Eval: one convolution with BatchNorm folded in, saving a full pass over the activations.
        weight, bias = self.fused_weight_bias()
        c = self.c
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 conv-BN with GELU between them. (B,Cin,H,W) -> (B,D,H/4,W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, dim: int, expand_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1x1 conv, strided 3x3 depthwise conv, 1x1 conv (GELU between). (B,C,H,W) -> (B,C',H/s,W/s).

    MobileSAM keeps the resolution (``stride=1``) when merging into the last stage.
    """

    def __init__(self, dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvLayer(nn.Module):
    """First stage: ``depth`` MBConv blocks, then an optional PatchMerging. (B,C,H,W) -> (B,C',H',W')."""

    def __init__(self, dim: int, depth: int, expand_ratio: float = 4.0,
                 drop_path: float | Sequence[float] = 0.0, downsample: nn.Module | None = None) -> None:
        super().__init__()
        rates = _rates(drop_path, depth)
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio, rates[i]) for i in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear (dropout after each Linear). (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


def bias_index(height: int, width: int) -> torch.Tensor:
    """(N,N) long, N=height*width: index of the offset (|dy|,|dx|) between two window positions.

    Offsets are numbered ``|dy| * width + |dx|``, the order in which a row-major scan first meets
    them, which is how the released ``attention_biases`` tables are laid out.
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * width + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Multi-head self-attention with a learned bias per head and relative offset.

    (B,N,C) -> (B,N,C) with N = resolution[0]*resolution[1] (one window per batch entry).
    The biases, gathered to (1,heads,N,N), enter ``scaled_dot_product_attention`` as an additive mask;
    in eval mode without autograd the gathered bias is cached until the parameter changes.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float = 1.0,
                 resolution: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.d))
        self.proj = nn.Linear(self.dh, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", bias_index(*resolution), persistent=False)
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None

    attention_bias_idxs: torch.Tensor  # (N, N) long buffer: index into attention_biases per query/key pair

    def attention_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(1, heads, N, N) additive bias in ``dtype``; cached when no gradient can flow into it.

        4-D (not (heads,N,N)) so that CPU SDPA takes its fused kernel instead of the math fallback.
        """
        params = self.attention_biases
        if self.training or (torch.is_grad_enabled() and params.requires_grad):
            return params[:, self.attention_bias_idxs].to(dtype).unsqueeze(0)
        key = (params._version, params.data_ptr(), params.device, dtype, self.attention_bias_idxs.data_ptr())
        if self._bias_cache is None or self._bias_cache[0] != key:
            # Build it as an ordinary tensor even under inference_mode, so it stays usable outside.
            with torch.inference_mode(False), torch.no_grad():
                bias = params[:, self.attention_bias_idxs].to(dtype).unsqueeze(0).contiguous()
            self._bias_cache = (key, bias)
        return self._bias_cache[1]

    def train(self, mode: bool = True) -> Attention:
        self._bias_cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=-1)  # (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attention_bias(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.dh))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B,H,W,C) -> (B*nWin, window*window, C), zero-padding H, W up to multiples of ``window``.

    Also returns the padded (H, W).
    """
    b, h, w, c = x.shape
    pad_b, pad_r = (-h) % window, (-w) % window
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*nWin, window*window, C) -> (B,H,W,C), padding removed."""
    hp, wp = padded
    h, w = size
    c = windows.shape[-1]
    x = windows.view(-1, hp // window, wp // window, window, window, c).transpose(2, 3)
    x = x.reshape(-1, hp, wp, c)
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


class TinyViTBlock(nn.Module):
    """Windowed attention (residual) -> 3x3 depthwise conv-BN -> MLP (residual). (B,H,W,C) -> (B,H,W,C).

    Padding tokens of partial windows are zeros and take part in attention, as in the original.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float = 0.0, local_conv_size: int = 3) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, attn_ratio=1.0,
                              resolution=(window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)
        self.drop_path = _drop_path(drop_path)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B,H,W,C) -> (B,H,W,C): attention inside each window, all windows in one batch."""
        size = (int(x.shape[1]), int(x.shape[2]))
        windows, padded = window_partition(x, self.window_size)
        return window_unpartition(self.attn(windows), self.window_size, padded, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))


class BasicLayer(nn.Module):
    """Attention stage: ``depth`` TinyViT blocks, then an optional PatchMerging.

    (B,C,H,W) -> (B,C',H',W'); the blocks run on a (B,H,W,C) view.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float | Sequence[float] = 0.0, local_conv_size: int = 3,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        rates = _rates(drop_path, depth)
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, drop, rates[i], local_conv_size)
            for i in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


def _rates(drop_path: float | Sequence[float], depth: int) -> list[float]:
    if isinstance(drop_path, (int, float)):
        return [float(drop_path)] * depth
    rates = [float(r) for r in drop_path]
    if len(rates) != depth:
        raise ValueError(f"expected {depth} drop-path rates, got {len(rates)}")
    return rates


class TinyViT(nn.Module):
    """MobileSAM image encoder. (B,3,img_size,img_size), normalised and padded -> (B,256,img_size/16,img_size/16).

    ``head`` and ``norm_head`` (an ImageNet classifier) are kept only because the released
    checkpoint holds them; ``forward`` does not use them.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        num_classes: int = 1000,
        out_chans: int = 256,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == n) or n < 2:
            raise ValueError("embed_dims, depths, num_heads and window_sizes need one entry per stage (>= 2)")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])

        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i in range(n):
            rates = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            downsample = None
            if i < n - 1:
                # MobileSAM: the merge into the last stage keeps the resolution (stride 1).
                stride = 1 if i == n - 2 else 2
                downsample = PatchMerging(embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                layer: nn.Module = ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, rates, downsample)
            else:
                layer = BasicLayer(embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio,
                                   drop_rate, rates, local_conv_size, downsample)
            self.layers.append(layer)

        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def set_input_size(self, img_size: int) -> None:
        """Take (B,3,img_size,img_size) inputs. Nothing here depends on the frame (convolutions, windowed
        attention with padding), so only ``img_size`` is recorded."""
        self.img_size = img_size

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,out_chans,H/16,W/16) image embedding."""
        # channels_last makes the CPU convolutions several times faster, and lets the attention
        # stages view the activations as (B,H,W,C) without a copy.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x).contiguous()
