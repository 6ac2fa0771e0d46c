"""The JSON report every benchmark writes: a header (bench name, machine, time) and its figures."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any


def new_report(bench: str, **fields: Any) -> dict:
    """``{"bench", "machine", "time", **fields}`` for a run starting now."""
    return {"bench": bench, "machine": platform.processor() or platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}


def save_report(report: dict, out: Path) -> None:
    """Write ``report`` as indented JSON to ``out`` (folders made) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
