"""ONNX Runtime inference of graphs written by :mod:`samkit.export.onnx` (``pip install samkit[onnx]``).

A folder holds ``encoder.onnx`` and ``decoder.onnx`` (fp32), optionally ``encoder.int8.onnx`` and
``decoder.int8.onnx``, and ``samkit_onnx.json`` (architecture, input frame, threshold, validation).

>>> pred = OnnxPredictor("exported/", precision="int8")   # same API and Prediction fields as Predictor
>>> pred.set_image(rgb); out = pred.predict(points=[[x, y]], labels=[1])

The decoder graph follows SAM's own ONNX interface: image_embeddings (1,C,g,g); point_coords (1,N,2)
in the input frame and point_labels (1,N) (1 foreground, 0 background, 2/3 box corners, -1 padding);
mask_input (1,1,4g,4g) with has_mask_input (1,) 1 or 0; orig_im_size (2,) H, W. Outputs: masks
(1,4,H,W) full-resolution logits, iou_predictions (1,4), low_res_masks (1,4,4g,4g); index 0 is the
single-mask output, 1..3 the multimask outputs.

The browser's decoder is three fp32 graphs (``samkit serve``'s ``web/decoder.js`` runs them; the
same decoder, split where its work depends on less than the whole prompt; :class:`BrowserGraphs` runs
them the same way in Python):

- ``decoder_image.onnx``, once per image (and per mask fed back): image_embeddings (1,C,g,g), mask_input
  (1,1,4g,4g, or 1,1,4,4 when has_mask_input is 0: its embedding broadcasts) and has_mask_input -> the
  image tokens' products that the clicks read (:meth:`samkit.models.factored_decoder.FactoredDecoder.
  precompute`; names from ``image_names()``: the first block's t2i_k, t2i_v, i2t_q, ..., ct1 (g*g, C)).
- ``decoder_lowres.onnx``, per click: all of those, point_coords, point_labels and upscale_grid (2,) int64,
  the rows and columns of image tokens whose logits it computes (:func:`samkit.predict.transforms.
  upscale_grid`: those the upsampling to the original image reads) -> iou_predictions (1,4), low_res_masks
  (1,4,4*rows,4*cols), and for the rest graph row_scale (g*g,), factors (r,g*g), ct1_factor (r,C) and
  mask_weights (1,4,C/8): the transformer's image tokens in low-rank form, never formed.
- ``decoder_rest.onnx``: ct1, the click's row_scale, factors, ct1_factor, mask_weights and token_index (n,)
  int64 -> those tokens' logits, token_masks (1,4,n,4,4): the rest of the grid, which a mask fed back needs
  (the page computes it in the background).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import torch

from samkit.errors import SamkitError
from samkit.models.prompt_encoder import prompt_batch
from samkit.models.sam import Sam
from samkit.predict.predictor import Predictor
from samkit.runtime import pool_threads

MANIFEST = "samkit_onnx.json"
MANIFEST_FORMAT = "samkit-onnx/1"
PRECISIONS = ("fp32", "int8")
INSTALL_HINT = "pip install samkit[onnx]"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
ENCODER_INPUT, ENCODER_OUTPUT = "image", "image_embeddings"
LOW_RES_DECODER = "decoder_lowres.onnx"
IMAGE_DECODER = "decoder_image.onnx"
IMAGE_DECODER_INPUTS = ("image_embeddings", "mask_input", "has_mask_input")
# The per-image graph's outputs are samkit.models.factored_decoder.FactoredDecoder.image_names() (they depend
# on the transformer's depth); the per-click graph takes all of them, then these:
LOW_RES_PROMPT_INPUTS = ("point_coords", "point_labels", "upscale_grid")
LOW_RES_DECODER_OUTPUTS = ("iou_predictions", "low_res_masks", "row_scale", "factors", "ct1_factor", "mask_weights")
REST_DECODER = "decoder_rest.onnx"
REST_DECODER_INPUTS = ("ct1", "row_scale", "factors", "ct1_factor", "mask_weights", "token_index")
REST_DECODER_OUTPUTS = ("token_masks",)


def onnxruntime_module() -> Any:
    """The ``onnxruntime`` module, or a one-line SamkitError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise SamkitError(f"ONNX Runtime is not installed: {INSTALL_HINT}") from None
    return onnxruntime


def graph_files(precision: str) -> tuple[str, str]:
    """(encoder, decoder) file names of a precision in an export folder."""
    if precision not in PRECISIONS:
        raise SamkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    suffix = "" if precision == "fp32" else f".{precision}"
    return f"encoder{suffix}.onnx", f"decoder{suffix}.onnx"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The export folder's ``samkit_onnx.json``; SamkitError when it is not an export folder."""
    path = Path(folder) / MANIFEST
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise SamkitError(f"{folder} is not a samkit ONNX export folder (no {MANIFEST}): "
                          "write one with `samkit export onnx MODEL --out DIR`") from None
    except (OSError, ValueError) as e:
        raise SamkitError(f"cannot read {path}: {e}") from None
    if meta.get("format") != MANIFEST_FORMAT:
        raise SamkitError(f"{path} is not a samkit ONNX manifest (format {meta.get('format')!r})")
    return meta


