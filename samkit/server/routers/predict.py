"""Prediction: prompts -> masks (COCO RLE, bbox, area) and predicted IoU, from the image's cached
embedding, refined by the server's refiner when one is configured (``refine``: false for SAM's own masks).
Each answer has a ``prediction_id`` so a later request can feed a mask back (``mask_input``): SAM's low-res
logits, also after refining. A ``Server-Timing`` header (shown by browsers' developer tools) gives the
milliseconds spent in the model (waiting for it included) and in the whole route function.

A click on an image whose embedding is in memory decodes on the event loop when it is the only click being
answered and the model is free (no thread hand-overs: issue 18's round trip); encoder runs, file reads, text
encoders, clicks arriving together and a model held elsewhere (an export) go to the thread pool."""
from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from samkit.data.masks import mask_geometry
from samkit.engine.embeddings import EmbeddingCache
from samkit.engine.store.models import Image
from samkit.errors import SamkitError
from samkit.predict.predictor import Prediction
from samkit.server.deps import WRITERS, Id, State, recent_project_image, require
from samkit.server.routers.images import image_file
from samkit.server.schemas import PredictRequest
from samkit.server.state import ServerState

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(require(*WRITERS))])


def _image(state: ServerState, project_id: int, image_id: int) -> Image:
    """The image row, from ``state.recent_images`` or the database (I/O: called in the thread pool)."""
    with state.sessions() as session:
        return recent_project_image(state, project_id, image_id, session)


def _decode(embeddings: EmbeddingCache, path: Path, image: Image, body: PredictRequest,
            mask_input: np.ndarray | None, refine: bool, holding: bool = False) -> tuple[Prediction, float]:
    """The click on ``image`` at ``path`` -> (prediction, ms in the model, waiting for it included);
    ``holding``: the caller holds ``embeddings.compute``."""
    pred = embeddings.get(path, image.sha256)
    started = time.perf_counter()
    try:
        with nullcontext() if holding else embeddings.compute:
            if refine:
                pred = embeddings.refining(path, image.sha256)
            out = pred.predict(points=body.points, labels=body.labels, box=body.box, mask_input=mask_input,
                               multimask=body.multimask, text=body.text, refine=refine)
    except SamkitError as exc:
        raise HTTPException(422, str(exc)) from None
    return out, 1000 * (time.perf_counter() - started)


@router.post("/images/{image_id}/predict", response_model=dict[str, Any])
async def predict(project_id: Id, image_id: Id, body: PredictRequest, state: State) -> JSONResponse:
    started = time.perf_counter()
    image = state.recent_images.get((project_id, image_id))
    if image is None:
        image = await run_in_threadpool(_image, state, project_id, image_id)
    mask_input = None
    if body.mask_input is not None:
        earlier = state.recall(body.mask_input.prediction_id)
        if earlier is None or earlier[0] != image_id or body.mask_input.index >= len(earlier[1]):
            raise HTTPException(422, "mask_input: unknown prediction_id or index for this image")
        mask_input = earlier[1][body.mask_input.index][None]
    if body.points is None and body.box is None and body.text is None and mask_input is None:
        raise HTTPException(422, "give at least one prompt: points, box, mask_input or text")
    refine = state.refiner is not None if body.refine is None else body.refine
    path, embeddings = image_file(state, image), state.embeddings
    state.clicks_in_flight += 1
    try:
        await asyncio.sleep(0)  # clicks read in the same turn of the event loop count each other first
        if (state.clicks_in_flight == 1 and body.text is None and embeddings.ready(image.sha256, refine)
                and embeddings.compute.acquire(blocking=False)):
            # the only click, a decode from an embedding in memory, the model free: on the event loop, without
            # the two thread hand-overs (~0.5 ms of a samkit_tiny click here; issue 18)
            try:
                out, model_ms = _decode(embeddings, path, image, body, mask_input, refine, holding=True)
            finally:
                embeddings.compute.release()
        else:  # other clicks (the route function's threads overlap with the model), an encoder run or a file
            # read, a text encoder, the model busy (an export): in the thread pool
            out, model_ms = await run_in_threadpool(_decode, embeddings, path, image, body, mask_input, refine)
    finally:
        state.clicks_in_flight -= 1
    order = np.argsort(-out.scores)
    masks = [{"index": int(i), **mask_geometry(out.masks[i]), "score": float(out.scores[i])} for i in order]
    # already JSON types: a JSONResponse skips FastAPI's validate-and-encode pass over the masks (issue 18)
    answer = {"prediction_id": state.remember(image_id, out.low_res), "masks": masks,
              "model_version": embeddings.tag, "refined": refine}
    timing = f"model;dur={model_ms:.3f}, route;dur={1000 * (time.perf_counter() - started):.3f}"
    # the low-res logits of the grid's padding (for a mask fed back) are made after the answer is sent
    settle = None if out.low_res.ready else BackgroundTask(state.settle, out.low_res)
    return JSONResponse(answer, headers={"Server-Timing": timing}, background=settle)
