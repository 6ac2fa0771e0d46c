"""Interactive predictor: embed an image once, then answer each prompt in milliseconds."""
from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from samkit.data.image_io import load_image
from samkit.errors import PromptError, SamkitError
from samkit.io_utils import atomic_path
from samkit.models.evf_sam import EvfSam
from samkit.models.factored_decoder import FactoredImage
from samkit.models.mask_decoder import output_slice
from samkit.models.prompt_encoder import prompt_batch
from samkit.models.sam import Sam
from samkit.models.transformer import ImageCache
from samkit.predict.mirror import mirror_boxes, mirror_low_res, mirror_points
from samkit.predict.refining import MaskRefiner
from samkit.predict.text import has_text_encoder, prompt_tokens, token_ids
from samkit.predict.threads import side_by_side, thread_budget
from samkit.predict.transforms import (
    postprocess_logits,
    preprocess,
    resized_shape,
    scale_boxes,
    scale_coords,
    upscale_grid,
)
from samkit.runtime import tune_allocator

EMBEDDING_FORMAT = "samkit-embedding/1"
# decode_confident runs batches through the factored decoder up to this many image tokens: faster up to 48 x 48
# (samkit_tiny at 320 / 512 / 768 px, 64 points: -18 / -20 / -10 %), slower at 64 x 64 (+17 % samkit_tiny at 1024 px,
# +4-13 % sam_vit_b and MobileSAM; 2026-12-06)
FACTORED_MAX_TOKENS = 48 * 48
# decode_confident splits a batch of at least this many points per thread across the threads, one torch thread each
PART_POINTS = 8


class LowResLogits:
    """A prediction's (C,s,s) low-res logits, given as an array or as a function that makes them at the first
    read of :attr:`value` (what a caller that feeds masks back keeps: not the full-resolution fields)."""

    __slots__ = ("_value",)

    def __init__(self, value: np.ndarray | Callable[[], np.ndarray]) -> None:
        self._value = value

    @property
    def ready(self) -> bool:
        """Whether they are made (reading :attr:`value` does no work)."""
        return not callable(self._value)

    @property
    def value(self) -> np.ndarray:
        if callable(self._value):
            self._value = self._value()
        return self._value


class Prediction:
    """Masks for one prompt set. C = number of masks (3 with multimask, else 1).

    masks (C,H,W) bool; logits (C,H,W) float32; scores (C,) predicted IoU;
    low_res_logits (C,s,s) float32, s = model.img_size / 4 (256 for SAM; feed one back as ``mask_input``).
    :meth:`Predictor.predict_batch` returns the same fields with a leading batch axis B.

    ``low_res_logits`` may be given as a function that makes them: they are then made at their first read
    (:meth:`Predictor.predict` defers the low-res logits that the full-resolution ones do not read);
    ``low_res`` (:class:`LowResLogits`) holds them either way.
    """

    __slots__ = ("masks", "logits", "scores", "low_res")

    def __init__(self, masks: np.ndarray, logits: np.ndarray, scores: np.ndarray,
                 low_res_logits: np.ndarray | Callable[[], np.ndarray]) -> None:
        self.masks, self.logits, self.scores = masks, logits, scores
        self.low_res = LowResLogits(low_res_logits)

    @property
    def low_res_logits(self) -> np.ndarray:
        return self.low_res.value

    @low_res_logits.setter
    def low_res_logits(self, value: np.ndarray) -> None:
        self.low_res = LowResLogits(value)

    @property
    def best(self) -> int:
        """Index of the mask with the highest predicted IoU (single prediction)."""
        return int(np.argmax(self.scores))

    def __repr__(self) -> str:
        return f"Prediction(masks={self.masks.shape}, scores={np.round(self.scores, 3).tolist()})"


