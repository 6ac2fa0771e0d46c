"""The shared RefCOCO subset rewritten in the refer toolkit's own files, for the refer reader and CLI tests."""
from __future__ import annotations

import json
import pickle
from pathlib import Path


def toolkit_copy(subset: Path, folder: Path, extra_refs: list | None = None) -> Path:
    """The shared subset rewritten as the refer toolkit stores RefCOCO: refs(unc).p + instances.json."""
    records = json.loads((subset / "refs.json").read_text())
    images, anns, refs, cats = {}, [], [], {}
    for k, r in enumerate(records):
        images[r["image_id"]] = Path(r["image"]).name
        cats.setdefault(r["category"], len(cats) + 1)
        anns.append({"id": 1000 + k, "image_id": r["image_id"], "segmentation": r["segmentation_polygon_px"],
                     "bbox": r["bbox_xywh"], "category_id": cats[r["category"]], "iscrowd": 0})
        refs.append({"ref_id": r["ref_id"], "ann_id": 1000 + k, "image_id": r["image_id"], "split": r["split"],
                     "category_id": cats[r["category"]], "file_name": f"COCO_{r['image_id']}_{k}.jpg",
                     "sentences": [{"sent_id": s["sent_id"], "sent": s["sent"], "raw": s["sent"],
                                    "tokens": s["sent"].split()} for s in r["sentences"]]})
    folder.mkdir(parents=True)
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs + (extra_refs or [])))
    (folder / "instances.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f} for i, f in images.items()], "annotations": anns,
        "categories": [{"id": c, "name": n} for n, c in cats.items()]}))
    return folder / "refs(unc).p"
