"""Geometry shared by every SAM-family model: resize-longest-side, normalisation, padding,
prompt coordinate mapping and logit upsampling back to the original image.

All coordinates are (x, y) pixels. ``original_size`` and ``input_size`` are (H, W).
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

_T = TypeVar("_T")


def operator_cache(build: Callable[..., _T]) -> functools._lru_cache_wrapper[_T]:
    """``functools.lru_cache`` (16 entries) for the constant operators of a geometry, built outside
    ``torch.inference_mode`` even when first asked for inside it (a click): an inference tensor cannot be saved
    for backward, so a later differentiable call in the same process (training, export) could not use it."""
    @functools.wraps(build)
    def outside_inference_mode(*args: Any, **kwargs: Any) -> _T:
        with torch.inference_mode(False):
            return build(*args, **kwargs)
    return functools.lru_cache(maxsize=16)(outside_inference_mode)


# SAM's ImageNet statistics in 0..255 RGB.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) after scaling so that the longer side is ``long_side`` (SAM's rounding)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image(image: np.ndarray, long_side: int) -> np.ndarray:
    """HxWx3 uint8 -> hxwx3 uint8 with the longer side ``long_side`` (PIL bilinear)."""
    h, w = resized_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def preprocess(image: np.ndarray, img_size: int = 1024) -> tuple[torch.Tensor, tuple[int, int]]:
    """HxWx3 uint8 RGB -> (1,3,img_size,img_size) float32 normalised, zero-padded; plus input (h, w)."""
    resized = resize_image(image, img_size)
    x = torch.from_numpy(np.array(resized, copy=True)).permute(2, 0, 1).float()
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    x = (x - mean) / std
    h, w = x.shape[-2:]
    x = torch.nn.functional.pad(x, (0, img_size - w, 0, img_size - h))
    return x.unsqueeze(0), (int(h), int(w))


def scale_coords(coords: np.ndarray, original_size: tuple[int, int], img_size: int = 1024) -> np.ndarray:
    """(..., 2) x,y in original pixels -> model input pixels (float64 copy)."""
    h, w = original_size
    new_h, new_w = resized_shape(h, w, img_size)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= new_w / w
    out[..., 1] *= new_h / h
    return out


def scale_boxes(boxes: np.ndarray, original_size: tuple[int, int], img_size: int = 1024) -> np.ndarray:
    """(..., 4) x0,y0,x1,y1 in original pixels -> model input pixels."""
    b = np.asarray(boxes, dtype=np.float64)
    return scale_coords(b.reshape(*b.shape[:-1], 2, 2), original_size, img_size).reshape(b.shape)


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out_size, in_size) matrix equal to 1-D bilinear resize with align_corners=False."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, None)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    return m


@operator_cache
def _resize_operators(out_size: tuple[int, int], in_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(_bilinear_matrix(o, i).astype(np.float32))  # type: ignore[return-value]
                 for o, i in zip(out_size, in_size, strict=True))


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) -> (..., H, W): ``F.interpolate(mode="bilinear", align_corners=False)`` without
    antialiasing, as two matrix products (rows first, on the small input, then columns: no batched product).
    For small feature maps with few channels (a refiner's coarse features brought to its work frame: 8
    channels, 18x24 -> 144x192) it is faster on this CPU than the interpolation; differentiable; float32."""
    rows, cols = _resize_operators((int(size[0]), int(size[1])), (int(x.shape[-2]), int(x.shape[-1])))
    lead, (h, w), (H, W) = x.shape[:-2], x.shape[-2:], (rows.shape[0], cols.shape[0])
    n = math.prod(lead)
    y = rows.to(x.device) @ x.reshape(n, h, w).transpose(0, 1).reshape(h, n * w)  # rows resized: (H, n*w)
    y = y.view(H, n, w).transpose(0, 1).reshape(n * H, w)
    return (y @ cols.to(x.device).T).view(*lead, H, W)


