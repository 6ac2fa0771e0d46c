"""Result files: ``<name>.json`` plus PNG plots (mIoU vs clicks, edge PR curve); progress display."""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from samkit._optional import require

T = TypeVar("T")


LOG_EVERY = 10  # samples per progress line in "log" mode


def track(items: Iterable[T], max_items: int | None = None, progress: bool | str = False,
          desc: str = "") -> Iterator[T]:
    """The first ``max_items`` (all when None) of ``items``, with a tqdm bar when ``progress`` is True, or
    one stderr line per :data:`LOG_EVERY` samples (count, elapsed, rate) when it is ``"log"`` (for logs)."""
    total = len(items) if isinstance(items, Sized) else None
    if max_items is not None:
        items = itertools.islice(items, int(max_items))
        total = int(max_items) if total is None else min(total, int(max_items))
    if not progress:
        return iter(items)
    if progress == "log":
        return _log_lines(items, total, desc)
    return iter(tqdm(items, total=total, desc=desc, unit="img"))


def _log_lines(items: Iterable[T], total: int | None, desc: str) -> Iterator[T]:
    t0 = time.perf_counter()
    for done, item in enumerate(items, start=1):
        yield item
        if done % LOG_EVERY == 0 or done == total:
            elapsed = time.perf_counter() - t0
            print(f"{desc}: {done}/{total if total is not None else '?'} samples, {elapsed:.1f} s "
                  f"({done / elapsed if elapsed > 0 else 0.0:.2f}/s)", file=sys.stderr, flush=True)


def write_report(results: dict, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write ``results`` to ``out_dir/<name>.json`` and its plots: ``<name>_miou.png`` (mIoU vs
    number of clicks) when it has ``miou_at_k``, ``<name>_pr.png`` (precision vs recall) when it
    has ``pr_curve``. Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    written = [path]
    if results.get("miou_at_k"):
        written.append(plot_miou_curve(results, out / f"{name}_miou.png"))
    if results.get("pr_curve"):
        written.append(plot_pr_curve(results, out / f"{name}_pr.png"))
    return written


def plot_miou_curve(results: dict, path: Path) -> Path:
    """mIoU after k clicks (k = 1..K) with the NoC thresholds as horizontal lines."""
    miou = results["miou_at_k"]
    fig, ax = _figure()
    ax.plot(np.arange(1, len(miou) + 1), miou, marker="o", ms=3, label=results.get("model", "mIoU"))
    for key, value in results.get("noc", {}).items():
        ax.axhline(float(key) / 100, color="grey", lw=0.6, ls="--")
        ax.text(len(miou), float(key) / 100, f" NoC@{key} {value:.2f}" if value is not None else "",
                va="bottom", ha="right", fontsize=7, color="grey")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="number of clicks", ylabel="mIoU", ylim=(0, 1), xlim=(1, max(len(miou), 2)),
           title=f"{results.get('dataset', '')} interactive segmentation".strip())
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr_curve(results: dict, path: Path) -> Path:
    """Precision vs recall over thresholds, iso-F contours and the ODS / OIS points."""
    pr = results["pr_curve"]
    fig, ax = _figure()
    r = np.linspace(0.01, 1, 200)
    for f in np.arange(0.1, 1.0, 0.1):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="lightgrey", lw=0.6)
    label = f"ODS {results['ods']['f']:.3f}  OIS {results['ois']['f']:.3f}"
    ax.plot(pr["recall"], pr["precision"], lw=1.5, label=label)
    ax.plot(results["ods"]["recall"], results["ods"]["precision"], "o", ms=5, label="ODS")
    ax.plot(results["ois"]["recall"], results["ois"]["precision"], "s", ms=5, label="OIS")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), aspect="equal",
           title=f"{results.get('dataset', '')} boundaries".strip())
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _figure():
    require("matplotlib", "eval", "plots")
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(5, 4), dpi=120)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
