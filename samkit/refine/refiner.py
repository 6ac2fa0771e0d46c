"""SAM-REF (arXiv 2408.11535) behind a frozen SAM: the global stage, the dynamic selector and the local
stage, with the image-only work cached per image.

Per image (:meth:`SamRefiner.set_image`): the image normalised at full resolution and the global stage's
:class:`~samkit.refine.global_refiner.ImageBranch` features (image + SAM embedding) in the work frame.
Per click (:meth:`SamRefiner.refine`): click disks and SAM's logits enter the global stage's
:class:`~samkit.refine.global_refiner.PromptFusion`; its error map blends its answer with SAM's (at the
image's resolution, or in the work frame and upsampled once: ``blend_frame``); the selector decides whether
the local stage refines the largest error region at full resolution.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samkit.errors import CheckpointError, SamkitError
from samkit.models.evf_sam import EvfSam
from samkit.models.sam import Sam
from samkit.predict.threads import thread_budget
from samkit.predict.transforms import PIXEL_MEAN, PIXEL_STD, postprocess_logits, resized_shape
from samkit.refine.click_maps import DiskCanvas, click_maps, scale_points
from samkit.refine.config import RefinerConfig
from samkit.refine.crops import Box, crop_box, crop_resize, paste
from samkit.refine.global_refiner import GlobalRefiner, ImageFeatures, blend_up
from samkit.refine.layers import blend, squash_logits
from samkit.refine.local_refiner import LocalRefiner
from samkit.refine.selector import DynamicSelector


@dataclass
class ImageState:
    """What :meth:`SamRefiner.set_image` caches: ``image`` (1,3,H,W) normalised at full resolution,
    ``features`` in the work frame (h, w); ``input_size``: the image's part of SAM's padded input frame;
    ``disks``: the click disks in the work frame, drawn as the clicks come (and the click floor's bounds)."""

    image: torch.Tensor
    features: ImageFeatures
    original_size: tuple[int, int]
    work_size: tuple[int, int]
    input_size: tuple[int, int]
    disks: DiskCanvas


def normalise(image: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 RGB -> (1,3,H,W) float32 with SAM's pixel statistics."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    return ((x - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1))[None]


def prompt_maps(points: torch.Tensor | None, labels: torch.Tensor | None, logits: torch.Tensor,
                radius: float, disks: torch.Tensor | None = None) -> torch.Tensor:
    """A refiner's prompt input (B,3,h,w): click disks (points (B,N,2) in the logits' frame, labels (B,N);
    or ``disks`` (1 or B,2,h,w) already drawn) and squashed logits (B,1,h,w)."""
    if disks is None:
        disks = click_maps(points, labels, (logits.shape[-2], logits.shape[-1]), radius, batch=logits.shape[0])
    disks = disks.to(logits)
    if disks.shape[0] != logits.shape[0]:
        disks = disks.expand(logits.shape[0], -1, -1, -1)
    return torch.cat([disks, squash_logits(logits)], dim=1)


def local_inputs(image: torch.Tensor, logits: torch.Tensor, box: Box, points: torch.Tensor | None,
                 labels: torch.Tensor | None, cfg: RefinerConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The local stage's inputs for one crop: image (1,3,H,W), logits (H,W), points (1,N,2) x,y and labels
    (1,N) in the same frame -> image crop (1,3,S,S), prompt maps (1,3,S,S) and the crop's logits (1,1,S,S)
    (the base the local answer is blended with), S = ``crop_size``."""
    x0, y0, x1, y1 = box
    s = cfg.crop_size
    crop_logits = crop_resize(logits[None, None], box, s)
    crop_points = None
    if points is not None:
        shifted = points - torch.tensor([x0, y0], dtype=points.dtype)
        crop_points = scale_points(shifted, (y1 - y0, x1 - x0), (s, s))
    maps = prompt_maps(crop_points, labels, crop_logits, cfg.click_radius)
    return crop_resize(image, box, s), maps, crop_logits


class SamRefiner(nn.Module):
    """The refiner of one SAM model (``cfg.sam_arch`` / ``embed_dim`` / ``sam_img_size``).

    >>> ref.set_image(rgb, embedding)                     # once per image: (H,W,3) uint8, (1,E,g,g)
    >>> logits = ref.refine(low_res, points, labels)      # per click: SAM's (C,s,s) -> (C,H,W)
    """

    file_metadata: dict[str, str]  # the refiner file's metadata (set by samkit.refine.file.load_refiner)

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.global_refiner = GlobalRefiner(cfg)
        self.local_refiner = LocalRefiner(cfg)
        self.selector = DynamicSelector(cfg.threshold, cfg.selector)
        self.use_global = cfg.use_global
        self.state: ImageState | None = None
        self.last_local: list[bool] = []  # whether the local stage ran, per mask of the last refine()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_model(self, model: Sam | EvfSam) -> None:
        """Raise CheckpointError when ``model`` is not the kind of SAM this refiner was trained behind
        (embedding size, input frame); warn when only the architecture name differs."""
        cfg = self.cfg
        embed_dim = model.prompt_encoder.embed_dim
        if embed_dim != cfg.embed_dim or model.img_size != cfg.sam_img_size:
            raise CheckpointError(
                f"the refiner was trained for {cfg.sam_arch} (embedding {cfg.embed_dim}, input frame "
                f"{cfg.sam_img_size}), not {getattr(model, 'arch', '?')} (embedding {embed_dim}, input frame "
                f"{model.img_size})")
        if getattr(model, "arch", cfg.sam_arch) != cfg.sam_arch:
            warnings.warn(f"the refiner was trained behind {cfg.sam_arch}, the model is {model.arch}", stacklevel=2)

    # -- per image --------------------------------------------------------------------------------
    @torch.inference_mode()
    def set_image(self, image: np.ndarray, embedding: torch.Tensor) -> None:
        """Cache the image-only work: ``image`` (H,W,3) uint8 RGB, ``embedding`` (1,E,g,g) SAM's for it."""
        cfg = self.cfg
        grid = cfg.sam_img_size // 16
        if tuple(embedding.shape) != (1, cfg.embed_dim, grid, grid):
            raise SamkitError(f"image embedding of shape {tuple(embedding.shape)}: the refiner expects "
                              f"(1, {cfg.embed_dim}, {grid}, {grid}) from {cfg.sam_arch}")
        H, W = int(image.shape[0]), int(image.shape[1])
        ih, iw = resized_shape(H, W, cfg.sam_img_size)
        full = normalise(image).to(self.device)
        work_size = resized_shape(H, W, cfg.work_size)
        work = F.interpolate(full, size=work_size, mode="bilinear", align_corners=False, antialias=True)
        features = self.global_refiner.image_branch(work, embedding.to(self.device, torch.float32),
                                                    (ih / cfg.sam_img_size, iw / cfg.sam_img_size))
        disks = DiskCanvas(work_size, cfg.click_radius, cfg.click_floor)
        self.state = ImageState(full, features, (H, W), work_size, (ih, iw), disks)

    def reset_image(self) -> None:
        self.state = None

    def _image_state(self) -> ImageState:
        if self.state is None:
            raise SamkitError("the refiner has no image: call set_image(), or load_embedding(..., image=...)")
        return self.state

    # -- per click --------------------------------------------------------------------------------
    def click_rows(self, masks: int) -> int:
        """The size of the global stage's network for ``masks`` masks in :func:`samkit.runtime.default_threads`'
        unit: the positions its 3x3 layers run over per mask (the trunk's grid, and the work frame with
        ``fine_mix``). Below ``SMALL_CALL_ROWS`` (samkit_tiny_ref's 24x18 grid, one mask) it runs on one
        thread when OpenMP threads sleep at once, as samkit_tiny's decoder call does: its small matrix products
        lose more to waking the second thread than they gain (a refined click 11.3-11.5 instead of 11.8-12.2 ms
        here, passive waiting)."""
        h, w = self._image_state().work_size
        s = self.cfg.trunk_stride
        return masks * (-(-h // s) * -(-w // s) + (h * w if self.cfg.fine_mix else 0))

    @torch.inference_mode()
    def refine(self, low_res: torch.Tensor, points: np.ndarray | None = None,
               labels: np.ndarray | None = None, threads: int | None = None) -> torch.Tensor:
        """SAM's low-res logits (C,s,s) over its padded input frame (s = ``sam_img_size`` / 4), the clicks so
        far (points (N,2) x,y original pixels, labels (N,) 1/0) -> refined logits (C,H,W) float32 on the CPU
        at the image's resolution (where SAM's own would be ``Predictor.upscale(low_res)``). ``threads``: a
        fixed thread count for the global stage's network (the predictor's ``threads``); None: by its size
        (:meth:`click_rows`)."""
        st = self.state
        if st is None:
            raise SamkitError("the refiner has no image: call set_image(), or load_embedding(..., image=...)")
        s = self.cfg.sam_img_size // 4
        if low_res.dim() != 3 or tuple(low_res.shape[-2:]) != (s, s):
            raise SamkitError(f"low-res logits of shape {tuple(low_res.shape)}: the refiner expects (C, {s}, {s}) "
                              f"from {self.cfg.sam_arch}")
        low_res = low_res.to(self.device, torch.float32)
        pts = lab = None
        if points is not None and len(points):
            pts = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(1, -1, 2).to(self.device)
            lab = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(1, -1).to(self.device)
        out, work_out, error_prob = self._global(low_res, pts, lab, selecting=self.selector.mode != "never",
                                                 threads=threads)
        if work_out is None or error_prob is None:  # selector "never"
            self.last_local = [False] * out.shape[0]
            return out.cpu()
        self.last_local = [self.selector(error_prob[c], work_out[c] > 0) for c in range(out.shape[0])]
        if any(self.last_local):
            out = torch.stack([self._local(out[c], error_prob[c], pts, lab) if run else out[c]
                               for c, run in enumerate(self.last_local)])
        return out.cpu()

    def _global(self, low_res: torch.Tensor, pts: torch.Tensor | None, lab: torch.Tensor | None,
                selecting: bool = True, threads: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Global stage: SAM's (C,s,s) low-res logits -> blended logits (C,H,W), and what the selector and the
        local stage read: the same logits in the work frame (C,h,w) and error probabilities (C,h,w) (without
        the global stage: SAM's own uncertainty, 1 - |2p - 1|); those two are None when not ``selecting``."""
        st, cfg = self._image_state(), self.cfg
        by_work = cfg.blend_frame == "work"
        full = None if by_work else postprocess_logits(low_res, st.original_size, st.input_size, cfg.sam_img_size)
        if full is None:
            work_logits = postprocess_logits(low_res, st.work_size, st.input_size, cfg.sam_img_size)[:, None]
        else:
            work_logits = F.interpolate(full[:, None], size=st.work_size, mode="bilinear", align_corners=False)
        if not self.use_global:
            out = self._upsample(work_logits) if full is None else full
            if not selecting:
                return out, None, None
            p = torch.sigmoid(work_logits[:, 0])
            return out, work_logits[:, 0] if full is None else _mask_in(full, st.work_size), 1 - (2 * p - 1).abs()
        work_pts = None if pts is None else scale_points(pts, st.original_size, st.work_size)
        disks = st.disks.draw(work_pts, lab)
        maps = prompt_maps(work_pts, lab, work_logits, cfg.click_radius, disks)
        with thread_budget(threads, rows=self.click_rows(low_res.shape[0])):
            own, err = self.global_refiner.fusion(st.features.expand(low_res.shape[0]), maps)
        work_out: torch.Tensor | None = None
        if full is None:
            blended = st.disks.hold(blend(work_logits, own, err))
            out, work_out = self._upsample(blended), blended[:, 0]
        else:
            out = blend_up(full[:, None], own, err)[:, 0]
        if not selecting:
            return out, None, None
        return out, _mask_in(out, st.work_size) if work_out is None else work_out, torch.sigmoid(err[:, 0])

    def _upsample(self, work_logits: torch.Tensor) -> torch.Tensor:
        """(C,1,h,w) work-frame logits -> (C,H,W) at the image's resolution (bilinear)."""
        size = self._image_state().original_size
        return F.interpolate(work_logits, size=size, mode="bilinear", align_corners=False)[:, 0]

    def _local(self, logits: torch.Tensor, error_prob: torch.Tensor, pts: torch.Tensor | None,
               lab: torch.Tensor | None) -> torch.Tensor:
        """Local stage on one mask: (H,W) logits -> (H,W), around the largest error region (or the last click)."""
        cfg, st = self.cfg, self._image_state()
        last = None if pts is None else (float(pts[0, -1, 0]), float(pts[0, -1, 1]))
        box = crop_box((error_prob > 0.5).cpu().numpy(), st.original_size, last, cfg.min_crop, cfg.crop_margin)
        if box is None:
            return logits
        image, maps, base = local_inputs(st.image, logits, box, pts, lab, cfg)
        ref, err = self.local_refiner(image, maps)
        return paste(logits, (blend(base, ref, err) - base)[0, 0], box, cfg.feather)


def _mask_in(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C,H,W) logits -> (C,h,w) logits in the work frame (nearest): what the selector measures the mask by."""
    return F.interpolate(logits[:, None], size=tuple(size), mode="nearest")[:, 0]
