"""The prompt-encoder + mask-decoder graph of the server's model as ONNX, for decoding clicks in the
browser (``web/decoder.js`` on onnxruntime-web): exported once per model version with
:func:`samkit.export.onnx.export_onnx` into ``<project>/onnx/<model tag>/``, then served from there.
The image embeddings come from the images router (``GET .../images/{id}/embedding``)."""
from __future__ import annotations

import mimetypes
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from samkit.errors import SamkitError
from samkit.export.onnx import export_onnx
from samkit.predict.onnx_runtime import MANIFEST, graph_files, read_manifest
from samkit.server.deps import DB, WRITERS, Id, State, require
from samkit.server.routers.projects import get_project
from samkit.server.state import ServerState

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(require(*WRITERS))])
DECODER = graph_files("fp32")[1]
_export_lock = threading.Lock()  # one export at a time; requests that wait then find it done

# onnxruntime-web's files under web/vendor/: browsers refuse modules and streamed WASM of other types,
# whatever the host's /etc/mime.types says.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")


def decoder_folder(state: ServerState) -> Path:
    """The export folder of the server's model version, exported now when it is not there yet
    (HTTP 503 with the reason when the model cannot be exported, e.g. without the onnx extra)."""
    folder = state.settings.project_dir / "onnx" / state.embeddings.tag
    if (folder / DECODER).is_file() and (folder / MANIFEST).is_file():
        return folder
    with _export_lock:
        if not ((folder / DECODER).is_file() and (folder / MANIFEST).is_file()):
            try:
                with state.embeddings.compute:  # all model work under the one lock
                    export_onnx(state.model, folder)
            except SamkitError as exc:
                raise HTTPException(503, f"the decoder cannot run in the browser: {exc}") from None
    return folder


@router.get("/decoder")
def decoder_info(project_id: Id, state: State, session: DB) -> dict:
    """What the browser needs besides the graph: model version (matches the embedding's
    X-Model-Version), input frame, low-res mask size, threshold, graph size and the PyTorch validation."""
    get_project(project_id, session)
    session.close()  # the export may take a while: hold no connection
    folder = decoder_folder(state)
    meta = read_manifest(folder)
    model = state.model
    grid = model.prompt_encoder.image_embedding_size
    return {"model_version": state.embeddings.tag, "arch": meta["arch"], "img_size": meta["img_size"],
            "low_res": meta["low_res"], "mask_threshold": meta["mask_threshold"],
            "inputs": meta["decoder_inputs"], "outputs": meta["decoder_outputs"],
            "embedding_shape": [1, int(model.mask_decoder.transformer_dim), *map(int, grid)],
            "graph_url": f"/api/projects/{project_id}/decoder.onnx", "graph_bytes": (folder / DECODER).stat().st_size,
            "validation": meta.get("validation", {}).get("fp32", {})}


@router.get("/decoder.onnx")
def decoder_graph(project_id: Id, state: State, session: DB) -> FileResponse:
    """The fp32 decoder graph (interface in :mod:`samkit.predict.onnx_runtime`)."""
    get_project(project_id, session)
    session.close()
    return FileResponse(decoder_folder(state) / DECODER, media_type="application/octet-stream",
                        headers={"Cache-Control": "no-cache", "X-Model-Version": state.embeddings.tag})
