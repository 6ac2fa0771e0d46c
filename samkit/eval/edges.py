"""Zero-shot edge detection on BSDS500 (SAM paper, appendix D.2) and the BSDS boundary benchmark.

Edge map (:func:`detect_edges`):

1. a ``points_per_side`` x ``points_per_side`` grid of foreground points (cell centres, as SAM's
   automatic mask generator), three masks each (multimask) through ``predict_batch``; no
   filtering by predicted IoU or stability;
2. duplicates removed by greedy box NMS, the automatic mask generator's de-duplication: masks
   (logits > 0) sorted by predicted IoU, a mask dropped when the IoU of its tight box (pixel
   extents, inclusive) with a kept mask's box exceeds ``nms_iou`` (0.7); empty masks dropped;
3. per kept mask, the Sobel gradient magnitude (3x3) of its probability map sigmoid(logits);
   the pixel-wise max over masks, linearly normalised to [0, 1];
4. edge NMS (:func:`edge_nms`): a pixel is kept when it is >= the bilinearly interpolated map one
   pixel ahead and > the map one pixel behind along the edge normal (so a two-pixel plateau keeps
   one pixel); the normal comes from the Hessian of the Gaussian-smoothed map, as Dollár's
   ``edgeOrient`` / ``edgesNms`` (here its strongest-curvature eigenvector); values within 5 px of
   the image border are attenuated linearly as ``edgesNms(E, O, 1, 5, ...)`` does.
   SAM's extra step "zero the Sobel response where it does not meet a mask's outer boundary" is
   not implemented.

Benchmark (:func:`boundary_counts`, :func:`ods_ois`), following the BSDS500 ``bench`` code
(``evaluation_bdry_image`` / ``collect_eval_bdry``): for each threshold t, the binary map E >= t
is matched against every annotator's boundary map with a tolerance of ``max_dist`` (0.0075) times
the image diagonal; a detected pixel is correct when it matches in any annotator's map, recall
pools all annotators' pixels. ODS: the best F of the counts summed over images at one common
threshold; OIS: counts summed at each image's own best threshold.

Matching (:func:`match_boundaries`) optimises what BSDS's ``correspondPixels`` does: a one-to-one
matching of detected and ground-truth pixels closer than the tolerance, with as many pairs as
possible and, among those, the smallest total distance. ``correspondPixels`` solves it
approximately (CSA min-cost assignment on a sparse graph with outlier nodes at cost 100 x the
tolerance); here it is solved exactly, per connected component of the candidate-pair graph, with
scipy's dense ``linear_sum_assignment`` (a component spanning more than 4M detected x ground-truth
pixel pairs falls back to Hopcroft-Karp: maximum cardinality without the distance criterion).
Match counts are thus the maximum possible; which pixels get matched can differ from
``correspondPixels`` on ties, which can move precision with several annotators (a detected pixel
counts as correct when it is matched in any of them). Other differences from the official
benchmark: no ``bwmorph(..., 'thin')`` of the thresholded map (it is already one pixel wide after
edge NMS), and no interpolation between thresholds when picking ODS/OIS (99 thresholds, as BSDS).
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch

from samkit._optional import require
from samkit.data.readers import read_bsds_boundaries
from samkit.data.sample import Sample
from samkit.eval.protocol import BatchSegmenter
from samkit.eval.report import track
from samkit.predict.boxes import nms
from samkit.predict.everything import point_grid

BSDS_MAX_DIST = 0.0075


# -- edge map from a promptable segmenter ----------------------------------------------------
def grid_probabilities(predictor: BatchSegmenter, height: int, width: int, points_per_side: int = 16,
                       batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks for the point grid (image already set): probabilities (M, H, W) float16,
    boxes (M, 4) x0, y0, x1, y1 (inclusive pixels; -1 for an empty mask), scores (M,); M = 3 n^2.
    Holds all M maps: 2 * M * H * W bytes (237 MB for a BSDS image with the 16 x 16 grid)."""
    points = point_grid(points_per_side) * np.array([width, height], dtype=np.float64)  # (n*n, 2) pixels
    probs, boxes, scores = [], [], []
    for start in range(0, len(points), batch_size):
        pts = points[start:start + batch_size, None]
        out = predictor.predict_batch(points=pts, labels=np.ones(pts.shape[:2]), multimask=True)
        logits = np.asarray(out.logits, dtype=np.float32).reshape(-1, height, width)
        probs.append((0.5 + 0.5 * np.tanh(0.5 * logits)).astype(np.float16))  # sigmoid, overflow-free
        boxes.append(mask_boxes(logits > 0))
        scores.append(np.asarray(out.scores, dtype=np.float64).reshape(-1))
    return np.concatenate(probs), np.concatenate(boxes), np.concatenate(scores)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) bool -> (M, 4) x0, y0, x1, y1 of the pixels (inclusive); all -1 for an empty mask."""
    rows, cols = np.asarray(masks.any(axis=2)), np.asarray(masks.any(axis=1))
    empty = ~rows.any(axis=1)

    def first_last(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.argmax(a, axis=1), a.shape[1] - 1 - np.argmax(a[:, ::-1], axis=1)

    (y0, y1), (x0, x1) = first_last(rows), first_last(cols)
    boxes = np.stack([x0, y0, x1, y1], axis=1)
    boxes[empty] = -1
    return boxes


def sobel_max(probs: Iterable[np.ndarray]) -> np.ndarray:
    """Pixel-wise max over maps (H, W) of their 3x3 Sobel gradient magnitude: (H, W) float32."""
    edges = None
    for p in probs:
        p = np.asarray(p, dtype=np.float32)
        mag = cv2.magnitude(cv2.Sobel(p, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(p, cv2.CV_32F, 0, 1, ksize=3))
        edges = mag if edges is None else np.maximum(edges, mag)
    if edges is None:
        raise ValueError("no probability map given")
    return edges


def detect_edges(predictor: BatchSegmenter, image: np.ndarray, points_per_side: int = 16, nms_iou: float = 0.7,
                 batch_size: int = 64) -> np.ndarray:
    """SAM's zero-shot edge map of ``image`` (H, W, 3): (H, W) float32 in [0, 1], thinned by edge NMS."""
    h, w = image.shape[:2]
    predictor.set_image(image)
    probs, boxes, scores = grid_probabilities(predictor, h, w, points_per_side, batch_size)
    nonempty = np.flatnonzero(boxes[:, 0] >= 0)
    if nonempty.size == 0:
        return np.zeros((h, w), dtype=np.float32)
    # inclusive pixel boxes -> exclusive corners, so box areas count pixels
    corners = torch.from_numpy(boxes[nonempty] + np.array([0, 0, 1, 1]))
    keep = nonempty[nms(corners, torch.from_numpy(scores[nonempty]), nms_iou).numpy()]
    edges = sobel_max(probs[k] for k in keep)
    peak = float(edges.max())
    return edge_nms(edges / peak if peak > 0 else edges)


