"""Simulated interactive sessions for training, after SAM's recipe (Kirillov et al. 2023, sec. 3 / A).

Round 0 gives each object either one foreground point drawn uniformly from the object or its
bounding box with Gaussian noise (std 10 % of the side, at most 20 px). Each correction round adds
one click drawn uniformly from the error region of the previous prediction (a false-negative pixel
gives a positive click, a false-positive one a negative click), and some rounds add no click at all,
only the previous mask logits fed back. Clicks are random on purpose: evaluation uses a
deterministic rule (the point farthest from the error boundary), training samples the whole region.

Everything is in the model's input frame: (x, y) = (column, row) pixel indices; masks (H,W) bool.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from samkit.eval.clicks import error_distance

PAD_LABEL = -1  # "not a point": keeps the point count equal across a batch


def sample_point(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A pixel (x, y) drawn uniformly from the (H,W) bool ``region``; None when it is empty."""
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return None
    y, x = divmod(int(idx[rng.integers(idx.size)]), region.shape[1])
    return x, y


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (4,) float64 x0,y0,x1,y1 (inclusive pixel indices) of a non-empty (H,W) mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask is empty: it has no box")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def noisy_box(mask: np.ndarray, rng: np.random.Generator, noise: float = 0.1, max_std: float = 20.0,
              max_sigmas: float = 3.0) -> np.ndarray:
    """``mask``'s box with each coordinate jittered by N(0, std), std = min(noise * side, max_std).

    The jitter is clipped to ``max_sigmas`` std and the box to the (H,W) frame; corners stay ordered.
    """
    box = mask_box(mask)
    w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
    std = np.minimum(noise * np.array([w, h, w, h]), max_std)
    jitter = np.clip(rng.standard_normal(4), -max_sigmas, max_sigmas) * std
    out = box + jitter
    out[[0, 2]] = np.clip(np.sort(out[[0, 2]]), 0, mask.shape[1] - 1)
    out[[1, 3]] = np.clip(np.sort(out[[1, 3]]), 0, mask.shape[0] - 1)
    return out


def correction_click(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None,
                     rng: np.random.Generator) -> tuple[int, int, int] | None:
    """A click (x, y, label) drawn uniformly from the valid error pixels of ``pred`` vs ``target`` (H,W).

    label 1 on a false negative (object missed), 0 on a false positive; None when there is no error.
    """
    error = pred != target
    if valid is not None:
        error &= valid
    point = sample_point(error, rng)
    if point is None:
        return None
    x, y = point
    return x, y, int(target[y, x])


def protocol_click(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None,
                   rng: np.random.Generator, min_frac: float = 0.5) -> tuple[int, int, int] | None:
    """A click (x, y, label) near the evaluation protocol's: in the larger error region (by its
    largest distance to the region boundary, as the RITM rule), drawn uniformly among the pixels whose
    distance is at least ``f`` times that maximum, ``f`` uniform in [min_frac, 1]. None when no error."""
    fn, fp = target & ~pred, pred & ~target
    if valid is not None:
        fn, fp = fn & valid, fp & valid
    fn_dt, fp_dt = error_distance(fn), error_distance(fp)
    fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
    if max(fn_max, fp_max) <= 0.0:
        return None
    positive = fn_max > fp_max
    dt, top = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
    point = sample_point(dt >= rng.uniform(min_frac, 1.0) * top, rng)
    assert point is not None  # the maximum itself qualifies
    return point[0], point[1], int(positive)


def round_schedule(num_clicks: int, num_mask_only: int, rng: np.random.Generator) -> list[bool]:
    """Correction rounds after the first prompt: True adds a click, False only feeds the mask back.

    As in SAM: one mask-only round at the end, the others at random places among the clicks.
    """
    rounds = [True] * num_clicks
    for _ in range(max(num_mask_only - 1, 0)):
        rounds.insert(int(rng.integers(len(rounds) + 1)), False)
    return rounds + [False] * min(num_mask_only, 1)


@dataclass
class Prompts:
    """A batch's prompts in the input frame: points (B,N,2) float32 x,y and labels (B,N) int64
    (1 foreground, 0 background, -1 padding) or None; boxes (B,4) float32 x0,y0,x1,y1 or None."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None

    @property
    def ambiguous(self) -> bool:
        """A single point and nothing else: the case SAM answers with 3 masks."""
        return self.boxes is None and self.points is not None and self.points.shape[1] == 1

    def add_clicks(self, clicks: Sequence[tuple[int, int, int] | None]) -> Prompts:
        """One new click per batch entry (None: a padding point). Returns a new Prompts."""
        pts = np.array([(c[0], c[1]) if c else (0, 0) for c in clicks], dtype=np.float32)[:, None]
        lab = np.array([c[2] if c else PAD_LABEL for c in clicks], dtype=np.int64)[:, None]
        if self.points is None:
            return Prompts(pts, lab, self.boxes)
        return Prompts(np.concatenate([self.points, pts], 1), np.concatenate([self.labels, lab], 1), self.boxes)

    def to_torch(self, device: torch.device | str) -> dict:
        """Keyword arguments ``points``/``boxes`` for :meth:`samkit.models.sam.Sam.decode`."""
        points = None
        if self.points is not None:
            points = (torch.from_numpy(self.points).to(device), torch.from_numpy(self.labels).to(device))
        boxes = None if self.boxes is None else torch.from_numpy(self.boxes).to(device)
        return {"points": points, "boxes": boxes}


def first_prompts(targets: np.ndarray, rng: np.random.Generator, box_prob: float = 0.5,
                  valid: np.ndarray | None = None, box_noise: float = 0.1, box_max_std: float = 20.0,
                  protocol_prob: float = 0.0) -> Prompts:
    """Round 0 for a batch of (B,H,W) non-empty targets: with probability ``box_prob`` noisy boxes for
    all entries, else one foreground point each, uniform over the (valid part of the) object, or (with
    probability ``protocol_prob`` per entry) a :func:`protocol_click` near the object's interior point."""
    if rng.random() < box_prob:
        boxes = np.stack([noisy_box(t, rng, box_noise, box_max_std) for t in targets]).astype(np.float32)
        return Prompts(boxes=boxes)
    clicks = []
    for i, t in enumerate(targets):
        region = t if valid is None or not (t & valid[i]).any() else t & valid[i]
        if protocol_prob > 0 and rng.random() < protocol_prob:
            click = protocol_click(np.zeros_like(region), region, None, rng)
            point = None if click is None else click[:2]
        else:
            point = sample_point(region, rng)
        if point is None:
            raise ValueError(f"target {i} is empty: cannot place a foreground point")
        clicks.append((point[0], point[1], 1))
    return Prompts().add_clicks(clicks)


def correction_clicks(preds: np.ndarray, targets: np.ndarray, valid: np.ndarray | None,
                      rng: np.random.Generator, protocol_prob: float = 0.0) -> list[tuple[int, int, int] | None]:
    """A correction click for each entry of (B,H,W) predictions / targets / valid: uniform over the
    error (:func:`correction_click`), or with probability ``protocol_prob`` a :func:`protocol_click`."""
    clicks = []
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        v = None if valid is None else valid[i]
        pick = protocol_click if protocol_prob > 0 and rng.random() < protocol_prob else correction_click
        clicks.append(pick(p, t, v, rng))
    return clicks