@operator_cache
def upsample_operators(
    original_size: tuple[int, int], input_size: tuple[int, int], low_res: int = 256, img_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable linear maps (H x low_res, W x low_res) that reproduce SAM's post-processing.

    SAM upsamples low-res logits bilinearly to ``img_size``, crops the un-padded ``input_size``
    region and upsamples bilinearly again to ``original_size``. Each step is linear and separable,
    so the whole chain is ``rows @ logits @ cols.T``: two small matmuls instead of a 1024x1024
    intermediate. Same arithmetic as the reference up to float rounding.
    """
    mats = []
    for orig, inp in zip(original_size, input_size, strict=False):
        up = _bilinear_matrix(img_size, low_res)[:inp]  # low_res -> padded input, cropped
        down = _bilinear_matrix(orig, inp)  # cropped input -> original
        mats.append(torch.from_numpy((down @ up).astype(np.float32)))
    return mats[0], mats[1]


def low_res_cells_read(out_len: int, inp_len: int, low_res: int, img_size: int) -> int:
    """How many leading low-res cells along one axis :func:`upsample_operators`' chain reads (taps of
    zero weight included) for an output of ``out_len`` from the first ``inp_len`` input-frame cells: the
    rest of the low-res grid is padding no output pixel reads. Both steps are monotonic, so the last
    output index reads the farthest cell."""
    src = max(0.0, (out_len - 0.5) * (inp_len / out_len) - 0.5)
    r1 = min(math.floor(src) + 1, inp_len - 1)  # the farther input-frame cell of the last output
    src = max(0.0, (r1 + 0.5) * (low_res / img_size) - 0.5)
    return min(math.floor(src) + 1, low_res - 1) + 1


def upscale_grid(original_size: tuple[int, int], input_size: tuple[int, int], low_res: int, img_size: int,
                 grid: int) -> tuple[int, int]:
    """Rows and columns of image tokens (of a ``grid`` x ``grid`` embedding) whose low-res logits the
    upsampling to ``original_size`` reads: the decoder's upscaling chain can skip the others (each token
    becomes ``low_res / grid`` x ``low_res / grid`` logits of its own)."""
    cell = low_res // grid
    return tuple(min(grid, -(-low_res_cells_read(o, i, low_res, img_size) // cell))  # type: ignore[return-value]
                 for o, i in zip(original_size, input_size, strict=True))


@operator_cache
def _banded_operators(
    original_size: tuple[int, int], input_size: tuple[int, int], low_res: int, img_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`upsample_operators` as sparse CSR matrices, trimmed to the low-res rows/columns they read.

    Each output pixel mixes at most 3 low-res values per axis and the padding rows/columns of the
    low-res grid are never read, so the sparse products do a small fraction of the dense work.
    """
    mats = []
    for m in upsample_operators(original_size, input_size, low_res, img_size):
        used = int(m.abs().sum(0).nonzero().max()) + 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            mats.append(m[:, :used].contiguous().to_sparse_csr())
    return mats[0], mats[1]


@dataclass(frozen=True)
class SupportBlocks:
    """Where each full-resolution pixel of :func:`postprocess_logits` reads the low-res grid, per axis.

    Output rows (and columns) are grouped into consecutive blocks; ``rows[k]`` holds the low-res
    indices block k reads (``width`` of them, the last repeated when fewer), ``row_counts[k]`` its
    number of output rows; the same for columns. Every output pixel is a convex combination of the
    low-res values in its (row block x column block) window, so it lies between their min and max.
    """

    rows: torch.Tensor  # (Nr, width) long
    row_counts: torch.Tensor  # (Nr,) long
    cols: torch.Tensor  # (Nc, width) long
    col_counts: torch.Tensor  # (Nc,) long
    row_span: np.ndarray  # (H, 2) first and last low-res row each output row reads
    col_span: np.ndarray  # (W, 2) the same for columns


