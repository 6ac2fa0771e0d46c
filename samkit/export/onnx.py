"""Export a SAM-family model to ONNX: the image encoder and the prompt-encoder + mask-decoder graph.

:func:`export_onnx` writes into one folder ``encoder.onnx``, ``decoder.onnx`` (the decoder takes any
number of points, an optional box as two points labelled 2 and 3, an optional mask input, and the
original image size; interface in :mod:`samkit.predict.onnx_runtime`), the browser's three graphs of the
same decoder (``decoder_image.onnx`` per image, ``decoder_lowres.onnx`` per click up to the low-res logits,
``decoder_rest.onnx`` for the grid's skipped tokens), with ``--quantize int8`` also
``encoder.int8.onnx`` / ``decoder.int8.onnx`` (ONNX Runtime dynamic quantisation of the MatMul/Gemm
weights), and ``samkit_onnx.json``: the model's geometry and the validation against PyTorch made at
export (max |logit| difference, mask agreement; for int8 also mask IoU against fp32). Files appear
only when every step succeeded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samkit.data.image_io import load_image
from samkit.data.sample import Sample
from samkit.data.staging import require_writable, staged_outputs
from samkit.errors import SamkitError
from samkit.eval.clicks import interior_point
from samkit.eval.metrics import iou
from samkit.models.evf_sam import EvfSam
from samkit.models.factored_decoder import FactoredDecoder
from samkit.models.hub import cache_dir
from samkit.models.load import load_model
from samkit.models.mask_decoder import token_masks_to_patches
from samkit.models.sam import Sam
from samkit.predict.onnx_runtime import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    IMAGE_DECODER,
    IMAGE_DECODER_INPUTS,
    INSTALL_HINT,
    LOW_RES_DECODER,
    LOW_RES_DECODER_OUTPUTS,
    LOW_RES_PROMPT_INPUTS,
    MANIFEST,
    MANIFEST_FORMAT,
    REST_DECODER,
    REST_DECODER_INPUTS,
    REST_DECODER_OUTPUTS,
    BrowserGraphs,
    OnnxPredictor,
    graph_files,
    onnxruntime_module,
    sparse_prompt,
)
from samkit.predict.predictor import Predictor
from samkit.predict.transforms import scale_boxes, scale_coords, upsample_operators, upscale_grid

DEFAULT_OPSET = 17
FP32_AGREEMENT = 0.9999  # share of mask pixels the fp32 graphs must reproduce, else the export warns
SAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "sample.png"


class EncoderGraph(nn.Module):
    """The image encoder as exported: (1,3,S,S) normalised, padded image -> (1,C,g,g) embedding."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + upsampling to the original size, with traceable inputs only
    (no optional arguments): see :mod:`samkit.predict.onnx_runtime` for the interface.

    Points are embedded as SAM's prompt encoder does (+0.5 pixel centre, Fourier features, one learned
    embedding per label, -1 = padding); ``has_mask_input`` blends the mask path with the no-mask
    embedding. The full-resolution logits are ``rows @ low_res @ cols.T`` with the bilinear operators
    of :func:`samkit.predict.transforms.upsample_operators` built in the graph from ``orig_im_size``.
    """

    up: torch.Tensor  # (S, s) buffer, see _up_matrix

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model
        s = model.prompt_encoder.mask_input_size[0]
        # The first upsampling step (low-res grid -> padded S x S input frame) does not depend on the image.
        self.register_buffer("up", self._up_matrix(model.img_size, s), persistent=False)

    @staticmethod
    def _up_matrix(img_size: int, low: int) -> torch.Tensor:
        """(S, s) bilinear operator low-res -> padded input frame (both axes are the same)."""
        up, _ = upsample_operators((img_size, img_size), (img_size, img_size), low, img_size)
        return up

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.model.prompt_encoder
        emb = pe.pe_layer.forward_with_coords(coords + 0.5, pe.input_image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, pe.not_a_point_embed.weight, emb)
        for i in range(len(pe.point_embeddings)):
            emb = emb + (lab == i).to(emb.dtype) * pe.point_embedding(i)
        return emb

    def _axis_operator(self, out_len: torch.Tensor, inp_len: torch.Tensor) -> torch.Tensor:
        """(out_len, s): bilinear resize of the first ``inp_len`` input-frame rows to ``out_len``,
        composed with the low-res -> input-frame step (each output row blends two rows of ``up``)."""
        # a 0-d tensor end is traced as a dynamic size; torch's stubs take numbers only
        i = torch.arange(out_len.to(torch.int64), dtype=torch.float32)  # type: ignore[call-overload]
        src = ((i + 0.5) * (inp_len.to(torch.float32) / out_len) - 0.5).clamp(min=0.0)
        last = inp_len - 1
        i0 = torch.minimum(src.floor().to(torch.int64), last)
        i1 = torch.minimum(i0 + 1, last)
        frac = (src - i0.to(torch.float32))[:, None]
        return (1.0 - frac) * self.up[i0] + frac * self.up[i1]

    def _dense(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """The dense prompt embedding: the mask's, or the no-mask embedding (1,C,1,1) when has_mask_input is 0
        (then a 4 x 4 mask_input suffices: both broadcast over the grid)."""
        pe = self.model.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * pe.mask_downscaling(mask_input) + (1.0 - has_mask_input) * no_mask

    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
               mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> low-res logits (1,4,4g,4g) and predicted IoU (1,4)."""
        model = self.model
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._dense(mask_input, has_mask_input)
        # the upscaling chain in one step: onnxruntime-web runs a few large operations faster than many
        tokens = image_embeddings.shape[2] * image_embeddings.shape[3]
        return model.mask_decoder.predict_masks(image_embeddings, model.dense_pe(), sparse, dense,
                                                upscale_step_tokens=tokens)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor, orig_im_size: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        low, iou = self.decode(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (model.img_size / size.max()) + 0.5).to(torch.int64)  # resized_shape
        rows = self._axis_operator(size[0], resized[0])
        cols = self._axis_operator(size[1], resized[1])
        masks = torch.matmul(torch.matmul(rows, low), cols.transpose(0, 1))
        return masks, iou, low


