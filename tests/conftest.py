"""Shared fixtures: the read-only ``shared/`` folder beside the checkout (data + parity fixtures)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAMKIT_SHARED", REPO.parent / "shared")).resolve()
PARITY = SHARED / "parity"
DATA = SHARED / "data"
# Tests compare outputs exactly (two calls, two engines, Ray workers): a fixed thread count makes them
# reproducible; the adaptive rule itself is tested in tests/test_runtime.py. Inherited by worker processes.
os.environ.setdefault("SAMKIT_THREADS", "2")


def require_shared(path: Path) -> Path:
    """Fail (never skip) when the shared fixtures are missing: CI always has them."""
    if not path.exists():
        pytest.fail(f"shared fixture missing: {path} (set SAMKIT_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return require_shared(PARITY)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_shared(DATA)


@pytest.fixture(scope="session")
def fill_state_dict(parity_dir: Path):
    """``fill_state_dict`` from shared/parity/fill.py: deterministic weights keyed by name and shape."""
    sys.path.insert(0, str(parity_dir))
    try:
        from fill import fill_state_dict as fn
    finally:
        sys.path.remove(str(parity_dir))
    return fn


@pytest.fixture(scope="session")
def samkit_tiny_onnx(tmp_path_factory):
    """The bundled samkit_tiny exported to ONNX (fp32 and int8) once per session: (model, folder, report)."""
    import samkit
    from samkit.export.onnx import export_onnx

    model = samkit.load_model("samkit_tiny")
    folder = tmp_path_factory.mktemp("onnx") / "samkit_tiny"
    return model, folder, export_onnx(model, folder, quantize="int8")