def read_embedding(path: str | os.PathLike, with_features: bool = False) -> tuple[dict, torch.Tensor | None]:
    """Metadata of a :meth:`Predictor.save_embedding` file ({"arch", "original_size" (H, W)}), and
    its (1,256,64,64) features when ``with_features``. Raises SamkitError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise SamkitError(f"embedding file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            features = f.get_tensor("features") if with_features else None
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise SamkitError(f"{path} is not a samkit embedding file: {e}") from None
    if meta.get("format") != EMBEDDING_FORMAT or not meta.get("arch"):
        raise SamkitError(f"{path} is not a samkit embedding file (format {meta.get('format')!r})")
    try:
        h, w = (int(v) for v in json.loads(meta["original_size"]))
    except (KeyError, ValueError, TypeError):
        raise SamkitError(f"{path} is not a samkit embedding file (no original_size)") from None
    return {"arch": meta["arch"], "original_size": (h, w)}, features


class Predictor:
    """Prompted segmentation of one image at a time with a SAM-family model.

    >>> pred = Predictor(model); pred.set_image(rgb)
    >>> out = pred.predict(points=[[x, y]], labels=[1])

    ``threads``: torch intra-op threads for the encoder and decoder; None (default) decides at each
    call from the CPUs that are free then, one thread for small decoder calls
    (:func:`samkit.runtime.default_threads`).

    ``refiner``: a :class:`~samkit.predict.refining.MaskRefiner` (``samkit.load_refiner(...)``) that
    :meth:`predict` runs on the masks (``refine``); its image-only work runs in :meth:`set_image`.

    ``mirror``: a test-time mirror ensemble. :meth:`set_image` also embeds the left-right mirror of the image
    (twice the encoder's work; :attr:`pair` holds both embeddings) and :meth:`predict` decodes each point / box /
    mask prompt on both in one decoder call of batch 2, the mirror's low-res logits mirrored back and averaged
    with the image's, predicted IoUs averaged. Text prompts (left and right would swap), :meth:`predict_batch`,
    :meth:`predict_low_res` and segment-everything use the image alone.
    """

    def __init__(self, model: Sam | EvfSam, refiner: MaskRefiner | None = None, threads: int | None = None,
                 mirror: bool = False) -> None:
        tune_allocator()
        self.model = model.eval()
        self.threads = threads
        if refiner is not None:
            refiner.check_model(self.model)
        self.refiner = refiner
        if mirror and not hasattr(self.model, "decode_masks"):
            raise SamkitError("mirror=True needs a torch SAM-family model (its split mask decoder)")
        self.mirror = mirror
        self.reset_image()

    # -- image / embedding ------------------------------------------------------------------
    def reset_image(self) -> None:
        """Forget the current image embedding."""
        self.features: torch.Tensor | None = None
        self._caches: dict[str, Any] = {}  # the model's image caches, by the name of the method that made them
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.text_image: torch.Tensor | None = None  # (1,3,224,224) BEiT-3 input, for text-promptable models
        self.pair: torch.Tensor | None = None  # ``mirror``: (2,C,h,w) the image's and its mirror image's features

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def set_image(self, image: np.ndarray | Image.Image | str | os.PathLike) -> None:
        """Run the image encoder once. ``image``: HxWx3 uint8 RGB array, PIL image or path
        (EXIF orientation applied; grayscale/RGBA/16-bit/palette converted to RGB)."""
        rgb = load_image(image)
        features, input_size = self._encode(rgb)
        self._set_features(features)
        self.original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.input_size = input_size
        self.text_image = self.model.text_image(rgb) if has_text_encoder(self.model) else None
        if self.mirror:
            self._embed_mirror(rgb)
        if self.refiner is not None:
            self.refiner.set_image(rgb, self._require_image()[0])

    def _encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The image encoder on HxWx3 RGB: (1,C,h,w) features and the resized image's (h, w) in the input frame."""
        x, input_size = preprocess(rgb, self.model.img_size)
        with torch.inference_mode(), thread_budget(self.threads):
            return self.model.encode_image(x.to(self.model.device)), input_size

    def _embed_mirror(self, rgb: np.ndarray) -> None:
        """``mirror``: run the image encoder on the left-right mirror of ``rgb`` (the current image) and keep both
        embeddings as :attr:`pair`."""
        mirrored = self._encode(np.ascontiguousarray(rgb[:, ::-1]))[0]
        self.pair = torch.cat([self._require_image()[0], mirrored.contiguous(memory_format=torch.channels_last)])

    def _set_features(self, features: torch.Tensor) -> None:
        # Channels-last = token-major, the layout the mask decoder works in: converted once per image.
        self.features = features.contiguous(memory_format=torch.channels_last)
        self._caches = {}  # built at the first prompt without a mask input

    def _cache(self, factored: bool = False) -> ImageCache | FactoredImage | None:
        """The model's prompt-independent decoder work for the current embedding (batch 1), made once: its
        ``decoder_cache``, or with ``factored`` its ``factored_cache`` (less work per prompt in large batches)."""
        features = self._require_image()[0]
        name = "factored_cache" if factored else "decoder_cache"
        if name not in self._caches and features.shape[0] == 1 and hasattr(self.model, name):
            with torch.inference_mode():
                self._caches[name] = getattr(self.model, name)(features)
        return self._caches.get(name)

    def save_embedding(self, path: str | os.PathLike) -> None:
        """Write the image embedding (+ sizes and architecture) to a safetensors file."""
        features, _, _ = self._require_image()
        meta = {"format": EMBEDDING_FORMAT, "arch": self.model.arch,
                "original_size": json.dumps(self.original_size), "input_size": json.dumps(self.input_size)}
        with atomic_path(path) as tmp:
            save_file({"features": features.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)

    def load_embedding(self, path: str | os.PathLike, image_size: tuple[int, int] | None = None,
                       image: np.ndarray | Image.Image | str | os.PathLike | None = None) -> None:
        """Load an embedding written by :meth:`save_embedding`; no image encoder is run.

        ``image_size`` (H, W) of the original image is checked against the file when given. ``image``: the
        image itself, for a refiner and for text prompts (their image-only inputs are recomputed from it; the
        file holds SAM's features only).
        """
        meta, features = read_embedding(path, with_features=True)
        assert features is not None  # with_features
        if meta["arch"] != self.model.arch:
            raise SamkitError(
                f"{path} was computed with {meta['arch']!r}, but the model is {self.model.arch!r}: "
                "use the same model for embedding and prompting")
        original = meta["original_size"]
        if image_size is not None and tuple(int(v) for v in image_size) != original:
            raise SamkitError(f"{path} is for an image of size {original} (H, W), not {tuple(image_size)}")
        self._set_features(features.to(self.model.device))
        self.original_size = original
        self.input_size = resized_shape(original[0], original[1], self.model.img_size)
        self.text_image = None  # the file holds SAM's features only: text prompts and a refiner need the image
        rgb = None if image is None else load_image(image)
        if rgb is not None and rgb.shape[:2] != tuple(original):
            raise SamkitError(f"image of size {rgb.shape[:2]} (H, W) for an embedding of {tuple(original)}")
        if self.mirror:
            if rgb is None:
                self.reset_image()
                raise SamkitError("a mirror predictor (mirror=True) embeds the mirror image too: pass the image, "
                                  "load_embedding(path, image=...)")
            self._embed_mirror(rgb)
        if rgb is not None and has_text_encoder(self.model):
            self.text_image = self.model.text_image(rgb)
        if self.refiner is not None:
            self.refiner.reset_image()
            if rgb is not None:
                self.refiner.set_image(rgb, self._require_image()[0])

    # -- prompting --------------------------------------------------------------------------
    def predict(self, points: Any = None, labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask: bool | None = None, text: str | None = None, text_tokens: Any = None,
                semantic: bool = False, refine: bool | None = None) -> Prediction:
        """Masks for one prompt set, coordinates in original-image pixels (x, y).

        points (N,2); labels (N,) 1 = foreground, 0 = background; box (4,) x0,y0,x1,y1;
        mask_input (1,s,s) or (s,s) low-res logits from an earlier prediction (s = img_size / 4: 256 for SAM);
        text: a sentence, or text_tokens: its token ids (``<s>`` ... ``</s>``), for text-promptable models
        (EVF-SAM; ``semantic`` adds the multitask checkpoints' ``[semantic] `` prefix).
        ``multimask`` defaults to 3 masks for geometric prompts, 1 when there is text.
        ``refine``: run the predictor's refiner on the masks (default: when there is one); scores and
        ``low_res_logits`` stay SAM's (feed those back as ``mask_input``).
        """
        refine = self._check_refine(refine)
        prompts = self._prompts(points, labels, box, mask_input, multimask, text, text_tokens, semantic)
        low_res: np.ndarray | Callable[[], np.ndarray]
        if hasattr(self.model, "decode_masks"):
            if self.pair is not None and prompts[4] is None:
                low, iou, low_res = self._decode_mirrored(*prompts[:4])
            else:
                low, iou, low_res = self._decode_image_part(*prompts)
        else:  # models without the split decoder (ONNX): the whole grid
            low, iou = (t[0] for t in self.decode_low_res(*prompts))
            low_res = low.numpy()
        logits = self._refine_logits(low, points, labels) if refine else self.upscale(low)
        return Prediction((logits > self.model.mask_threshold).numpy(), logits.numpy(), iou.numpy(), low_res)

    def _decode_image_part(self, pts: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                           masks: torch.Tensor | None, multimask: bool, extra: torch.Tensor | None
                           ) -> tuple[torch.Tensor, torch.Tensor, Callable[[], np.ndarray]]:
        """:meth:`decode_low_res` of one prompt set, its upscaling chain run for the image tokens whose low-res
        logits an upsampling to any frame of the image reads (:func:`~samkit.predict.transforms.upscale_grid`;
        not the padding below or right of the image): low-res logits (C,s,s) filled there only, IoU (C,), and a
        function that fills in the rest and returns all of them (C,s,s) as an array (``Prediction.low_res_logits``)."""
        decoded = self._decode(self.model.decode_masks, pts, boxes, masks, multimask, extra)
        h, w = decoded.grid
        rows, cols = self.image_tokens()
        budget = functools.partial(self._budget, pts, boxes, masks, extra)
        with torch.inference_mode(), budget():
            # the rest of the grid is written by complete(); until then only this block is read
            low = decoded.fill(decoded.src.new_empty((1, decoded.hyper_in.shape[1], 4 * h, 4 * w)),
                               slice(0, rows), slice(0, cols))

        def complete() -> np.ndarray:
            with torch.inference_mode(), budget():
                return decoded.complete(low, rows, cols)[0].float().cpu().numpy()

        return low[0].float().cpu(), decoded.iou[0, output_slice(multimask)].float().cpu(), complete

    def _decode_mirrored(self, pts: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                         masks: torch.Tensor | None, multimask: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, Callable[[], np.ndarray]]:
        """:meth:`_decode_image_part` of point / box / mask prompts on the image and on its mirror (``mirror``) in
        one decoder call of batch 2 (the two embeddings stacked; no image cache): the mirror's low-res logits
        mirrored back and averaged with the image's where those are filled, predicted IoUs averaged."""
        pair = self.pair
        assert pair is not None
        width = self._require_image()[2][1]  # the content's width in the input frame, the same in both frames
        lowres_width = width * self.low_res_size() / self.model.img_size
        dev = self.model.device
        both_pts = None if pts is None else (torch.cat([pts[0], mirror_points(pts[0], width)]).to(dev),
                                             torch.cat([pts[1], pts[1]]).to(dev))
        both_boxes = None if boxes is None else torch.cat([boxes, mirror_boxes(boxes, width)]).to(dev)
        both_masks = None if masks is None else torch.cat([masks, mirror_low_res(masks, lowres_width)]).to(dev)
        rows, cols = (4 * n for n in self.image_tokens())
        budget = functools.partial(self._budget, both_pts, both_boxes, both_masks, None)
        with torch.inference_mode(), budget():
            decoded = self.model.decode_masks(pair, points=both_pts, boxes=both_boxes, mask_input=both_masks,
                                              multimask_output=multimask)
            h, w = decoded.grid
            grid = decoded.fill(decoded.src.new_empty((2, decoded.hyper_in.shape[1], 4 * h, 4 * w)),
                                slice(0, rows), slice(0, cols))
            mirrored_back = mirror_low_res(grid[1, :, :rows, :cols], lowres_width)
            block = ((grid[0, :, :rows, :cols] + mirrored_back) / 2).float().cpu()
            iou = decoded.iou[:, output_slice(multimask)].float().cpu().mean(0)
            low = block.new_empty((block.shape[0], 4 * h, 4 * w))  # filled where the image's grid is
            low[:, :rows, :cols] = block
        block_np = block.numpy()

        def complete() -> np.ndarray:
            with torch.inference_mode(), budget():
                whole = decoded.complete(grid, rows, cols)[0].float().cpu().numpy()
            whole[:, :rows, :cols] = block_np  # the image's own logits in the padding (nothing to mirror there)
            return whole

        return low, iou, complete

    def _check_refine(self, refine: bool | None) -> bool:
        if refine and self.refiner is None:
            raise SamkitError("refine=True needs a refiner: samkit.Predictor(model, refiner=samkit.load_refiner(...))")
        return self.refiner is not None if refine is None else bool(refine)

    def _refine_logits(self, low: torch.Tensor, points: Any, labels: Any) -> torch.Tensor:
        """(C,s,s) low-res logits -> the refiner's (C,H,W), given the (already checked) clicks."""
        if self.refiner is None:
            raise SamkitError("refining needs a refiner: samkit.Predictor(model, refiner=samkit.load_refiner(...))")
        return self.refiner.refine(low, None if points is None else np.asarray(points, dtype=np.float64),
                                   None if labels is None else np.asarray(labels), threads=self.threads)

    def predict_low_res(self, points: Any = None, labels: Any = None, box: Any = None, mask_input: Any = None,
                        multimask: bool | None = None, text: str | None = None, text_tokens: Any = None,
                        semantic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict` without the full-resolution step: low-res logits (C,s,s) and predicted IoU (C,).

        For callers that upsample one mask (or one band of rows) at a time: a very large image never
        holds all C full-resolution masks (see :func:`~samkit.predict.transforms.upsample_operators`).
        """
        low, iou = self.decode_low_res(*self._prompts(points, labels, box, mask_input, multimask, text, text_tokens,
                                                      semantic))
        return low[0], iou[0]

    def _prompts(self, points: Any, labels: Any, box: Any, mask_input: Any, multimask: bool | None,
                 text: str | None, text_tokens: Any, semantic: bool
                 ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None, bool,
                            torch.Tensor | None]:
        """:meth:`predict`'s prompts checked, as a batch of one for :meth:`decode_low_res`: points ((1,N,2),
        (1,N)), boxes (1,4), masks (1,1,s,s), multimask, text prompt tokens (1,T,256)."""
        self._require_image()
        ids = token_ids(self.model, None if text is None else [text],
                        None if text_tokens is None else [text_tokens], semantic)
        pts = self._check_points(points, labels)
        boxes = None if box is None else self._check_boxes(box, single=True)
        masks = None if mask_input is None else self._check_mask_input(mask_input, batch=1)
        if pts is None and boxes is None and masks is None and ids is None:
            raise PromptError("no prompt given: pass points (with labels), a box, mask_input, or text")
        extra = None if ids is None else self._text_prompts(ids)
        multimask = ids is None if multimask is None else multimask
        return None if pts is None else (pts[0][None], pts[1][None]), boxes, masks, multimask, extra

    def predict_batch(self, points: Any = None, labels: Any = None, boxes: Any = None, mask_input: Any = None,
                      multimask: bool = False, texts: Any = None, text_tokens: Any = None,
                      semantic: bool = False) -> Prediction:
        """B prompt sets in one decoder pass; every output field gets a leading B axis.

        points (B,N,2) with labels (B,N); boxes (B,4); mask_input (B,1,s,s) or (B,s,s);
        texts: B sentences, or text_tokens: B token id lists (one BEiT-3 pass, one image embedding).
        """
        self._require_image()
        if isinstance(texts, str):
            raise PromptError("texts must be a list of sentences; for one sentence use predict(text=...)")
        ids = token_ids(self.model, texts, text_tokens, semantic)
        pts = None
        if points is not None or labels is not None:
            p = self._as_array(points, "points")
            lab = self._as_array(labels, "labels")
            if p.ndim != 3 or lab.ndim != 2:
                raise PromptError(f"batched points must be (B,N,2) with labels (B,N), got {p.shape} and {lab.shape}")
            checked = [c for i in range(p.shape[0]) if (c := self._check_points(p[i], lab[i])) is not None]
            pts = (torch.stack([c[0] for c in checked]), torch.stack([c[1] for c in checked]))
        bx = None if boxes is None else self._check_boxes(boxes, single=False)
        sizes = {t.shape[0] for t in (pts[0] if pts else None, bx) if t is not None} | ({len(ids)} if ids else set())
        b = sizes.pop() if len(sizes) == 1 else None
        if sizes:
            raise PromptError("points, boxes and texts must have the same batch size")
        masks = None if mask_input is None else self._check_mask_input(mask_input, batch=b)
        if pts is None and bx is None and masks is None and ids is None:
            raise PromptError("no prompt given: pass points (with labels), boxes, mask_input, or texts")
        extra = None if ids is None else self._text_prompts(ids)
        return Prediction(*self._run(pts, bx, masks, multimask, extra))

    def _text_prompts(self, ids: list[list[int]]) -> torch.Tensor:
        """(B,1,256) prompt tokens of checked token id lists, about the current image."""
        if self.text_image is None:
            raise SamkitError("text prompts need the image itself: call set_image(), or load_embedding(..., "
                              "image=...) (an embedding file holds only SAM's image features)")
        return prompt_tokens(self.model, self.text_image, ids)

    def _run(self, pts: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
             masks: torch.Tensor | None, multimask: bool,
             extra_tokens: torch.Tensor | None = None) -> tuple[np.ndarray, ...]:
        low, iou = self.decode_low_res(pts, boxes, masks, multimask, extra_tokens)
        logits = self.upscale(low)
        masks_out = (logits > self.model.mask_threshold).numpy()
        return masks_out, logits.numpy(), iou.numpy(), low.numpy()

    def decode_low_res(self, pts: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None = None,
                       masks: torch.Tensor | None = None, multimask: bool = True,
                       extra_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask decoder only, on already checked prompts in the model's input frame: points ((B,N,2), (B,N)),
        boxes (B,4), masks (B,1,s,s), extra_tokens (B,T,256) (text prompts). Returns low-res logits (B,M,s,s)
        and IoU predictions (B,M), float32 CPU."""
        low, iou = self._decode(self.model.decode, pts, boxes, masks, multimask, extra_tokens)
        return low.float().cpu(), iou.float().cpu()

    def decode_confident(self, pts: tuple[torch.Tensor, torch.Tensor], min_iou: float, multimask: bool = True,
                         image_part: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode_low_res` of points, keeping only the masks whose predicted IoU is above ``min_iou`` and
        computing no others (segment-everything's first filter): low-res logits (K,s,s), IoU (K,), and index
        (K,2) = (prompt, output) of each in decode_low_res's (B,M). float32 CPU. Models without this decoder
        path (ONNX) decode everything and filter. Up to :data:`FACTORED_MAX_TOKENS` image tokens the batch runs
        through the model's ``factored_cache`` (less work per prompt), above through its ``decoder_cache``.

        ``image_part``: only the logits an upsampling to the image reads, the grid's top-left (K, 4*rows, 4*cols)
        block of :meth:`image_tokens` (the upscaling chain skips the padding's tokens)."""
        grid = self.image_tokens() if image_part else None
        decode = getattr(self.model, "decode_confident", None)
        if decode is None:
            low, iou = self.decode_low_res(pts, multimask=multimask)
            index = (iou > min_iou).nonzero()
            low = low[index[:, 0], index[:, 1]]
            return (low if grid is None else low[:, :4 * grid[0], :4 * grid[1]]), iou[index[:, 0], index[:, 1]], index
        decode = functools.partial(decode, min_iou=min_iou, **({} if grid is None else {"grid": grid}))
        factored = self._require_image()[0][0, 0].numel() <= FACTORED_MAX_TOKENS
        low, iou, index = self._decode(decode, pts, None, None, multimask, None, factored=factored, parts=True)
        return low.float().cpu(), iou.float().cpu(), index.cpu()

    def low_res_size(self) -> int:
        """Side s of the current image's (s, s) low-res logits: 4 per token of the embedding's grid."""
        return 4 * self._require_image()[0].shape[-1]

    def image_tokens(self) -> tuple[int, int]:
        """Rows and columns of the embedding's image tokens whose low-res logits an upsampling to any frame of the
        current image reads (:func:`~samkit.predict.transforms.upscale_grid`): not the padding below or right of
        the image."""
        _, _, input_size = self._require_image()
        s = self.low_res_size()  # 4 logits per token
        # the input frame's own size bounds what every smaller or larger frame's upsampling reads
        return upscale_grid(input_size, input_size, s, self.model.img_size, s // 4)

    def _decode(self, decode: Callable[..., Any], pts: tuple[torch.Tensor, torch.Tensor] | None,
                boxes: torch.Tensor | None, masks: torch.Tensor | None, multimask: bool,
                extra_tokens: torch.Tensor | None, factored: bool = False, parts: bool = False) -> Any:
        """Run a model's decode method on checked prompts, moved to the model's device, with the image cache
        where it applies (``factored``: :meth:`_cache`'s) and the call's thread budget. ``parts``: a large batch
        of points only (``decode_confident``'s (low, iou, index) results) is split across the budget's threads
        (:func:`~samkit.predict.threads.side_by_side`, CPU only) and merged in prompt order."""
        dev = self.model.device
        features = self._require_image()[0]
        # only what is given: models without text or an image cache (ONNX) take neither keyword
        optional: dict[str, Any] = {} if extra_tokens is None else {"extra_tokens": extra_tokens.to(dev)}
        cache = None if masks is not None else self._cache(factored)
        if cache is not None:
            optional["cache"] = cache
        def run(points: tuple[torch.Tensor, torch.Tensor] | None) -> Any:
            with torch.inference_mode():
                return decode(
                    features,
                    points=None if points is None else (points[0].to(dev), points[1].to(dev)),
                    boxes=None if boxes is None else boxes.to(dev),
                    mask_input=None if masks is None else masks.to(dev),
                    multimask_output=multimask,
                    **optional,
                )

        with self._budget(pts, boxes, masks, extra_tokens) as threads:
            if not parts or pts is None or threads < 2 or dev.type != "cpu" or len(pts[0]) < PART_POINTS * threads \
                    or boxes is not None or masks is not None or extra_tokens is not None:
                return run(pts)

            def part(start: int, stop: int) -> Any:
                low, iou, index = run((pts[0][start:stop], pts[1][start:stop]))
                return low, iou, index + torch.tensor([start, 0], device=index.device)

            return tuple(torch.cat(x) for x in zip(*side_by_side(part, len(pts[0]), threads), strict=True))

    def _budget(self, pts: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None, extra_tokens: torch.Tensor | None
                ) -> contextlib.AbstractContextManager[int]:
        """The thread budget of a decoder call on these prompts (its size: prompts x image tokens)."""
        rows = prompt_batch(pts, boxes, masks, extra_tokens) * self._require_image()[0][0, 0].numel()
        return thread_budget(self.threads, rows=rows)

    def upscale(self, low: torch.Tensor) -> torch.Tensor:
        """(..., s, s) low-res logits -> (..., H, W) float32 logits at the current image's resolution."""
        with torch.inference_mode():
            _, original_size, input_size = self._require_image()
            return postprocess_logits(low, original_size, input_size, self.model.img_size)

    # -- validation -------------------------------------------------------------------------
    def _require_image(self) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """(features, original_size, input_size) of the current image; SamkitError when none is set."""
        if self.features is None or self.original_size is None or self.input_size is None:
            raise SamkitError("no image set: call set_image() or load_embedding() first")
        return self.features, self.original_size, self.input_size

    @staticmethod
    def _as_array(value: Any, name: str) -> np.ndarray:
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise PromptError(f"{name} must be numeric, got {value!r}") from None

    def _check_points(self, points: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        if points is None and labels is None:
            return None
        if points is None or labels is None:
            raise PromptError("points and labels go together: pass both (labels 1 = foreground, 0 = background)")
        p = self._as_array(points, "points")
        lab = self._as_array(labels, "labels")
        if p.ndim == 1 and p.shape[0] == 2:
            p = p[None]
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
            raise PromptError(f"points must have shape (N, 2) as x, y pairs, got {p.shape}")
        lab = lab.reshape(-1)
        if lab.shape[0] != p.shape[0]:
            raise PromptError(f"{p.shape[0]} points but {lab.shape[0]} labels")
        if not np.isfinite(p).all():
            raise PromptError(f"points contain NaN or infinite values: {p.tolist()}")
        bad = ~np.isin(lab, (0, 1))
        if bad.any():
            raise PromptError(f"labels must be 1 (foreground) or 0 (background), got {lab[bad].tolist()}")
        original_size = self._require_image()[1]
        h, w = original_size
        outside = (p[:, 0] < 0) | (p[:, 0] > w) | (p[:, 1] < 0) | (p[:, 1] > h)
        if outside.any():
            x, y = p[outside][0]
            raise PromptError(f"point ({x:g}, {y:g}) is outside the image ({w} x {h} pixels)")
        scaled = scale_coords(p, original_size, self.model.img_size)
        return torch.from_numpy(scaled).float(), torch.from_numpy(lab).long()

    def _check_boxes(self, box: Any, single: bool) -> torch.Tensor:
        b = self._as_array(box, "box")
        if single and b.shape != (4,) and b.shape != (1, 4):
            raise PromptError(f"box must be 4 numbers x0, y0, x1, y1, got shape {b.shape}")
        b = b.reshape(-1, 4) if single else b
        if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
            raise PromptError(f"boxes must have shape (B, 4) as x0, y0, x1, y1, got {b.shape}")
        if not np.isfinite(b).all():
            raise PromptError("box contains NaN or infinite values")
        flipped = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if flipped.any():
            raise PromptError(f"box {b[flipped][0].tolist()} has x1 < x0 or y1 < y0 (expected x0, y0, x1, y1)")
        return torch.from_numpy(scale_boxes(b, self._require_image()[1], self.model.img_size)).float()

    def _check_mask_input(self, mask_input: Any, batch: int | None) -> torch.Tensor:
        """Single prompt (batch=1): (s,s), (1,s,s) or (1,1,s,s). Batched: (B,s,s) or (B,1,s,s); s = img_size / 4."""
        m = np.asarray(mask_input, dtype=np.float32)
        low = self.model.prompt_encoder.mask_input_size
        if batch == 1 and m.ndim == 2:
            m = m[None]
        if m.ndim == 3:
            m = m[:, None]
        n = batch if batch is not None else (m.shape[0] if m.ndim == 4 else 1)
        if m.shape != (n, 1, *low):
            raise PromptError(
                f"mask_input must be low-res logits of shape (1, {low[0]}, {low[1]}) per prompt "
                f"(e.g. prev.low_res_logits[i][None]), got {tuple(np.shape(mask_input))}")
        if not np.isfinite(m).all():
            raise PromptError("mask_input contains NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(m))