# -- edge thinning -----------------------------------------------------------------------------
def edge_orientation(edges: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """(H, W) angle in [0, pi) of the edge normal (0 = x axis, pi/2 = y axis): the eigenvector of
    the Hessian of the Gaussian-smoothed map with the eigenvalue of largest magnitude, i.e. the
    direction of strongest curvature: across a ridge on it (negative) and on its flanks (positive)."""
    e = cv2.GaussianBlur(np.asarray(edges, dtype=np.float32), (0, 0), sigma).astype(np.float64)
    dy, dx = np.gradient(e)
    dyy, dyx = np.gradient(dy)
    dxy, dxx = np.gradient(dx)
    upper = 0.5 * np.arctan2(dxy + dyx, dxx - dyy)  # eigenvector of the algebraically larger eigenvalue
    # |larger| >= |smaller| exactly when the trace is >= 0; otherwise take the perpendicular one.
    return np.mod(np.where(dxx + dyy >= 0, upper, upper + np.pi / 2), np.pi)


def edge_nms(edges: np.ndarray, orientation: np.ndarray | None = None, radius: int = 1,
             border: int = 5) -> np.ndarray:
    """Thin an edge map (H, W) to 1-px ridges: a pixel is kept when it is >= the map interpolated
    at d = 1..radius px ahead along the normal n = (cos o, sin o) (o in [0, pi)) and > the map d px
    behind (so a two-pixel plateau keeps exactly one pixel); the rest become 0. Within ``border``
    px of the image edge values are scaled by distance / border (the border row itself becomes 0).
    Returns (H, W) float32."""
    e = np.asarray(edges, dtype=np.float64)
    o = edge_orientation(e) if orientation is None else np.asarray(orientation, dtype=np.float64)
    c, s = np.round(np.cos(o), 12), np.round(np.sin(o), 12)
    ys, xs = np.indices(e.shape, dtype=np.float64)
    keep = np.ones(e.shape, dtype=bool)
    for d in range(1, radius + 1):
        keep &= e >= _bilinear(e, xs + d * c, ys + d * s)
        keep &= e > _bilinear(e, xs - d * c, ys - d * s)
    out = np.where(keep, e, 0.0)
    if border > 0:
        out *= _border_ramp(e.shape[0], border)[:, None] * _border_ramp(e.shape[1], border)[None, :]
    return out.astype(np.float32)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img (H, W) sampled at float coordinates x, y (H, W) bilinearly; 0 outside the image."""
    h, w = img.shape
    pad = np.pad(img, 1)
    x = np.clip(x + 1, 0, w + 1)
    y = np.clip(y + 1, 0, h + 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w)
    y0 = np.minimum(np.floor(y).astype(np.int64), h)
    fx, fy = x - x0, y - y0
    return ((pad[y0, x0] * (1 - fx) + pad[y0, x0 + 1] * fx) * (1 - fy)
            + (pad[y0 + 1, x0] * (1 - fx) + pad[y0 + 1, x0 + 1] * fx) * fy)


def _border_ramp(n: int, border: int) -> np.ndarray:
    i = np.arange(n)
    return np.minimum(np.minimum(i, n - 1 - i) / border, 1.0)


# -- boundary benchmark ------------------------------------------------------------------------
def load_boundaries(mat_path: str | os.PathLike) -> np.ndarray:
    """BSDS500 ground truth ``.mat`` -> (K, H, W) bool boundary maps, one per annotator
    (``groundTruth{k}.Boundaries``, read by the BSDS500 dataset reader)."""
    return read_bsds_boundaries(mat_path)


def sample_boundaries(sample: Sample) -> np.ndarray:
    """Human boundary maps (K, H, W) bool of a Sample: ``extra["boundaries"]``, else read from
    ``extra["mat_path"]`` (what :class:`samkit.data.readers.BSDS500Dataset` yields)."""
    if sample.extra.get("boundaries") is not None:
        return np.asarray(sample.extra["boundaries"], dtype=bool)
    if sample.extra.get("mat_path"):
        return load_boundaries(sample.extra["mat_path"])
    raise ValueError(f"{sample.name}: edge evaluation needs sample.extra['boundaries'] (K, H, W) "
                     "or extra['mat_path'] (a BSDS500 ground-truth file)")


def match_boundaries(pred: np.ndarray, gt: np.ndarray, max_dist_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of boundary pixels within ``max_dist_px`` (Euclidean, inclusive):
    maximum cardinality, then minimum total distance. pred, gt (H, W) bool -> (pred pixels matched
    (H, W) bool, gt pixels matched (H, W) bool)."""
    require("scipy", "eval", "boundary matching")
    from scipy.spatial import cKDTree

    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    matched_pred, matched_gt = np.zeros_like(pred), np.zeros_like(gt)
    p, g = np.argwhere(pred), np.argwhere(gt)
    if not len(p) or not len(g):
        return matched_pred, matched_gt
    pairs = cKDTree(p).sparse_distance_matrix(cKDTree(g), max_dist_px, output_type="ndarray")
    if not len(pairs):
        return matched_pred, matched_gt
    i, j = _match_pairs(pairs["i"], pairs["j"], pairs["v"], max_dist_px)
    matched_pred[tuple(p[i].T)] = True
    matched_gt[tuple(g[j].T)] = True
    return matched_pred, matched_gt


def _match_pairs(i: np.ndarray, j: np.ndarray, dist: np.ndarray, max_dist: float,
                 max_dense: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Optimal matching of the bipartite graph with edges (i[e], j[e]) of length dist[e] <= max_dist.

    Solved per connected component with a dense assignment (scipy ``linear_sum_assignment``) whose
    non-edges cost more than any sum of distances in the component, so the optimum is the maximum
    matching of minimum total distance. A component of more than ``max_dense`` pairs of pixels
    gets Hopcroft-Karp instead (maximum cardinality, distances ignored). Returns matched (i, j).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components, maximum_bipartite_matching

    ui, li = np.unique(i, return_inverse=True)
    uj, lj = np.unique(j, return_inverse=True)
    n, m = len(ui), len(uj)
    graph = coo_array((np.ones(len(li)), (li, n + lj)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    order = np.argsort(comp[li], kind="stable")
    splits = np.flatnonzero(np.diff(comp[li][order])) + 1
    out_i, out_j = [], []
    for edges in np.split(order, splits):
        ci, ri = np.unique(li[edges], return_inverse=True)
        cj, rj = np.unique(lj[edges], return_inverse=True)
        if len(ci) * len(cj) <= max_dense:
            big = max_dist * (min(len(ci), len(cj)) + 1) + 1.0
            cost = np.full((len(ci), len(cj)), big)
            cost[ri, rj] = dist[edges]
            a, b = linear_sum_assignment(cost)
            real = cost[a, b] < big
            a, b = a[real], b[real]
        else:
            sub = coo_array((np.ones(len(edges)), (ri, rj)), shape=(len(ci), len(cj))).tocsr()
            match = maximum_bipartite_matching(sub, perm_type="column")
            a = np.flatnonzero(match >= 0)
            b = match[a]
        out_i.append(ci[a])
        out_j.append(cj[b])
    return ui[np.concatenate(out_i)], uj[np.concatenate(out_j)]


def thresholds_for(thresholds: int | Sequence[float]) -> np.ndarray:
    """An int n -> BSDS's n thresholds linspace(1/(n+1), 1-1/(n+1), n); a sequence -> as given."""
    if isinstance(thresholds, (int, np.integer)):
        n = int(thresholds)
        return np.linspace(1.0 / (n + 1), 1.0 - 1.0 / (n + 1), n)
    return np.asarray(thresholds, dtype=np.float64)


def boundary_counts(edges: np.ndarray, boundaries: np.ndarray, thresholds: int | Sequence[float] = 99,
                    max_dist: float = BSDS_MAX_DIST) -> np.ndarray:
    """BSDS counts of one image: edges (H, W) in [0, 1], boundaries (K, H, W) bool (K annotators).

    Returns (T, 4) int: per threshold t (binary map edges >= t) the matched ground-truth pixels
    summed over annotators (cntR), all ground-truth pixels (sumR), detected pixels matched in at
    least one annotator (cntP) and all detected pixels (sumP). Tolerance: max_dist * diagonal."""
    boundaries = np.asarray(boundaries, dtype=bool).reshape(-1, *edges.shape)
    radius = max_dist * float(np.hypot(*edges.shape))
    sum_r = int(np.count_nonzero(boundaries))
    counts = []
    for t in thresholds_for(thresholds):
        bmap = edges >= t
        hit = np.zeros_like(bmap)
        cnt_r = 0
        for gt in boundaries:
            matched_pred, matched_gt = match_boundaries(bmap, gt, radius)
            hit |= matched_pred
            cnt_r += int(np.count_nonzero(matched_gt))
        counts.append([cnt_r, sum_r, int(np.count_nonzero(hit)), int(np.count_nonzero(bmap))])
    return np.array(counts, dtype=np.int64).reshape(-1, 4)


def precision_recall_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """counts (..., 4) [cntR, sumR, cntP, sumP] -> precision, recall, F (...), 0 where undefined (as BSDS)."""
    c = np.asarray(counts, dtype=np.float64)
    recall = c[..., 0] / np.where(c[..., 1] > 0, c[..., 1], 1)
    precision = c[..., 2] / np.where(c[..., 3] > 0, c[..., 3], 1)
    total = precision + recall
    return precision, recall, 2 * precision * recall / np.where(total > 0, total, 1)


def ods_ois(counts: np.ndarray, thresholds: int | Sequence[float] = 99) -> dict:
    """ODS, OIS and AP of counts (N images, T thresholds, 4) from :func:`boundary_counts`.

    ODS: best F of the counts summed over images, one threshold for all; OIS: F of the counts
    summed at each image's best-F threshold (the lowest threshold on ties; also for ODS); AP:
    :func:`average_precision` of the summed PR curve.
    """
    counts = np.asarray(counts, dtype=np.int64)
    thr = thresholds_for(thresholds)
    precision, recall, f = precision_recall_f(counts.sum(axis=0))
    best = int(np.argmax(f))
    per_image = np.argmax(precision_recall_f(counts)[2], axis=1)
    p_ois, r_ois, f_ois = precision_recall_f(counts[np.arange(len(counts)), per_image].sum(axis=0))
    return {
        "ods": {"f": float(f[best]), "precision": float(precision[best]), "recall": float(recall[best]),
                "threshold": float(thr[best])},
        "ois": {"f": float(f_ois), "precision": float(p_ois), "recall": float(r_ois)},
        "ap": average_precision(precision, recall),
        "pr_curve": {"thresholds": thr.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
                     "f": f.tolist()},
        "image_best_thresholds": thr[per_image].tolist(),
    }


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under a PR curve (T,), as the SE toolbox's ``edgesEvalDir``: precision interpolated
    linearly at recall 0, 0.01, ..., 1 within the curve's recall range (the highest precision of
    equal recalls), summed, divided by 100; 0 for fewer than two distinct recalls."""
    r_unique, inverse = np.unique(recall, return_inverse=True)
    if len(r_unique) < 2:
        return 0.0
    p_best = np.full(len(r_unique), -np.inf)
    np.maximum.at(p_best, inverse, precision)
    ap = np.interp(np.linspace(0, 1, 101), r_unique, p_best, left=np.nan, right=np.nan)
    return float(np.nansum(ap) / 100)


def evaluate(predictor: BatchSegmenter, samples: Iterable[Sample], points_per_side: int = 16,
             thresholds: int | Sequence[float] = 99, max_dist: float = BSDS_MAX_DIST,
             max_samples: int | None = None, progress: bool | str = False, nms_iou: float = 0.7) -> dict:
    """Zero-shot edge detection benchmark on Samples with human boundaries (:func:`sample_boundaries`:
    e.g. ``BSDS500Dataset(root, split="test")``). Returns a JSON-ready dict with ``ods``,
    ``ois`` ({f, precision, recall[, threshold]}), ``ap``, ``pr_curve`` and timings."""
    counts, names, seconds = [], [], []
    for sample in track(samples, max_samples, progress, "edges"):
        boundaries = sample_boundaries(sample)
        t0 = time.perf_counter()
        edges = detect_edges(predictor, sample.image, points_per_side, nms_iou)
        seconds.append(time.perf_counter() - t0)
        counts.append(boundary_counts(edges, boundaries, thresholds, max_dist))
        names.append(sample.name)
    result = {"protocol": "edges", "points_per_side": int(points_per_side), "max_dist": float(max_dist),
              "num_images": len(names), "images": names,
              "seconds_per_image": float(np.mean(seconds)) if seconds else None}
    if counts:
        result.update(ods_ois(np.stack(counts), thresholds))
    return result
