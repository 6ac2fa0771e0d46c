"""What one running server holds: the database, the project, the model and its embeddings, the job
runner, the login limiter and recent predictions (for feeding a mask back as ``mask_input``).

The model is the project's current model version (``Settings.model`` names the first one of a new project);
:meth:`ServerState.sync_model` follows a switch made by a retrain (a job, or ``samkit engine retrain`` in
another process): a new model object and a new embedding cache, keyed by the new version."""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import select

from samkit.engine import accounts
from samkit.engine.embeddings import EmbeddingCache
from samkit.engine.jobs import JobContext, JobRunner
from samkit.engine.store.db import open_store
from samkit.engine.store.images import scan
from samkit.engine.store.models import Image, ModelVersion, Project, Token, User
from samkit.engine.versions import current_version, load_version
from samkit.models.load import load_model
from samkit.predict.predictor import LowResLogits
from samkit.refine.file import load_refiner
from samkit.server.recent import Recent
from samkit.server.settings import Settings

RECENT_PREDICTIONS = 256
SYNC_INTERVAL_S = 1.0  # how often requests look for a switched model version


@lru_cache(maxsize=4)
def shared_model(name: str) -> Any:
    """One model object per name in this process (read-only at inference: safe to share)."""
    return load_model(name)


class ServerState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = shared_model(settings.model)  # model and refiner first: a bad one leaves no project behind
        self.refiner = load_refiner(settings.refiner) if settings.refiner else None
        if self.refiner is not None:
            self.refiner.check_model(self.model)
        settings.project_dir.mkdir(parents=True, exist_ok=True)
        settings.images_dir.mkdir(parents=True, exist_ok=True)
        self.engine, self.sessions = open_store(settings.db_url)
        with self.sessions.begin() as s:
            self.generated_password = accounts.ensure_admin(s, settings.admin_password)
            project = self._project(s)
            assert project.model_version_id is not None  # every project is made with one (_project)
            self.project_id, self.model_version_id = project.id, project.model_version_id
            self.scanned, self.refused = scan(s, project.id, settings.images_dir, settings.max_pixels)
        self.embeddings = self._embedding_cache(self.model, self.model_version_id)
        self.jobs = JobRunner(self.sessions, JobContext(settings.images_dir, settings.project_dir, self.model,
                                                        self.model_version_id, self.embeddings, engine=settings.engine,
                                                        workers=settings.workers, ray_address=settings.ray_address),
                              settings.job_poll_s)
        self.limiter = accounts.LoginLimiter(settings.login_attempts, settings.login_window_s)
        self.recent_tokens: Recent[tuple[User, Token]] = Recent()  # bearer token -> its user and row (deps.py)
        self.recent_images: Recent[Image] = Recent()  # (project id, image id) -> image row (deps.py)
        self._predictions: OrderedDict[str, tuple[int, LowResLogits]] = OrderedDict()
        self._predictions_lock = threading.Lock()
        self.clicks_in_flight = 0  # predict requests being answered (read and written on the event loop only)
        self._model_source, self._synced_at, self._switch_lock = settings.model, 0.0, threading.Lock()
        self.jobs.ctx.sync = lambda: self.sync_model(force=True)
        self.sync_model(force=True)  # an existing project predicts with its current version (maybe retrained)

    def _project(self, s) -> Project:  # noqa: ANN001 (a Session)
        """The project of this folder (named after it), with its model version, made at the first start."""
        name = self.settings.project_dir.name or "project"
        project = s.scalar(select(Project).where(Project.name == name))
        if project is None:
            version = ModelVersion(name=self.settings.model)
            s.add(version)
            s.flush()
            project = Project(name=name, model_version_id=version.id)
            s.add(project)
            s.flush()
        return project

    def _embedding_cache(self, model: Any, version_id: int) -> EmbeddingCache:
        """A new embedding cache of ``model`` (version ``version_id``, tag ``mv<id>``)."""
        return EmbeddingCache(model, f"mv{version_id}", self.settings.project_dir / "embeddings",
                              self.settings.embedding_cache, self.refiner)

    def sync_due(self) -> bool:
        """Whether :meth:`sync_model` would look at the database now (once per :data:`SYNC_INTERVAL_S`)."""
        return time.monotonic() - self._synced_at >= SYNC_INTERVAL_S

    def sync_model(self, force: bool = False) -> bool:
        """Predict with the project's current model version: when it is not the loaded one, load it and start
        a new embedding cache (tagged ``mv<id>``: no embedding of the old version is served). Looks at most
        once per :data:`SYNC_INTERVAL_S` unless ``force``. Returns whether the model changed."""
        if not force and not self.sync_due():
            return False
        self._synced_at = time.monotonic()
        with self.sessions() as s:
            version = current_version(s, self.project_id)
        if (version.id, version.file or version.name) == (self.model_version_id, self._model_source):
            return False
        with self._switch_lock:
            if (version.id, version.file or version.name) == (self.model_version_id, self._model_source):
                return False  # switched by another thread meanwhile
            model = shared_model(version.name) if version.file is None else \
                load_version(self.settings.project_dir, version)
            if self.refiner is not None:
                self.refiner.check_model(model)
            old = self.embeddings
            self.embeddings = self._embedding_cache(model, version.id)
            self.model, self.model_version_id, self._model_source = model, version.id, version.file or version.name
            ctx = self.jobs.ctx
            ctx.model, ctx.model_version_id, ctx.embeddings = model, version.id, self.embeddings
            with self._predictions_lock:  # earlier low-res logits came from the other model
                self._predictions.clear()
        old.close()
        return True

    def remember(self, image_id: int, low_res: LowResLogits) -> str:
        """Keep a prediction's (C, s, s) low-res logits (``Prediction.low_res``), which a later request may feed
        back; returns its id. The predict route has them made after its answer is sent (:meth:`settle`), so an
        answer does not wait for the logits of the grid's padding."""
        key = secrets.token_hex(8)
        with self._predictions_lock:
            self._predictions[key] = (image_id, low_res)
            while len(self._predictions) > RECENT_PREDICTIONS:
                self._predictions.popitem(last=False)
        return key

    def settle(self, low_res: LowResLogits) -> None:
        """Make remembered low-res logits now, under the model's lock (after an answer)."""
        with self.embeddings.compute:
            low_res.value  # noqa: B018 (made at the first read)

    def recall(self, key: str) -> tuple[int, np.ndarray] | None:
        """(image id, low-res logits (C, s, s)) of a remembered prediction, None when unknown or forgotten."""
        with self._predictions_lock:
            found = self._predictions.get(key)
        if found is None:
            return None
        image_id, low_res = found
        if not low_res.ready:  # fed back before settle() ran
            self.settle(low_res)
        return image_id, low_res.value

    def close(self) -> None:
        self.jobs.stop()
        self.embeddings.close()
        self.engine.dispose()