def _axis_blocks(span: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, 2) first/last low-res index each output index reads -> block windows (N, width) and their
    output counts (N,): consecutive output indices grouped while their reads fit in ``width`` values
    (``width`` must be at least what one output index reads)."""
    first, last = span[:, 0], span[:, 1]
    windows, counts = [], []
    start = 0
    while start < len(first):
        lo, hi, end = first[start], last[start], start + 1
        while end < len(first) and max(hi, last[end]) - min(lo, first[end]) < width:
            lo, hi, end = min(lo, first[end]), max(hi, last[end]), end + 1
        windows.append(np.minimum(np.arange(lo, lo + width), hi))
        counts.append(end - start)
        start = end
    return torch.from_numpy(np.stack(windows)).long(), torch.tensor(counts, dtype=torch.long)


@operator_cache
def support_blocks(
    original_size: tuple[int, int], input_size: tuple[int, int], low_res: int, img_size: int, width: int = 4
) -> SupportBlocks | None:
    """:class:`SupportBlocks` of SAM's post-processing for this geometry, windows of ``width`` low-res
    values (more where one pixel reads more); None if the operator is not a convex combination.
    Larger ``width`` = fewer, coarser blocks."""
    ops = upsample_operators(original_size, input_size, low_res, img_size)
    if any(bool((m < 0).any()) for m in ops):
        return None
    spans = []
    for m in ops:
        nz = (m != 0).numpy()
        spans.append(np.stack([nz.argmax(axis=1), m.shape[1] - 1 - nz[:, ::-1].argmax(axis=1)], axis=1))
        width = max(width, int((spans[-1][:, 1] - spans[-1][:, 0]).max()) + 1)  # values one index reads
    (rows, row_counts), (cols, col_counts) = (_axis_blocks(span, width) for span in spans)
    return SupportBlocks(rows, row_counts, cols, col_counts, spans[0], spans[1])


def postprocess_logits(
    low_res_logits: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int], img_size: int = 1024
) -> torch.Tensor:
    """(..., 256, 256) low-res logits -> (..., H, W) float32 logits at original resolution."""
    rows, cols = _banded_operators(tuple(original_size), tuple(input_size), low_res_logits.shape[-1], img_size)
    (h, r), (w, c) = rows.shape, cols.shape
    lead = low_res_logits.shape[:-2]
    n = math.prod(lead)
    if n == 0:
        return low_res_logits.new_empty((*lead, h, w), dtype=torch.float32)
    rows, cols = rows.to(low_res_logits.device), cols.to(low_res_logits.device)
    x = low_res_logits[..., :r, :c].float().reshape(n * r, c)
    y = (cols @ x.T).T.contiguous()  # columns resized: (n*r, W)
    out = y.new_empty((n, h, w))
    for i in range(n):  # rows resized, each mask straight into its (H, W) place: no (H, n, W) -> (n, H, W) copy
        torch.mm(rows, y[i * r:(i + 1) * r], out=out[i])
    return out.view(*lead, h, w)


def mask_to_low_res_logits(
    mask: np.ndarray, img_size: int = 1024, low_res: int = 256, magnitude: float = 20.0
) -> np.ndarray:
    """(H, W) binary mask at original resolution -> (1, low_res, low_res) float32 mask-input logits.

    The mask goes through the image's geometry: resized (bilinear) so its longer side is
    ``img_size``, zero-padded to ``img_size`` x ``img_size`` (padding is background) and
    area-downsampled to ``low_res``. A low-res cell whose foreground fraction is f gets the logit
    ``magnitude * (2f - 1)``: +magnitude inside, -magnitude outside, about 0 on the boundary.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D (H, W) array, got shape {m.shape}")
    h, w = resized_shape(m.shape[0], m.shape[1], img_size)
    fg = Image.fromarray(m.astype(bool).astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR)
    padded = np.zeros((img_size, img_size), dtype=np.float32)
    padded[:h, :w] = np.clip(np.asarray(fg), 0.0, 1.0)
    low = np.asarray(Image.fromarray(padded).resize((low_res, low_res), Image.Resampling.BOX))
    return (magnitude * (2.0 * low - 1.0)).astype(np.float32)[None]
