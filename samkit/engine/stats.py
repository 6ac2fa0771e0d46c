"""The data engine's statistics (the SAM paper's metrics): seconds per mask, clicks per mask and masks per
image, per stage (the annotation's ``source``: manual / semi / auto), per annotator and per day (UTC).

Counted masks are the live ones (not deleted) that were not rejected; ``pending`` counts the semi masks
still waiting for review among them. A mask's time and clicks are the sums over its annotation events
(every save or fix that carried one): ``seconds_per_mask`` / ``clicks_per_mask`` average over the masks
that have events (``timed_masks``); a mask without events (an auto mask, an import) has no time.
``masks_per_image`` is masks / images holding at least one of them. An annotator's masks are those they
authored or spent an event on (a semi mask they reviewed); their time and clicks are their own events'.
A day is the UTC date the mask was created. :func:`project_stats` returns plain JSON-able data.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit._optional import require
from samkit.engine.store.models import SOURCES, Annotation, AnnotationEvent, Image, User

METRICS = ("masks", "images", "masks_per_image", "pending", "timed_masks", "seconds_per_mask",
           "seconds_per_mask_median", "clicks_per_mask")


@dataclass
class _Mask:
    """One counted mask: its image, stage, author, status, creation day and (user -> seconds, clicks)."""

    image_id: int
    source: str
    author_id: int | None
    pending: bool
    day: str
    work: dict[int | None, list[float]] = field(default_factory=dict)  # user id -> [seconds, clicks]


def _utc(t: datetime) -> datetime:
    """Timestamps read back from SQLite have no zone: they were written in UTC."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def metrics(masks: Iterable[_Mask], user: int | None = None, by_user: bool = False) -> dict[str, Any]:
    """The metrics of ``masks``; with ``by_user``, time and clicks of ``user``'s events only."""
    masks = list(masks)
    seconds, clicks = [], []
    for m in masks:
        work = ([m.work[user]] if user in m.work else []) if by_user else list(m.work.values())
        if work:
            seconds.append(sum(w[0] for w in work))
            clicks.append(sum(w[1] for w in work))
    images = len({m.image_id for m in masks})
    return {"masks": len(masks), "images": images,
            "masks_per_image": round(len(masks) / images, 3) if images else None,
            "pending": sum(m.pending for m in masks), "timed_masks": len(seconds),
            "seconds_per_mask": round(statistics.fmean(seconds), 3) if seconds else None,
            "seconds_per_mask_median": round(statistics.median(seconds), 3) if seconds else None,
            "clicks_per_mask": round(statistics.fmean(clicks), 3) if clicks else None}


def _by_stage(masks: list[_Mask], user: int | None = None, by_user: bool = False) -> dict[str, dict[str, Any]]:
    """Metrics per stage (every stage listed, empty ones with zero masks) and ``all``."""
    out = {s: metrics([m for m in masks if m.source == s], user, by_user) for s in SOURCES}
    out["all"] = metrics(masks, user, by_user)
    return out


def load_masks(session: Session, project_id: int) -> list[_Mask]:
    """The project's counted masks with their events' time and clicks, per user."""
    rows = session.execute(
        select(Annotation.id, Annotation.image_id, Annotation.source, Annotation.author_id, Annotation.status,
               Annotation.created_at)
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.project_id == project_id, Annotation.deleted_at.is_(None), Annotation.status != "rejected"))
    masks = {aid: _Mask(image_id, source, author, status == "pending", _utc(created).date().isoformat())
             for aid, image_id, source, author, status, created in rows}
    events = session.execute(
        select(AnnotationEvent.annotation_id, AnnotationEvent.user_id, AnnotationEvent.started_at,
               AnnotationEvent.ended_at, AnnotationEvent.clicks)
        .join(Image, Image.id == AnnotationEvent.image_id).where(Image.project_id == project_id))
    for aid, user_id, started, ended, n_clicks in events:
        mask = masks.get(aid) if aid is not None else None
        if mask is None:
            continue  # an event of a deleted or rejected mask
        work = mask.work.setdefault(user_id, [0.0, 0])
        work[0] += max(0.0, (_utc(ended) - _utc(started)).total_seconds())
        work[1] += n_clicks
    return list(masks.values())


def project_stats(session: Session, project_id: int) -> dict[str, Any]:
    """``{"project_id", "stages": {stage|all: metrics}, "annotators": [{"user_id", "username", "stages"}],
    "days": [{"date", "stages", "annotators": {username: metrics}}]}``; metrics as :data:`METRICS`
    (None where there is nothing to average)."""
    masks = load_masks(session, project_id)
    mine: dict[int, list[_Mask]] = defaultdict(list)
    for m in masks:
        for user_id in {m.author_id, *m.work}:
            if user_id is not None:
                mine[user_id].append(m)
    names = {uid: name for uid, name in session.execute(select(User.id, User.username).where(User.id.in_(list(mine))))}
    annotators = [{"user_id": uid, "username": names.get(uid), "stages": _by_stage(ms, uid, by_user=True)}
                  for uid, ms in sorted(mine.items())]
    days = []
    for day in sorted({m.day for m in masks}):
        that_day = [m for m in masks if m.day == day]
        days.append({"date": day, "stages": _by_stage(that_day),
                     "annotators": {str(names.get(uid, uid)): metrics([m for m in ms if m.day == day], uid, True)
                                    for uid, ms in sorted(mine.items()) if any(m.day == day for m in ms)}})
    return {"project_id": project_id, "stages": _by_stage(masks), "annotators": annotators, "days": days}


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`project_stats` report: per stage, per annotator and stage, per day
    and stage (rows without masks left out)."""
    head = ("", "stage", "masks", "images", "masks/image", "pending", "s/mask", "median s", "clicks/mask")
    keys = ("masks", "images", "masks_per_image", "pending", "seconds_per_mask", "seconds_per_mask_median",
            "clicks_per_mask")
    rows: list[tuple[str, ...]] = []

    def add(group: str, stages: dict[str, dict[str, Any]]) -> None:
        for stage, m in stages.items():
            if m["masks"] and (stage != "all" or sum(stages[s]["masks"] > 0 for s in SOURCES) > 1):
                rows.append((group, stage, *(_cell(m[k]) for k in keys)))

    add("project", report["stages"])
    for a in report["annotators"]:
        add(f"user {a['username'] or a['user_id']}", a["stages"])
    for day in report["days"]:
        add(day["date"], day["stages"])
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in (head, *rows)]
    return "\n".join(lines if rows else [*lines, "(no masks yet)"])


def plot_days(report: dict[str, Any], path: Path) -> Path:
    """Seconds per mask, clicks per mask and masks per image per day, one line per stage, as a PNG."""
    require("matplotlib", "eval", "the statistics plot")
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    days = [d["date"] for d in report["days"]]
    fig = Figure(figsize=(10, 3.4), dpi=110)
    for i, (key, title) in enumerate((("seconds_per_mask", "seconds per mask"), ("clicks_per_mask",
                                      "clicks per mask"), ("masks_per_image", "masks per image"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for stage in SOURCES:
            values = [d["stages"][stage][key] for d in report["days"]]
            if any(v is not None for v in values):
                ax.plot(days, [float("nan") if v is None else v for v in values], marker="o", label=stage)
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.suptitle(f"project {report['project_id']}: annotation statistics per day (UTC)")
    fig.tight_layout()
    fig.savefig(path)
    return path
