"""Prediction: prompts -> masks (COCO RLE, bbox, area) and predicted IoU, from the image's cached
embedding, refined by the server's refiner when one is configured (``refine``: false for SAM's own masks).
Each answer has a ``prediction_id`` so a later request can feed a mask back (``mask_input``): SAM's low-res
logits, also after refining. A ``Server-Timing`` header (shown by browsers' developer tools) gives the
milliseconds spent in the model (waiting for it included) and in the whole route function."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from samkit.data.masks import mask_geometry
from samkit.errors import SamkitError
from samkit.server.deps import DB, WRITERS, Id, State, recent_project_image, require
from samkit.server.routers.images import image_file
from samkit.server.schemas import PredictRequest

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(require(*WRITERS))])


@router.post("/images/{image_id}/predict", response_model=dict[str, Any])
def predict(project_id: Id, image_id: Id, body: PredictRequest, state: State,
            session: DB) -> JSONResponse:
    started = time.perf_counter()
    image = recent_project_image(state, project_id, image_id, session)
    session.close()  # nothing more to read: do not hold a connection during model work
    mask_input = None
    if body.mask_input is not None:
        earlier = state.recall(body.mask_input.prediction_id)
        if earlier is None or earlier[0] != image_id or body.mask_input.index >= len(earlier[1]):
            raise HTTPException(422, "mask_input: unknown prediction_id or index for this image")
        mask_input = earlier[1][body.mask_input.index][None]
    if body.points is None and body.box is None and body.text is None and mask_input is None:
        raise HTTPException(422, "give at least one prompt: points, box, mask_input or text")
    path = image_file(state, image)
    pred = state.embeddings.get(path, image.sha256)
    refine = state.refiner is not None if body.refine is None else body.refine
    model_started = time.perf_counter()
    try:
        with state.embeddings.compute:
            if refine:
                pred = state.embeddings.refining(path, image.sha256)
            out = pred.predict(points=body.points, labels=body.labels, box=body.box, mask_input=mask_input,
                               multimask=body.multimask, text=body.text, refine=refine)
    except SamkitError as exc:
        raise HTTPException(422, str(exc)) from None
    model_ms = 1000 * (time.perf_counter() - model_started)
    order = np.argsort(-out.scores)
    masks = [{"index": int(i), **mask_geometry(out.masks[i]), "score": float(out.scores[i])} for i in order]
    # already JSON types: a JSONResponse skips FastAPI's validate-and-encode pass over the masks (issue 18)
    answer = {"prediction_id": state.remember(image_id, out.low_res_logits), "masks": masks,
              "model_version": state.embeddings.tag, "refined": refine}
    timing = f"model;dur={model_ms:.3f}, route;dur={1000 * (time.perf_counter() - started):.3f}"
    return JSONResponse(answer, headers={"Server-Timing": timing})
