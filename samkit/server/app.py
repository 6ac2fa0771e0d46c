"""The FastAPI application of ``samkit serve``: :func:`create_app` (routers, error mapping, lifespan
that starts and stops the job worker)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm.exc import StaleDataError
from starlette.types import Scope

from samkit import __version__
from samkit.engine.store.annotations import VersionConflict
from samkit.engine.store.images import PathEscape
from samkit.errors import SamkitError
from samkit.server.routers import annotations as annotation_routes
from samkit.server.routers import auth, decoder, image_counts, images, jobs, models, predict, projects
from samkit.server.settings import Settings
from samkit.server.state import ServerState
from samkit.server.views import annotation_view

WEB_DIR = Path(__file__).resolve().parent / "web"  # the browser annotation tool, served at /
# Cross-origin isolation: onnxruntime-web decodes clicks on several threads only in an isolated page
# (SharedArrayBuffer), which needs these headers on the page and on the worker scripts it starts.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class IsolatedStaticFiles(StaticFiles):
    """The tool's files (pages, scripts, onnxruntime-web's modules and WASM) with :data:`ISOLATION_HEADERS`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(ISOLATION_HEADERS)
        return response


def create_app(settings: Settings, state: ServerState | None = None) -> FastAPI:
    """The app for ``settings`` (the database is opened and migrated, the admin and images made, now);
    the job worker runs while the app is being served (its lifespan)."""
    state = state or ServerState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.jobs.start()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="samkit annotation server", version=__version__, lifespan=lifespan)
    app.state.samkit = state
    # predict first: the router's routes are matched in order, and a click is the request that comes most often
    for module in (predict, auth, projects, images, image_counts, annotation_routes, jobs, models, decoder):
        app.include_router(module.router)

    @app.exception_handler(VersionConflict)
    async def conflict(_: Request, exc: VersionConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "current": annotation_view(exc.current)}, status_code=409)

    @app.exception_handler(StaleDataError)
    async def stale(_: Request, exc: StaleDataError) -> JSONResponse:
        return JSONResponse({"detail": "the annotation was changed by someone else meanwhile: reload it"},
                            status_code=409)

    @app.exception_handler(PathEscape)
    async def escape(_: Request, exc: PathEscape) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(SamkitError)
    async def bad_input(_: Request, exc: SamkitError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    app.mount("/", IsolatedStaticFiles(directory=WEB_DIR, html=True), name="web")  # last: the API routes come first
    return app
