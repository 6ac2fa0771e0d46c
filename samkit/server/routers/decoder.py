"""The prompt-encoder + mask-decoder graph of the server's model as ONNX, for decoding clicks in the
browser (``web/decoder.js`` on onnxruntime-web runs the decoder split in three: ``decoder_image.onnx``
once per image, ``decoder_lowres.onnx`` per click for the part of the low-res grid it upsamples,
``decoder_rest.onnx`` to complete a grid later; ``decoder.onnx``, SAM's interface, is served too): exported
once per
model version with :func:`samkit.export.onnx.export_onnx` into ``<project>/onnx/<model tag>/`` (in the
background, started by the first request: minutes for ViT models, during which the page decodes on the
server), then served from there. The image embeddings come from the images router
(``GET .../images/{id}/embedding``)."""
from __future__ import annotations

import mimetypes
import threading
from concurrent import futures
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from samkit.errors import SamkitError
from samkit.export.onnx import export_onnx
from samkit.predict.onnx_runtime import (
    IMAGE_DECODER,
    LOW_RES_DECODER,
    LOW_RES_DECODER_OUTPUTS,
    MANIFEST,
    REST_DECODER,
    REST_DECODER_INPUTS,
    graph_files,
    read_manifest,
)
from samkit.server.deps import DB, WRITERS, Id, State, require
from samkit.server.routers.projects import get_project
from samkit.server.state import ServerState

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(require(*WRITERS))])
DECODER = graph_files("fp32")[1]
BROWSER_FILES = (DECODER, IMAGE_DECODER, LOW_RES_DECODER, REST_DECODER, MANIFEST)
EXPORT_WAIT_S = 30.0  # a request waits this long for the first export; after that the page decodes on the server
_exports: dict[Path, futures.Future] = {}  # export folder -> the export running or done in this process
_exports_lock = threading.Lock()

# onnxruntime-web's files under web/vendor/: browsers refuse modules and streamed WASM of other types,
# whatever the host's /etc/mime.types says.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")


def _ready(folder: Path) -> bool:
    """Every file there, and the browser graphs' interface the page's decoder.js speaks (an export by an
    earlier samkit, e.g. before the factored graphs of 2026-12-06, is done again)."""
    if not all((folder / f).is_file() for f in BROWSER_FILES):
        return False
    try:
        meta = read_manifest(folder)
    except SamkitError:
        return False
    return (meta.get("low_res_decoder", {}).get("outputs") == list(LOW_RES_DECODER_OUTPUTS)
            and meta.get("rest_decoder", {}).get("inputs") == list(REST_DECODER_INPUTS))


def _start_export(state: ServerState, folder: Path) -> futures.Future:
    """Export in a background thread (under the click and encoder locks: the server's model work waits
    meanwhile)."""
    future: futures.Future = futures.Future()

    def work() -> None:
        try:
            with state.embeddings.compute, state.embeddings.encoding:
                export_onnx(state.model, folder)
            future.set_result(folder)
        except BaseException as exc:  # handed to the requests waiting on it
            future.set_exception(exc)

    threading.Thread(target=work, name="samkit-onnx-export", daemon=True).start()
    return future


def decoder_folder(state: ServerState, wait_s: float | None = None) -> Path:
    """The export folder of the server's model version, ``<project>/onnx/<model tag>/``. The first request
    starts the export (once per process; a failed one is not retried until restart) and waits for it up to
    ``wait_s`` (default :data:`EXPORT_WAIT_S`); HTTP 503 with the reason while it runs or when the model
    cannot be exported (e.g. without the onnx extra): the page then decodes on the server."""
    folder = state.settings.project_dir / "onnx" / state.embeddings.tag
    if _ready(folder):
        return folder
    with _exports_lock:
        future = _exports.get(folder)
        if future is None:
            future = _exports[folder] = _start_export(state, folder)
    try:
        future.result(timeout=EXPORT_WAIT_S if wait_s is None else wait_s)
    except futures.TimeoutError:
        raise HTTPException(503, "the in-browser decoder is being prepared (a one-time ONNX export of the model)",
                            headers={"Retry-After": "30"}) from None
    except SamkitError as exc:
        raise HTTPException(503, f"the decoder cannot run in the browser: {exc}") from None
    return folder


@router.get("/decoder")
def decoder_info(project_id: Id, state: State, session: DB) -> dict:
    """What the browser needs besides the graph: model version (matches the embedding's
    X-Model-Version), input frame, low-res mask size, threshold, the per-click graph's URL, interface and
    size, the per-image and rest graphs' URLs, and the PyTorch validation (``validation``: SAM's interface
    graph; ``low_res_validation``: the browser's three graphs)."""
    get_project(project_id, session)
    session.close()  # the export may take a while: hold no connection
    folder = decoder_folder(state)
    meta = read_manifest(folder)
    model = state.model
    grid = model.prompt_encoder.image_embedding_size
    return {"model_version": state.embeddings.tag, "arch": meta["arch"], "img_size": meta["img_size"],
            "low_res": meta["low_res"], "mask_threshold": meta["mask_threshold"],
            "inputs": meta["low_res_decoder"]["inputs"], "outputs": meta["low_res_decoder"]["outputs"],
            "embedding_shape": [1, int(model.mask_decoder.transformer_dim), *map(int, grid)],
            "graph_url": f"/api/projects/{project_id}/{LOW_RES_DECODER}",
            "graph_bytes": (folder / LOW_RES_DECODER).stat().st_size,
            "image_graph_url": f"/api/projects/{project_id}/{IMAGE_DECODER}",
            "rest_graph_url": f"/api/projects/{project_id}/{REST_DECODER}",
            "validation": meta.get("validation", {}).get("fp32", {}),
            "low_res_validation": meta.get("validation", {}).get("low_res_decoder", {})}


@router.get("/decoder.onnx")
def decoder_graph(project_id: Id, state: State, session: DB) -> FileResponse:
    """The fp32 decoder graph with SAM's ONNX interface (:mod:`samkit.predict.onnx_runtime`)."""
    return _graph(DECODER, project_id, state, session)


@router.get("/decoder_image.onnx")
def image_decoder_graph(project_id: Id, state: State, session: DB) -> FileResponse:
    """The browser's per-image graph: the decoder's prompt-independent work (run again for a mask fed back)."""
    return _graph(IMAGE_DECODER, project_id, state, session)


@router.get("/decoder_lowres.onnx")
def low_res_decoder_graph(project_id: Id, state: State, session: DB) -> FileResponse:
    """The browser's per-click graph: the rest of the decoder up to the low-res logits, for the image tokens
    the page asks for."""
    return _graph(LOW_RES_DECODER, project_id, state, session)


@router.get("/decoder_rest.onnx")
def rest_decoder_graph(project_id: Id, state: State, session: DB) -> FileResponse:
    """The browser's second graph: the other image tokens' low-res logits (a fed-back mask's whole grid)."""
    return _graph(REST_DECODER, project_id, state, session)


def _graph(name: str, project_id: int, state: ServerState, session: DB) -> FileResponse:
    get_project(project_id, session)
    session.close()
    return FileResponse(decoder_folder(state) / name, media_type="application/octet-stream",
                        headers={"Cache-Control": "no-cache", "X-Model-Version": state.embeddings.tag})
