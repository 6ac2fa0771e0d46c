"""Benchmarks of the field: interactive clicks (NoC/NoF, mIoU@k), single point, box-prompted
mask AP on COCO, zero-shot edges on BSDS500 (ODS/OIS). Each protocol's ``evaluate`` takes a
:class:`~samkit.eval.protocol.Segmenter` (``set_image`` / ``predict``; boxes and edges need a
:class:`~samkit.eval.protocol.BatchSegmenter`, + ``predict_batch``) and returns a JSON-ready
dict; :func:`write_report` writes it as JSON plus plots. Referring segmentation (cIoU / gIoU on
RefCOCO-style expressions) takes a text segmenter or a text-promptable predictor, see :mod:`samkit.eval.refer`."""
from collections.abc import Callable

from samkit.eval import boxes, edges, interactive, refer, single_point
from samkit.eval.clicks import Click, interior_point, next_click
from samkit.eval.metrics import click_metrics, iou, miou_at_k, noc, nof
from samkit.eval.protocol import BatchSegmenter, Segmentation, Segmenter
from samkit.eval.report import write_report

evaluate_interactive = interactive.evaluate
evaluate_single_point = single_point.evaluate
evaluate_boxes = boxes.evaluate
evaluate_edges = edges.evaluate
evaluate_refer = refer.evaluate

#: CLI protocol name -> evaluation function (``samkit eval <name>``).
PROTOCOLS: dict[str, Callable[..., dict]] = {
    "interactive": evaluate_interactive,
    "single-point": evaluate_single_point,
    "boxes": evaluate_boxes,
    "edges": evaluate_edges,
    "refer": evaluate_refer,
}

__all__ = [
    "PROTOCOLS", "BatchSegmenter", "Click", "Segmentation", "Segmenter", "boxes", "click_metrics", "edges",
    "evaluate_boxes", "evaluate_edges", "evaluate_interactive", "evaluate_refer", "evaluate_single_point",
    "interactive", "interior_point", "iou", "miou_at_k", "next_click", "noc", "nof", "refer", "single_point",
    "write_report",
]
