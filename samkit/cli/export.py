"""``samkit export onnx MODEL --out DIR``: the image encoder and the prompt decoder as ONNX graphs
(:mod:`samkit.export.onnx`; needs ``pip install samkit[onnx]``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from samkit.cli.args import positive_int
from samkit.cli.common import ModelChoice, check_writable, setup_runtime
from samkit.export.onnx import DEFAULT_OPSET, export_onnx
from samkit.models.load import load_model
from samkit.predict.onnx_runtime import MANIFEST

DESCRIPTION = (
    "Write MODEL's image encoder (encoder.onnx) and prompt encoder + mask decoder (decoder.onnx: any number of "
    "points, an optional box as two points labelled 2 and 3, an optional mask input, the original image size; "
    "SAM's ONNX interface), the browser's split of the same decoder (decoder_image.onnx, decoder_lowres.onnx, "
    "decoder_rest.onnx: per image, per click up to the low-res logits, the skipped tokens), into "
    "--out, with --quantize int8 also dynamically quantised copies (*.int8.onnx), and "
    f"{MANIFEST}: the model's geometry and the check made against PyTorch (max |logit| difference, mask "
    "agreement). Run them with samkit.predict.onnx_runtime.OnnxPredictor(DIR) or `samkit segment --runtime "
    "onnxruntime`. Nothing is written when a step fails.")


def add_parser(commands: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = commands.add_parser(name, help=help, description=DESCRIPTION)
    p.add_argument("format", choices=["onnx"], help="export format")
    p.add_argument("model", metavar="MODEL", help="registry name (see 'samkit models') or a checkpoint file")
    p.add_argument("--checkpoint", metavar="PATH", help="checkpoint file to load into the architecture MODEL")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--quantize", choices=["int8"], help="also write int8 graphs (dynamic quantisation)")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, metavar="N", help="ONNX opset")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for torch (default: torch's choice, every available core)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    setup_runtime(args)
    check_writable(args.out)
    source, checkpoint = ModelChoice(args.model, args.checkpoint).model_or_checkpoint(args.model)
    model = load_model(source, checkpoint=checkpoint)
    report = export_onnx(model, args.out, quantize=args.quantize, opset=args.opset)
    print(f"{report['arch']}: {', '.join(sum(report['files'].values(), []))} -> {args.out} ({report['export_s']} s)")
    validation = report["validation"]
    for precision in report["files"]:
        v = validation[precision]
        print(f"  {precision}: max |logit diff| {v['logit_max_abs_diff']:.2g}, mask pixels agreeing "
              f"{100 * v['mask_pixel_agreement']:.3f} %, mask IoU {v['mask_iou_mean']:.4f} (vs PyTorch fp32)")
    if "low_res_decoder" in validation:
        v = validation["low_res_decoder"]
        print(f"  browser graphs ({report['low_res_decoder']['file']} ...): max |low-res logit diff| "
              f"{v['low_res_logit_max_abs_diff']:.2g} (completed grid {v['completed_logit_max_abs_diff']:.2g}), "
              f"max |score diff| {v['iou_pred_max_abs_diff']:.2g} (vs PyTorch fp32)")
    return 0
