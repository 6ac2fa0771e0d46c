"""The refiner's hyper-parameters and the SAM it was trained behind, as stored in a refiner file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from samkit.errors import CheckpointError
from samkit.models.build_sam import SAMKIT_TINY_SIZE

SELECTOR_MODES = ("dynamic", "always", "never")
BLEND_FRAMES = ("image", "work")
# settings that change where and how often the refiner looks, not the shapes of its weights
RUN_TIME_FIELDS = ("work_size", "crop_size", "min_crop", "crop_margin", "feather", "threshold", "selector",
                   "use_global", "blend_frame", "click_floor")


@dataclass(frozen=True)
class RefinerConfig:
    """SAM-REF refiner settings (arXiv 2408.11535): a Global Fusion Refiner at ``work_size`` (longer side),
    a Local Fusion Refiner on ``crop_size`` square crops, and the Dynamic Selector's error-ratio ``threshold``.

    ``sam_arch`` / ``embed_dim`` / ``sam_img_size``: the frozen SAM whose embedding and logits it reads.
    ``selector`` and ``use_global`` are run-time switches (ablations): "dynamic" runs the local stage when
    the error ratio exceeds ``threshold``, "always" / "never" on every click / not at all.

    Cost: ``blocks`` residual blocks (0 or more) in the global trunk; ``head_hidden`` False drops the global head's
    hidden layer (one pass over the work frame fewer); ``trunk_stride`` (4 or 8) is the global trunk's frame
    relative to the work frame; ``fine_mix`` adds a 3x3 convolution at the full work frame before the head (without
    it the work-frame layers are per pixel, run as matrix products); ``blend_frame`` "image" blends the global
    answer with SAM's logits at the image's resolution (three full-resolution passes), "work" blends in the work
    frame from SAM's low-res logits and upsamples the result once, in place of SAM's own upsampling.
    ``click_floor`` (> 0, with ``blend_frame`` "work"): within each click's disk the answer is held to at least
    +click_floor logits at a positive and at most -click_floor at a negative click, so a clicked pixel always
    ends on the side it was clicked for; 0 leaves the network's answer as it is.
    """

    sam_arch: str = "samkit_tiny"
    embed_dim: int = 256
    sam_img_size: int = SAMKIT_TINY_SIZE
    work_size: int = 256
    channels: int = 32  # the global trunk's width (1/4 of the work frame)
    fine_channels: int = 16  # the global head's width (full work frame)
    embed_channels: int = 32
    blocks: int = 3
    head_hidden: bool = True  # the global head's hidden 1x1 layer at the work frame
    trunk_stride: int = 4
    fine_mix: bool = True
    click_radius: float = 3.0  # disk radius, in pixels of the frame the clicks are drawn in
    crop_size: int = 128
    local_channels: int = 24
    local_blocks: int = 3
    min_crop: int = 64  # smallest crop side, in original-image pixels
    crop_margin: float = 0.25  # the error region's box grows by this fraction of its side
    feather: int = 6  # paste-back ramp width, in original-image pixels
    threshold: float = 0.05
    selector: str = "dynamic"
    use_global: bool = True
    blend_frame: str = "image"
    click_floor: float = 0.0

    def validate(self) -> RefinerConfig:
        """Raise CheckpointError on impossible settings; returns self."""
        if self.selector not in SELECTOR_MODES:
            raise CheckpointError(f"refiner selector must be one of {SELECTOR_MODES}, got {self.selector!r}")
        if self.blend_frame not in BLEND_FRAMES:
            raise CheckpointError(f"refiner blend_frame must be one of {BLEND_FRAMES}, got {self.blend_frame!r}")
        if self.click_floor < 0 or (self.click_floor > 0 and self.blend_frame != "work"):
            raise CheckpointError(f"refiner click_floor must be >= 0, and > 0 only with blend_frame 'work', got "
                                  f"{self.click_floor} with {self.blend_frame!r}")
        if self.trunk_stride not in (4, 8):
            raise CheckpointError(f"refiner trunk_stride must be 4 or 8, got {self.trunk_stride}")
        sizes = (self.embed_dim, self.sam_img_size, self.work_size, self.channels, self.fine_channels,
                 self.embed_channels,
                 self.crop_size, self.local_channels, self.min_crop)
        if min(sizes) < 1 or self.blocks < 0 or self.local_blocks < 0:
            raise CheckpointError(f"refiner sizes must be positive, got {self}")
        return self

    def same_weights(self, other: RefinerConfig) -> bool:
        """Whether a refiner with ``other``'s settings has the same weights (only run-time fields differ)."""
        return dataclasses.replace(other, **{f: getattr(self, f) for f in RUN_TIME_FIELDS}) == self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefinerConfig:
        """Build from a plain dict; unknown keys raise CheckpointError (a file from another tool)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"unknown refiner settings: {', '.join(unknown)}")
        return cls(**data).validate()