class ImageDecoderGraph(DecoderGraph):
    """The browser's per-image graph: :meth:`samkit.models.factored_decoder.FactoredDecoder.precompute` of
    the image embedding plus the dense prompt (no mask, or a mask fed back) -> the named per-image products
    (interface in :mod:`samkit.predict.onnx_runtime`)."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model)
        self.factored = FactoredDecoder(model.mask_decoder, model.dense_pe())

    def forward(self, image_embeddings: torch.Tensor, mask_input: torch.Tensor,  # type: ignore[override]
                has_mask_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys = (image_embeddings + self._dense(mask_input, has_mask_input)).flatten(2)[0].t()
        return tuple(self.factored.precompute(keys).values())


class LowResDecoderGraph(DecoderGraph):
    """The browser's per-click graph: :class:`DecoderGraph` from :class:`ImageDecoderGraph`'s outputs up to
    the low-res logits, for the image tokens the page reads (interface in :mod:`samkit.predict.onnx_runtime`).

    Upsampling all four masks to a 481 x 321 photo was a fifth of a sam_vit_b click in onnxruntime-web, so
    the page upsamples only the masks it shows; since each image token's low-res logits depend on that token
    alone, the upscaling chain runs only on the ``upscale_grid`` (rows, columns) of tokens that the upsampling
    to the original image reads (a landscape photo's padding rows are a third of the grid); and the image
    tokens are never formed: :class:`samkit.models.factored_decoder.FactoredDecoder` runs the transformer
    as low-rank updates of the per-image graph's products (half the multiply-adds). Its factors come out
    too, so that :class:`RestDecoderGraph` can complete the grid later (a mask fed back as ``mask_input``
    needs all of it).
    """

    def __init__(self, model: Sam) -> None:
        super().__init__(model)
        self.factored = FactoredDecoder(model.mask_decoder, model.dense_pe())

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        names = self.factored.image_names()
        image = dict(zip(names, inputs[:len(names)], strict=True))
        point_coords, point_labels, upscale_grid = inputs[len(names):]
        sparse = self._embed_points(point_coords, point_labels)
        iou, low, row_scale, factors, ct1_factor, weights = self.factored.click(image, sparse, upscale_grid)
        return iou, low, row_scale, factors, ct1_factor, weights


class RestDecoderGraph(nn.Module):
    """The decoder's logits for any image tokens from the per-image ``ct1`` and the click's factors:
    :meth:`samkit.models.factored_decoder.FactoredDecoder.rest`, token_index (n,) -> token_masks (1,M,n,4,4),
    each token's logits (the browser completes a fed-back mask's grid with it)."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.factored = FactoredDecoder(model.mask_decoder, model.dense_pe())

    def forward(self, ct1: torch.Tensor, row_scale: torch.Tensor, factors: torch.Tensor, ct1_factor: torch.Tensor,
                mask_weights: torch.Tensor, token_index: torch.Tensor) -> torch.Tensor:
        return token_masks_to_patches(self.factored.rest(ct1, row_scale, factors, ct1_factor, mask_weights,
                                                         token_index))


