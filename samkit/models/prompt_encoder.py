"""SAM's prompt encoder: points, boxes and a low-res mask become sparse and dense embeddings."""
from __future__ import annotations

import math

import torch
from torch import nn

from samkit.models.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding of (x, y) coordinates in [0, 1]."""

    positional_encoding_gaussian_matrix: torch.Tensor  # (2, num_pos_feats) buffer

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) in [0,1] -> (..., 2*num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an (h, w) grid of cell centres -> (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) x,y pixel coordinates in an (H, W) image -> (B, N, C)."""
        coords = coords.clone().float()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords)


def prompt_batch(points: tuple[torch.Tensor, torch.Tensor] | None, *others: torch.Tensor | None) -> int:
    """Batch size B of a prompt set: the first dimension of the first given of the points' (B,N,2)
    coordinates and ``others`` ((B, ...) boxes, masks, ...); 1 when none is given."""
    return next((t.shape[0] for t in (points[0] if points else None, *others) if t is not None), 1)


class PromptEncoder(nn.Module):
    """Encodes prompts for :class:`~samkit.models.mask_decoder.MaskDecoder`.

    Sparse output (B, N, embed_dim) for points/boxes (and any extra tokens); dense output
    (B, embed_dim, h, w) from a (B,1,4h,4w) mask or the learned no-mask embedding.
    """

    def __init__(self, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (1024, 1024), mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2/3: box corners.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, embed_dim, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B,N,2) input-frame pixels, (B,N) labels in {-1,0,1} -> (B, N(+1), C)."""
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight.expand_as(emb), emb)
        emb = emb + torch.where(labels == 0, self.point_embedding(0), 0.0)
        emb = emb + torch.where(labels == 1, self.point_embedding(1), 0.0)
        return emb

    def point_embedding(self, kind: int) -> torch.Tensor:
        """(1, C) learned embedding of a point kind: 0 background, 1 foreground, 2/3 box corners."""
        emb = self.point_embeddings[kind]
        assert isinstance(emb, nn.Embedding)
        return emb.weight

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B,4) x0,y0,x1,y1 input-frame pixels -> (B,2,C) corner embeddings."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        return torch.stack(
            [emb[:, 0] + self.point_embedding(2)[0], emb[:, 1] + self.point_embedding(3)[0]], dim=1
        )

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse (B,N,C) and dense (B,C,h,w) embeddings; B from whichever prompt is given."""
        bs = prompt_batch(points, boxes, masks)
        sparse = [torch.empty((bs, 0, self.embed_dim), device=self.no_mask_embed.weight.device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_emb = torch.cat(sparse, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_emb, dense
