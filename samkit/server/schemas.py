"""Request bodies of the API (pydantic); responses are plain dicts built by :mod:`samkit.server.views`."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ID = 2**31 - 1  # row ids, versions and counts fit a 32-bit INTEGER on every database


class Login(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["admin", "annotator", "viewer"]


class NewLabel(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    color: str | None = Field(default=None, max_length=16)


class MaskInput(BaseModel):
    """An earlier prediction fed back: its ``prediction_id`` and which of its masks."""

    prediction_id: str = Field(max_length=64)
    index: int = Field(default=0, ge=0, le=2)


class PredictRequest(BaseModel):
    """Prompts in original-image pixels: points (N, 2) x, y with labels (N,) 1 fg / 0 bg; box x0, y0, x1, y1."""

    model_config = ConfigDict(allow_inf_nan=False)

    points: list[list[float]] | None = Field(default=None, max_length=64)
    labels: list[int] | None = Field(default=None, max_length=64)
    box: list[float] | None = Field(default=None, min_length=4, max_length=4)
    mask_input: MaskInput | None = None
    text: str | None = Field(default=None, max_length=256)
    multimask: bool | None = None
    refine: bool | None = None  # run the server's refiner (None: when one is configured)


class Event(BaseModel):
    """How a mask was made (the paper's statistics)."""

    started_at: datetime
    ended_at: datetime
    clicks: int = Field(ge=0, le=100_000)
    prompt_kinds: list[Literal["point", "box", "mask", "text", "brush"]] = []


class NewAnnotation(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    rle: dict[str, Any]
    label_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    source: Literal["manual", "semi", "auto"] = "manual"
    score: float | None = Field(default=None, ge=0, le=1)
    event: Event | None = None


class AnnotationChange(BaseModel):
    """A change of an annotation seen at ``version``; fields left out stay."""

    version: int = Field(ge=1, le=MAX_ID)
    rle: dict[str, Any] | None = None
    label_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    status: Literal["accepted", "pending", "rejected"] | None = None
    event: Event | None = None


class ImageStatus(BaseModel):
    status: Literal["new", "in_progress", "done"]


class NewJob(BaseModel):
    kind: Literal["encode", "auto", "semi", "export", "import_coco", "retrain"]
    params: dict[str, Any] = {}