def export_onnx(model: Sam | EvfSam | str | os.PathLike, out: str | os.PathLike, quantize: str | None = None,
                opset: int = DEFAULT_OPSET, image: Any = None, pretrained: bool = True) -> dict:
    """Write the encoder and decoder graphs of ``model`` (a SAM-family model, or a name / checkpoint
    path for :func:`samkit.load_model`, with ``pretrained``) into the folder ``out`` and validate them
    against PyTorch on ``image`` (default: the bundled sample).

    ``quantize``: None or "int8". Returns the report also written to ``out/samkit_onnx.json``.
    Existing export files in ``out`` are replaced; nothing is written when any step fails.
    """
    onnxruntime_module()  # fail early, one line, when the extra is missing
    _require_onnx()
    if quantize not in (None, "int8"):
        raise SamkitError(f"quantize must be int8, got {quantize!r}")
    if not isinstance(model, nn.Module):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*random weights.*")
            model = load_model(model, pretrained=pretrained)
    if isinstance(model, EvfSam):  # the one model class with has_text_encoder
        raise SamkitError(f"{model.arch}: text-promptable models cannot be exported to ONNX (export its SAM backbone)")
    rgb = load_image(SAMPLE_IMAGE if image is None else image)
    require_writable(out)
    model = model.eval().float()
    with staged_outputs(out) as tmp:
        report = {"format": MANIFEST_FORMAT, "arch": model.arch, "img_size": int(model.img_size),
                  "low_res": int(model.prompt_encoder.mask_input_size[0]),
                  "mask_threshold": float(model.mask_threshold),
                  "weights": str(getattr(model, "weights", "")), "opset": opset,
                  "torch": torch.__version__, "onnxruntime": onnxruntime_module().__version__,
                  "decoder_inputs": list(DECODER_INPUTS), "decoder_outputs": list(DECODER_OUTPUTS),
                  "files": {}, "validation": {}}
        t0 = time.perf_counter()
        enc, dec = graph_files("fp32")
        _export_encoder(model, tmp / enc, opset)
        _export_decoder(model, tmp / dec, opset)
        report["files"]["fp32"] = [enc, dec]
        report.update(_export_browser_graphs(model, tmp, opset))
        if quantize:
            report["files"][quantize] = list(quantize_graphs(tmp))
        report["export_s"] = round(time.perf_counter() - t0, 2)
        (tmp / MANIFEST).write_text(json.dumps(report, indent=2) + "\n")
        report["validation"] = validate(model, tmp, rgb, precisions=list(report["files"]))
        agreement = report["validation"]["fp32"]["mask_pixel_agreement"]
        if agreement < FP32_AGREEMENT:
            warnings.warn(f"{model.arch}: the fp32 ONNX masks agree with PyTorch on only {100 * agreement:.3f} % of "
                          f"pixels (expected >= {100 * FP32_AGREEMENT:g} %); see {MANIFEST}", stacklevel=2)
        browser = report["validation"]["low_res_decoder"]["low_res_mask_agreement"]
        if browser < FP32_AGREEMENT:
            warnings.warn(f"{model.arch}: the browser's decoder graphs agree with PyTorch on only "
                          f"{100 * browser:.3f} % of low-res mask cells (expected >= {100 * FP32_AGREEMENT:g} %); "
                          f"see {MANIFEST}", stacklevel=2)
        (tmp / MANIFEST).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export and the quantiser need it)
    except ImportError:
        raise SamkitError(f"the onnx package is not installed: {INSTALL_HINT}") from None


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    """TorchScript-based exporter: the decoder's output size comes from an input's values, which it
    records as a dynamic shape (the dynamo exporter needs sizes known from input shapes)."""
    import onnx

    before = set(path.parent.iterdir())
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    extra = set(path.parent.iterdir()) - before - {path}
    if extra:  # over protobuf's 2 GB (ViT-H): the weights went to one file each; keep them in <name>.data
        graph = onnx.load(str(path))
        for f in extra:
            f.unlink()
        onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")


