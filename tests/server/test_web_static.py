"""The browser tool's files are served at / by the API's own process, without a token, and every ES
module the pages import is there (a missing file would only show in a browser)."""
from __future__ import annotations

import re

from samkit.server.app import ISOLATION_HEADERS, WEB_DIR
from tests.server.conftest import Served

IMPORT = re.compile(r"""^import .* from '\./([\w./-]+)';$""", re.M)


def test_tool_served_at_root(served: Served) -> None:
    r = served.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in r.text
    r = served.client.get("/app.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert served.client.get("/api/health").json() == {"ok": True}  # the API still comes first


def test_every_imported_module_exists() -> None:
    pages = sorted(WEB_DIR.glob("*.js"))
    assert {"app.js", "annotate.js", "jobs.js", "decoder.js", "rle.js"} <= {p.name for p in pages}
    for page in pages:
        for target in IMPORT.findall(page.read_text(encoding="utf-8")):
            assert (WEB_DIR / target).is_file(), f"{page.name} imports a missing ./{target}"


def test_tool_files_are_served_cross_origin_isolated(served: Served) -> None:
    """onnxruntime-web runs threads only in an isolated page: the page and the worker module it starts
    carry COOP/COEP; the API's answers (fetched, never documents) need not."""
    for path in ("/", "/app.js", "/decoder.js", "/vendor/ort-wasm-simd-threaded.mjs"):
        r = served.client.get(path)
        assert r.status_code == 200, path
        for name, value in ISOLATION_HEADERS.items():
            assert r.headers.get(name) == value, (path, name)
    assert "Cross-Origin-Embedder-Policy" not in served.client.get("/api/health").headers
