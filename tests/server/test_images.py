"""Images: confined to the image root (no traversal, no symlink escape), uploads limited in bytes and
pixels (a decompression bomb is refused from its header), non-images refused with a clear message."""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from samkit.engine.store.images import PathEscape, confined
from samkit.engine.store.models import Image as ImageRow
from samkit.server.app import create_app
from tests.server.conftest import GRABCUT_IMAGES, Served, make_project, settings_for


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).copy()).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_listed_images_have_hash_and_size(served: Served) -> None:
    images = served.get("/api/projects/1/images", "viewer").json()
    assert sorted(i["path"] for i in images) == sorted(GRABCUT_IMAGES)
    for image in images:
        data = (served.settings.images_dir / image["path"]).read_bytes()
        assert image["sha256"] == hashlib.sha256(data).hexdigest() and image["size_bytes"] == len(data)
        assert (image["width"], image["height"]) == Image.open(io.BytesIO(data)).size
        assert served.get(f"/api/projects/1/images/{image['id']}/file", "viewer").content == data


def test_confined_refuses_traversal_and_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(_png(16, 16))
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "inside.png").write_bytes(_png(16, 16))
    (root / "link_in.png").symlink_to(root / "inside.png")
    assert confined(root, "link_in.png") == (root / "inside.png").resolve()
    for bad in ("../secret.png", "sub/../../secret.png", str(tmp_path / "secret.png"), "escape.png", ""):
        with pytest.raises(PathEscape):
            confined(root, bad)


def test_scan_skips_symlinks_leading_outside(tmp_path: Path) -> None:
    project = make_project(tmp_path, GRABCUT_IMAGES[:1])
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png(32, 32))
    (project / "images" / "link.png").symlink_to(outside)
    app = create_app(settings_for(project))
    state = app.state.samkit
    assert state.scanned == 1 and any("outside the image root" in m for m in state.refused)
    with TestClient(app):
        pass


def test_image_file_in_db_pointing_outside_is_refused(served: Served) -> None:
    """Even a tampered row cannot serve a file outside the root."""
    with served.state.sessions.begin() as s:
        s.get(ImageRow, 1).path = "../../../../etc/passwd"
    assert served.get("/api/projects/1/images/1/file").status_code == 403


def test_upload_accepts_an_image_and_refuses_the_rest(served: Served) -> None:
    data = _png(64, 48)
    r = served.post("/api/projects/1/images", files={"file": ("../../evil name.png", data, "image/png")})
    assert r.status_code == 201, r.text
    image = r.json()
    assert image["path"].startswith("uploads/") and ".." not in image["path"]
    assert (image["width"], image["height"]) == (64, 48)
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (served.settings.images_dir / image["path"]).read_bytes() == data

    r = served.post("/api/projects/1/images", files={"file": ("notes.png", b"hello, not an image", "image/png")})
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    limit = served.settings.max_upload_bytes
    r = served.post("/api/projects/1/images", files={"file": ("big.png", b"\0" * (limit + 10), "image/png")})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    r = served.post("/api/projects/1/images", files={"file": ("many.png", _png(1100, 1000), "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    bomb = _bomb_png(100_000, 100_000)
    assert len(bomb) < 200
    r = served.post("/api/projects/1/images", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    uploads = served.settings.images_dir / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == [Path(image["path"]).name]  # nothing else left
    assert served.post("/api/projects/1/images", "viewer",
                       files={"file": ("a.png", data, "image/png")}).status_code == 403