def session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for one graph; ``threads`` intra-op threads (default
    :func:`samkit.runtime.pool_threads`: the session's pool is sized once), no spin-waiting (see
    :mod:`samkit.runtime`)."""
    ort = onnxruntime_module()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or pool_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"])


def decoder_feeds(features: np.ndarray, coords: np.ndarray, labels: np.ndarray, mask_input: np.ndarray | None,
                  original_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Inputs of the decoder graph: features (1,C,g,g), coords (N,2) input-frame x,y, labels (N,)
    (box corners already appended as labels 2, 3; padding as -1), mask_input (1,1,s,s) or None."""
    s = 4 * features.shape[-1]
    return {
        "image_embeddings": np.ascontiguousarray(features, dtype=np.float32),
        "point_coords": np.asarray(coords, dtype=np.float32)[None],
        "point_labels": np.asarray(labels, dtype=np.float32)[None],
        "mask_input": (np.zeros((1, 1, s, s), np.float32) if mask_input is None
                       else np.asarray(mask_input, dtype=np.float32).reshape(1, 1, s, s)),
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], dtype=np.float32),
        "orig_im_size": np.array(original_size, dtype=np.float32),
    }


class BrowserGraphs:
    """The browser's three decoder graphs in an export folder, run as ``web/decoder.js`` runs them: for the
    export's validation and the tests (the page itself never calls Python)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None) -> None:
        folder = Path(folder)
        self.image_graph = session(folder / IMAGE_DECODER, threads)
        self.click_graph = session(folder / LOW_RES_DECODER, threads)
        self.rest_graph = session(folder / REST_DECODER, threads)

    def image(self, features: np.ndarray, mask_input: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """features (1,C,g,g), mask_input (s,s) low-res logits or None -> the click graph's image inputs."""
        mask = (np.zeros((1, 1, 4, 4), np.float32) if mask_input is None
                else np.asarray(mask_input, np.float32).reshape(1, 1, 4 * features.shape[-1], -1))
        feeds = {"image_embeddings": np.ascontiguousarray(features, dtype=np.float32), "mask_input": mask,
                 "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32)}
        names = [o.name for o in self.image_graph.get_outputs()]
        return dict(zip(names, self.image_graph.run(names, feeds), strict=True))

    def click(self, image: dict[str, np.ndarray], coords: np.ndarray, labels: np.ndarray,
              grid: tuple[int, int]) -> dict[str, np.ndarray]:
        """:meth:`image`'s outputs, points (N,2) in the input frame with labels (N,) as :func:`sparse_prompt`
        gives them, upscale_grid -> LOW_RES_DECODER_OUTPUTS by name."""
        feeds = {**image, "point_coords": np.asarray(coords, np.float32)[None],
                 "point_labels": np.asarray(labels, np.float32)[None], "upscale_grid": np.array(grid, np.int64)}
        return dict(zip(LOW_RES_DECODER_OUTPUTS, self.click_graph.run(list(LOW_RES_DECODER_OUTPUTS), feeds),
                        strict=True))

    def complete(self, image: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> np.ndarray:
        """The whole low-res grid (1,M,4g,4g) from :meth:`image`'s and :meth:`click`'s outputs: its low_res_masks
        for the first rows x cols tokens, the other tokens' logits from the rest graph."""
        low = out["low_res_masks"]
        grid = math.isqrt(out["row_scale"].shape[0])
        rows, cols = low.shape[2] // 4, low.shape[3] // 4
        full = np.zeros((1, low.shape[1], 4 * grid, 4 * grid), np.float32)
        full[:, :, :4 * rows, :4 * cols] = low
        missing = np.ones((grid, grid), bool)
        missing[:rows, :cols] = False
        index = np.flatnonzero(missing)
        if len(index):
            feeds = {**image, **out, "token_index": index.astype(np.int64)}  # ct1 from the image, the rest from out
            (patches,) = self.rest_graph.run(list(REST_DECODER_OUTPUTS),
                                             {name: feeds[name] for name in REST_DECODER_INPUTS})
            for k, t in enumerate(index):
                i, j = divmod(int(t), grid)
                full[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = patches[:, :, k]
        return full


def sparse_prompt(points: tuple[torch.Tensor, torch.Tensor] | None, box: torch.Tensor | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One prompt set as the graph's point list, in the prompt encoder's order: points (N,2) with labels
    (N,), then the box (4,) as two corners labelled 2 and 3, or one padding point (label -1) when there
    is no box (SAM pads point-only prompts)."""
    coords, labels = [np.zeros((0, 2), np.float32)], [np.zeros((0,), np.float32)]
    if points is not None:
        coords.append(points[0].numpy().astype(np.float32))
        labels.append(points[1].numpy().astype(np.float32))
    if box is not None:
        coords.append(box.numpy().astype(np.float32).reshape(2, 2))
        labels.append(np.array([2, 3], np.float32))
    else:
        coords.append(np.zeros((1, 2), np.float32))
        labels.append(np.array([-1], np.float32))
    return np.concatenate(coords), np.concatenate(labels)


class OnnxSam:
    """ONNX Runtime stand-in for :class:`samkit.models.sam.Sam` at inference: ``encode_image`` and
    ``decode`` with the same shapes, plus :meth:`run_decoder` (the graph's full-resolution output)."""

    has_text_encoder = False
    device = torch.device("cpu")

    def __init__(self, folder: str | os.PathLike, precision: str = "fp32", threads: int | None = None) -> None:
        meta = read_manifest(folder)
        enc_name, dec_name = graph_files(precision)
        missing = [n for n in (enc_name, dec_name) if not (Path(folder) / n).is_file()]
        if missing:
            hint = " (export with --quantize int8)" if precision == "int8" else ""
            raise SamkitError(f"{folder} has no {', '.join(missing)}{hint}")
        self.folder, self.precision, self.meta = Path(folder), precision, meta
        self.arch = meta["arch"]
        self.img_size = int(meta["img_size"])
        self.mask_threshold = float(meta["mask_threshold"])
        low = int(meta["low_res"])
        self.prompt_encoder = SimpleNamespace(mask_input_size=(low, low))
        self.encoder = session(self.folder / enc_name, threads)
        self.decoder = session(self.folder / dec_name, threads)

    def eval(self) -> OnnxSam:
        return self

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(1,3,S,S) normalised, padded image -> (1,C,g,g) embedding."""
        out = self.encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: x.float().numpy()})[0]
        return torch.from_numpy(out)

    def run_decoder(self, features: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None,
                    box: torch.Tensor | None, mask_input: torch.Tensor | None,
                    original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt set (points ((N,2), (N,)), box (4,), mask_input (1,s,s), input frame) -> all 4
        outputs: logits (4,H,W), iou (4,), low-res logits (4,s,s)."""
        coords, labels = sparse_prompt(points, box)
        feeds = decoder_feeds(features.numpy(), coords, labels,
                              None if mask_input is None else mask_input.numpy(), original_size)
        masks, iou, low = self.decoder.run(list(DECODER_OUTPUTS), feeds)
        return masks[0], iou[0], low[0]

    def decode(self, image_embeddings: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
               boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`Sam.decode`: prompts (B of them) -> low-res logits (B,M,s,s), IoU (B,M); one graph run each."""
        b = prompt_batch(points, boxes, mask_input, image_embeddings)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        size = (self.img_size, self.img_size)
        lows, ious = [], []
        for i in range(b):
            _, iou, low = self.run_decoder(
                image_embeddings[min(i, image_embeddings.shape[0] - 1)][None],
                None if points is None else (points[0][i], points[1][i]),
                None if boxes is None else boxes[i], None if mask_input is None else mask_input[i], size)
            lows.append(low[sel])
            ious.append(iou[sel])
        return torch.from_numpy(np.stack(lows)), torch.from_numpy(np.stack(ious))


class OnnxPredictor(Predictor):
    """:class:`~samkit.predict.predictor.Predictor` on an exported folder, run by ONNX Runtime.

    ``precision``: "fp32" or "int8" (the folder's dynamically quantised graphs); ``threads``: intra-op
    threads (default :func:`samkit.runtime.pool_threads`). Same prompts, checks and
    :class:`Prediction` fields; the full-resolution logits are the graph's own ``masks`` output.
    Text prompts are not exported.
    """

    def __init__(self, folder: str | os.PathLike, precision: str = "fp32", threads: int | None = None) -> None:
        self.onnx_model = OnnxSam(folder, precision, threads)
        # OnnxSam has the part of Sam's interface the Predictor uses (encode_image, decode, geometry)
        super().__init__(cast(Sam, self.onnx_model))

    def _run(self, pts: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
             masks: torch.Tensor | None, multimask: bool,
             extra_tokens: torch.Tensor | None = None) -> tuple[np.ndarray, ...]:
        if extra_tokens is not None:
            raise SamkitError("text prompts are not part of the ONNX export: use the torch Predictor")
        b = prompt_batch(pts, boxes, masks)
        sel = slice(1, None) if multimask else slice(0, 1)
        features, original_size, _ = self._require_image()
        outs = [self.onnx_model.run_decoder(features, None if pts is None else (pts[0][i], pts[1][i]),
                                            None if boxes is None else boxes[i], None if masks is None else masks[i],
                                            original_size) for i in range(b)]
        logits, iou, low = (np.stack([o[k][sel] for o in outs]) for k in range(3))
        return logits > self.model.mask_threshold, logits, iou, low