def _export_encoder(model: Sam, path: Path, opset: int) -> None:
    x = torch.zeros(1, 3, model.img_size, model.img_size)
    _export(EncoderGraph(model), (x,), path, [ENCODER_INPUT], [ENCODER_OUTPUT], {}, opset)


def _export_decoder(model: Sam, path: Path, opset: int) -> None:
    """``decoder.onnx``: SAM's interface."""
    g = model.prompt_encoder.image_embedding_size[0]
    s = model.prompt_encoder.mask_input_size[0]
    args = (torch.zeros(1, model.mask_decoder.transformer_dim, g, g), torch.full((1, 3, 2), 10.0),
            torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 1, s, s), torch.ones(1), torch.tensor([480.0, 640.0]))
    axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}, "masks": {2: "height", 3: "width"}}
    _export(DecoderGraph(model), args, path, list(DECODER_INPUTS), list(DECODER_OUTPUTS), axes, opset)


def _export_browser_graphs(model: Sam, folder: Path, opset: int) -> dict[str, dict]:
    """The browser's three graphs (``decoder_image.onnx``, ``decoder_lowres.onnx``, ``decoder_rest.onnx``)
    into ``folder``; returns their manifest entries."""
    c, g = model.mask_decoder.transformer_dim, model.prompt_encoder.image_embedding_size[0]
    embedding = torch.zeros(1, c, g, g)
    image = ImageDecoderGraph(model)
    image_names = image.factored.image_names()
    _export(image, (embedding, torch.zeros(1, 1, 4 * g, 4 * g), torch.ones(1)), folder / IMAGE_DECODER,
            list(IMAGE_DECODER_INPUTS), image_names, {"mask_input": {2: "mask_height", 3: "mask_width"}}, opset)
    with torch.no_grad():
        cache = image(torch.randn(1, c, g, g), torch.zeros(1, 1, 4, 4), torch.zeros(1))
    points = (torch.full((1, 3, 2), 10.0), torch.tensor([[1.0, 2.0, 3.0]]))
    grid = torch.tensor([g - 1, g - 2])  # any grid but the full one: its ends are traced as inputs
    click_inputs = [*image_names, *LOW_RES_PROMPT_INPUTS]
    low_res = LowResDecoderGraph(model)
    _export(low_res, (*cache, *points, grid), folder / LOW_RES_DECODER, click_inputs,
            list(LOW_RES_DECODER_OUTPUTS),
            {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"},
             "low_res_masks": {2: "low_res_height", 3: "low_res_width"}, "factors": {0: "rank"},
             "ct1_factor": {0: "rank"}}, opset)
    with torch.no_grad():
        click = low_res(*cache, *points, grid)
    ct1 = cache[image_names.index("ct1")]
    _export(RestDecoderGraph(model), (ct1, *click[2:], torch.tensor([0, 5, 7])), folder / REST_DECODER,
            list(REST_DECODER_INPUTS), list(REST_DECODER_OUTPUTS),
            {"factors": {0: "rank"}, "ct1_factor": {0: "rank"}, "token_index": {0: "tokens"},
             "token_masks": {2: "tokens"}}, opset)
    return {key: {"file": name, "inputs": list(inputs), "outputs": list(outputs)} for key, name, inputs, outputs in (
        ("image_decoder", IMAGE_DECODER, IMAGE_DECODER_INPUTS, image_names),
        ("low_res_decoder", LOW_RES_DECODER, click_inputs, LOW_RES_DECODER_OUTPUTS),
        ("rest_decoder", REST_DECODER, REST_DECODER_INPUTS, REST_DECODER_OUTPUTS))}


def quantize_graphs(folder: Path, precision: str = "int8") -> tuple[str, str]:
    """Dynamically quantise the fp32 graphs in ``folder``: int8 weights of MatMul/Gemm (per tensor,
    signed), activations quantised per call; convolutions stay fp32. Returns the new file names."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = graph_files(precision)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs a "consider pre-processing" hint per call
    try:
        for src, dst in zip(graph_files("fp32"), names, strict=False):
            quantize_dynamic(folder / src, folder / dst, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"],
                             use_external_data_format=(folder / (src + ".data")).exists())
    finally:
        logging.getLogger().setLevel(quiet)
    return names


def validate(model: Sam, folder: Path, rgb: np.ndarray, precisions: list[str]) -> dict:
    """Exported graphs against PyTorch on one image and a fixed prompt set (one and two points, a box,
    box + point, a fed-back mask): max |difference| of the embedding and of the logits, correlation of
    the full-resolution logits, share of pixels whose mask agrees (worst prompt), mean mask IoU."""
    ref = Predictor(model)
    ref.set_image(rgb)
    prompts = _validation_prompts(ref)
    expected = [ref.predict(**p) for p in prompts]
    assert ref.features is not None  # set_image ran
    result = {"image_hw": list(rgb.shape[:2]), "prompts": len(prompts)}
    for precision in precisions:
        pred = OnnxPredictor(folder, precision=precision)
        pred.set_image(rgb)
        got = [pred.predict(**p) for p in prompts]
        assert pred.features is not None  # set_image ran
        agree = [float(np.mean(g.masks == e.masks)) for g, e in zip(got, expected, strict=False)]
        ious = [float(iou(gm, em)) for g, e in zip(got, expected, strict=False)
                for gm, em in zip(g.masks, e.masks, strict=False)]
        result[precision] = {
            "embedding_max_abs_diff": float((pred.features - ref.features).abs().max()),
            "low_res_logit_max_abs_diff": max(float(np.abs(g.low_res_logits - e.low_res_logits).max())
                                              for g, e in zip(got, expected, strict=False)),
            "logit_max_abs_diff": max(float(np.abs(g.logits - e.logits).max())
                                      for g, e in zip(got, expected, strict=False)),
            "iou_pred_max_abs_diff": max(float(np.abs(g.scores - e.scores).max())
                                         for g, e in zip(got, expected, strict=False)),
            "logit_correlation": float(np.corrcoef(np.concatenate([g.logits.ravel() for g in got]),
                                                   np.concatenate([e.logits.ravel() for e in expected]))[0, 1]),
            "mask_pixel_agreement": min(agree),
            "mask_iou_mean": float(np.mean(ious)),
        }
    if all((folder / f).is_file() for f in (IMAGE_DECODER, LOW_RES_DECODER, REST_DECODER)):
        result["low_res_decoder"] = _validate_browser_graphs(folder, ref, prompts, expected)
    return result


def _validate_browser_graphs(folder: Path, ref: Predictor, prompts: list[dict[str, Any]],
                             expected: list[Any]) -> dict:
    """The browser's graphs, run as the page runs them (:class:`BrowserGraphs`), against PyTorch's low-res
    logits and scores for the same prompts: the part of the grid the page reads (:func:`upscale_grid`) and
    the whole grid once completed."""
    assert ref.features is not None and ref.original_size is not None and ref.input_size is not None
    graphs = BrowserGraphs(folder)
    size, frame = ref.original_size, ref.model.img_size
    g = int(ref.features.shape[-1])
    grid = upscale_grid(size, ref.input_size, 4 * g, frame, g)
    features = ref.features.numpy()
    no_mask = graphs.image(features)
    logit_diff, full_diff, score_diff = 0.0, 0.0, 0.0
    same, cells = 0, 0  # low-res cells on the same side of the threshold as PyTorch's, of all compared
    threshold = ref.model.mask_threshold
    for p, e in zip(prompts, expected, strict=True):
        points = None
        if p.get("points") is not None:
            points = (torch.from_numpy(scale_coords(np.asarray(p["points"]), size, frame)),
                      torch.as_tensor(p["labels"]))
        box = None if p.get("box") is None else torch.from_numpy(scale_boxes(np.asarray(p["box"]), size, frame))
        coords, labels = sparse_prompt(points, box)
        mask = p.get("mask_input")
        image = no_mask if mask is None else graphs.image(features, np.asarray(mask))
        out = graphs.click(image, coords, labels, grid)
        iou_pred, low = out["iou_predictions"], out["low_res_masks"]
        sel = slice(1, None) if p.get("multimask", True) else slice(0, 1)
        want = e.low_res_logits
        logit_diff = max(logit_diff, float(np.abs(low[0, sel] - want[:, :low.shape[2], :low.shape[3]]).max()))
        full = graphs.complete(image, out)[0, sel]
        full_diff = max(full_diff, float(np.abs(full - want).max()))
        same += int(np.count_nonzero((full > threshold) == (want > threshold)))
        cells += want.size
        score_diff = max(score_diff, float(np.abs(iou_pred[0, sel] - e.scores).max()))
    return {"upscale_grid": list(grid), "low_res_logit_max_abs_diff": logit_diff,
            "completed_logit_max_abs_diff": full_diff, "iou_pred_max_abs_diff": score_diff,
            "low_res_mask_agreement": same / cells}


def _validation_prompts(pred: Predictor) -> list[dict[str, Any]]:
    assert pred.original_size is not None  # set_image ran
    h, w = pred.original_size
    first: dict[str, Any] = {"points": [[w * 0.5, h * 0.5]], "labels": [1], "multimask": True}
    low = pred.predict(**first).low_res_logits
    return [
        first,
        {"points": [[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]], "labels": [1, 0], "multimask": False},
        {"box": [w * 0.2, h * 0.2, w * 0.8, h * 0.9], "multimask": False},
        {"box": [w * 0.1, h * 0.3, w * 0.6, h * 0.7], "points": [[w * 0.4, h * 0.5]], "labels": [1]},
        {"points": [[w * 0.5, h * 0.5]], "labels": [1], "mask_input": low[0][None], "multimask": False},
    ]


def first_click_agreement(reference: Predictor, candidate: Predictor, samples: Iterable[Sample]) -> np.ndarray:
    """IoU between the two predictors' masks for each object's first click, as the interactive
    benchmark makes it (the interior point farthest from the boundary, 3 masks, the best-scored one
    kept by each predictor): (n_objects,)."""
    out = []
    for sample in samples:
        reference.set_image(sample.image)
        candidate.set_image(sample.image)
        for gt in sample.masks:
            click = interior_point(gt, sample.ignore)
            if click is None:
                continue
            a, b = (p.predict(points=[[click.x, click.y]], labels=[1], multimask=True) for p in (reference, candidate))
            out.append(iou(b.masks[b.best], a.masks[a.best]))
    return np.asarray(out)


def cached_export(source: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                  device: str = "cpu") -> Path:
    """An export folder (fp32 and int8 graphs) for a model as :func:`samkit.load_model` takes it: ``source``
    itself when it is an export folder, else ``<cache dir>/onnx/<arch>-<key>/``, exported on first use.
    The key names the weights file (path, size, modification time), so new weights get a new folder."""
    if (Path(source) / MANIFEST).is_file():
        return Path(source)
    model = load_model(source, checkpoint=checkpoint, device=device)
    weights = Path(str(getattr(model, "weights", "")))
    stat = weights.stat() if weights.is_file() else None
    key = json.dumps([model.arch, str(weights.resolve()) if stat else str(weights),
                      stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0, int(model.img_size)])
    folder = cache_dir() / "onnx" / f"{model.arch}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not all((folder / f).is_file() for f in (*graph_files("fp32"), *graph_files("int8"), MANIFEST)):
        export_onnx(model, folder, quantize="int8")
    return folder
