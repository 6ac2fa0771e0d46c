"""The mask decoder in the browser (web/decoder.js on onnxruntime-web, in Debian's chromium) against
samkit.Predictor in PyTorch on a GrabCut image, its fallback to the server, and the decoder endpoints."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import samkit
from samkit.models.build_sam import SAMKIT_TINY_SIZE
from samkit.predict.transforms import low_res_cells_read, upsample_operators, upscale_grid
from samkit.server.app import create_app
from samkit.server.routers import decoder as decoder_routes
from tests.server.conftest import ADMIN_PASSWORD, Served, make_project, settings_for
from tests.server.live import chromium, live_server

pytestmark = pytest.mark.slow  # an ONNX export, a server and a browser: seconds each

IMAGE = "106024.jpg"  # 481 x 321
TEST_PAGE = "/__decoder_test__.html"  # answered by the test itself (same origin as the server)

# Runs in the page: decode each prompt (the previous result's best mask fed back when a prompt asks: its
# whole low-res grid, completed by the second graph since the photo's padding tokens are not decoded),
# masks as '0'/'1' strings for the comparison in Python.
DECODE_JS = """async ({projectId, token, imageId, prompts, options}) => {
  const { createDecoder } = await import('/decoder.js');
  const decoder = await createDecoder(projectId, token, options);
  const results = [];
  let previous = null;
  for (const p of prompts) {
    const out = await decoder.decode(imageId, p.points, p.labels, p.box, p.feedback ? previous.feedback[0] : null,
                                     { multimask: p.multimask, prepare: p.prepare ?? true });
    previous = out;
    results.push({ scores: out.scores, lowRes: out.lowRes === null ? null : (await out.lowRes).length,
                   masks: out.masks.map((m) => ({ width: m.width, height: m.height, bits: m.data.join('') })) });
  }
  return { kind: decoder.kind, reason: decoder.reason, results, isolated: globalThis.crossOriginIsolated };
}"""


def _prompts(w: int, h: int, prepare: bool = True) -> list[dict]:
    """Prompts for the comparison; ``prepare``: whether the box prompt, whose mask the next one feeds back,
    has the decoder prepare that in the background (else it is computed when the feedback is read)."""
    return [
        {"points": [[w * 0.5, h * 0.55]], "labels": [1], "box": None, "multimask": True},
        {"points": [[w * 0.5, h * 0.55], [w * 0.2, h * 0.2]], "labels": [1, 0], "box": None, "multimask": True},
        {"points": [], "labels": [], "box": [w * 0.15, h * 0.1, w * 0.85, h * 0.95], "multimask": True,
         "prepare": prepare},  # no points
        {"points": [[w * 0.45, h * 0.5]], "labels": [1], "box": None, "multimask": False, "feedback": True},
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A served project of one GrabCut image on loopback: (base URL, admin token, image file)."""
    project = make_project(tmp_path_factory.mktemp("browser"), (IMAGE,))
    app = create_app(settings_for(project))
    with live_server(app) as base:
        r = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=120)
        assert r.status_code == 200, r.text
        yield base, r.json()["token"], project / "images" / IMAGE


def _decode_in_browser(site: tuple[str, str, Path], prompts: list[dict], block_wasm: bool = False,
                       options: dict | None = None, page_path: str = TEST_PAGE) -> dict:
    """``prompts`` decoded by decoder.js in a page of the server's origin: by default a blank page
    answered by the test (not cross-origin isolated), or ``page_path`` as the server serves it."""
    base, token, _ = site
    with chromium() as browser:
        page = browser.new_page()
        page.route(f"{base}{TEST_PAGE}", lambda route: route.fulfill(body="<!doctype html><title>decoder</title>",
                                                                      content_type="text/html"))
        if block_wasm:  # onnxruntime-web cannot load its WebAssembly: the decoder must fall back
            page.route("**/*.wasm", lambda route: route.abort())
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}{page_path}")
        out = page.evaluate(DECODE_JS, {"projectId": 1, "token": token, "imageId": 1, "prompts": prompts,
                                        "options": options or {}})
        assert not errors, errors
        return out


def _reference(image: Path, prompts: list[dict]) -> list[samkit.Prediction]:
    """samkit.Predictor in PyTorch on the same image and prompts (the fed-back mask: the previous best)."""
    pred = samkit.Predictor(samkit.load_model("samkit_tiny"))
    pred.set_image(image)
    out: list[samkit.Prediction] = []
    for p in prompts:
        mask_input = out[-1].low_res_logits[out[-1].best][None] if p.get("feedback") else None
        points = p["points"] or None  # the decoder takes an empty list as no points
        out.append(pred.predict(points=points, labels=p["labels"] if points else None, box=p["box"],
                                mask_input=mask_input, multimask=p["multimask"]))
    return out


def _bits(mask: dict) -> np.ndarray:
    return (np.frombuffer(mask["bits"].encode(), np.uint8) - ord("0")).reshape(mask["height"], mask["width"])


def _assert_close(got: dict, ref: samkit.Prediction, agreement: float, score_tol: float) -> None:
    order = np.argsort(-ref.scores, kind="stable")  # the decoder answers best-scored first
    np.testing.assert_allclose(got["scores"], ref.scores[order], atol=score_tol)
    assert len(got["masks"]) == len(order)
    for mask, k in zip(got["masks"], order, strict=True):
        bits = _bits(mask)
        assert bits.shape == ref.masks[k].shape
        assert ref.masks[k].sum() > 100  # a real mask, not an empty one agreeing with an empty one
        assert np.mean(bits == ref.masks[k]) >= agreement, np.mean(bits == ref.masks[k])


def test_browser_decoder_matches_pytorch(site: tuple[str, str, Path]) -> None:
    w, h = 481, 321
    prompts = _prompts(w, h, prepare=False)  # the threaded test below has the fed-back mask prepared
    out = _decode_in_browser(site, prompts)
    assert out["kind"] == "browser", out["reason"]
    assert "onnxruntime-web" in out["reason"]
    reference = _reference(site[2], prompts)
    assert reference[0].masks.shape[1:] == (h, w)
    for got, ref in zip(out["results"], reference, strict=True):
        assert got["lowRes"] == (SAMKIT_TINY_SIZE // 4) ** 2  # low-res logits: a quarter of the input frame
        _assert_close(got, ref, agreement=0.999, score_tol=1e-3)


TAPS_JS = """async (cases) => {
  const { axisTaps, upscaleGrid } = await import('/decoder.js');
  return cases.map(([out, inp, low, img]) => {
    const t = axisTaps(out, inp, low, img);
    const other = axisTaps(img, img, low, img); // a square image's axis: every token
    return { index: Array.from(t.index), weight: Array.from(t.weight), used: t.used,
             grid: upscaleGrid(t, other, low, low / 4) };
  });
}"""


def test_javascript_upsampling_taps_are_the_python_operators(site: tuple[str, str, Path]) -> None:
    """decoder.js upsamples low-res logits with at most 3 taps per output row / column: the same weights
    as samkit.predict.transforms.upsample_operators (which the Predictor and the ONNX graph use), in float32."""
    cases = [(321, 213, 80, 320), (481, 320, 80, 320), (1024, 1024, 256, 1024), (7, 5, 80, 320), (700, 320, 80, 320),
             (321, 683, 256, 1024), (1500, 1001, 256, 1024)]
    base, _, _ = site
    with chromium() as browser:
        page = browser.new_page()
        page.route(f"{base}{TEST_PAGE}", lambda route: route.fulfill(body="<!doctype html>", content_type="text/html"))
        page.goto(f"{base}{TEST_PAGE}")
        got = page.evaluate(TAPS_JS, cases)
    for (out, inp, low, img), taps in zip(cases, got, strict=True):
        dense = np.zeros((out, low))
        np.add.at(dense, (np.repeat(np.arange(out), 3), np.asarray(taps["index"])), np.asarray(taps["weight"]))
        expected = upsample_operators((out, out), (inp, inp), low, img)[0].numpy()
        np.testing.assert_allclose(dense, expected, atol=1e-6)
        assert taps["used"] == int(np.flatnonzero(np.abs(expected).sum(0)).max()) + 1  # rows past it are padding
        assert taps["used"] == low_res_cells_read(out, inp, low, img)
        # the image tokens the decoder graph is asked for: the same as the Python side's
        assert taps["grid"] == list(upscale_grid((out, img), (inp, img), low, img, low // 4))
        assert taps["grid"][1] == low // 4 and (taps["grid"][0] < low // 4 or inp > img * 0.9)


def test_threaded_decoder_in_the_servers_isolated_page_matches_pytorch(site: tuple[str, str, Path]) -> None:
    """The server's own page is cross-origin isolated, so onnxruntime-web can run on two threads (the
    default for the large grids of ViT models; asked for here with samkit_tiny): same masks."""
    prompts = _prompts(481, 321)
    out = _decode_in_browser(site, prompts, options={"threads": 2}, page_path="/")
    assert out["isolated"] is True
    assert out["kind"] == "browser" and "2 threads" in out["reason"], out["reason"]
    for got, ref in zip(out["results"], _reference(site[2], prompts), strict=True):
        _assert_close(got, ref, agreement=0.999, score_tol=1e-3)
    default = _decode_in_browser(site, prompts[:1], page_path="/")
    assert "(WASM SIMD, 1 thread)," in default["reason"], default["reason"]  # isolated, but a small grid: 1 thread


def test_falls_back_to_the_server_when_the_wasm_cannot_load(site: tuple[str, str, Path]) -> None:
    w, h = 481, 321
    prompts = _prompts(w, h)
    out = _decode_in_browser(site, prompts, block_wasm=True)
    assert out["kind"] == "server"
    assert out["reason"].startswith("decoding on the server: the in-browser decoder could not start ("), out["reason"]
    reference = _reference(site[2], prompts)
    for got, ref in zip(out["results"], reference, strict=True):
        assert got["lowRes"] is None
        _assert_close(got, ref, agreement=0.999, score_tol=1e-3)


def test_falls_back_to_the_server_when_the_start_takes_too_long(site: tuple[str, str, Path]) -> None:
    out = _decode_in_browser(site, _prompts(481, 321)[:1], options={"startTimeoutMs": 1})
    assert out["kind"] == "server"
    assert out["reason"] == ("decoding on the server: the in-browser decoder could not start "
                             "(onnxruntime-web did not start within 0.001 s)")
    assert len(out["results"][0]["masks"]) == 3


def test_decoder_endpoints(served: Served) -> None:
    """The graph is exported once per model version into the project folder and served to writers."""
    info = served.get("/api/projects/1/decoder")
    assert info.status_code == 200, info.text
    meta = info.json()
    assert meta["model_version"] == served.state.embeddings.tag
    assert (meta["arch"], meta["img_size"], meta["low_res"], meta["mask_threshold"]) == (
        "samkit_tiny", SAMKIT_TINY_SIZE, SAMKIT_TINY_SIZE // 4, 0.0)
    assert meta["embedding_shape"] == [1, 256, SAMKIT_TINY_SIZE // 16, SAMKIT_TINY_SIZE // 16]
    assert meta["validation"]["mask_pixel_agreement"] >= 0.9999
    assert meta["low_res_validation"]["low_res_logit_max_abs_diff"] < 1e-3
    assert meta["low_res_validation"]["completed_logit_max_abs_diff"] < 1e-3
    assert meta["inputs"][:3] == ["t2i_k", "t2i_v", "i2t_q"]
    assert meta["inputs"][-3:] == ["point_coords", "point_labels", "upscale_grid"]
    assert meta["outputs"] == ["iou_predictions", "low_res_masks", "row_scale", "factors", "ct1_factor",
                               "mask_weights"]
    graph = served.get(meta["graph_url"])  # the browser's graph: up to the low-res logits
    assert graph.status_code == 200
    assert len(graph.content) == meta["graph_bytes"]
    folder = served.settings.project_dir / "onnx" / meta["model_version"]
    assert (folder / "decoder_lowres.onnx").read_bytes() == graph.content
    stamp = (folder / "decoder_lowres.onnx").stat().st_mtime_ns
    assert served.get(meta["graph_url"]).status_code == 200
    assert (folder / "decoder_lowres.onnx").stat().st_mtime_ns == stamp  # not exported again
    for url, name in ((meta["image_graph_url"], "decoder_image.onnx"), (meta["rest_graph_url"], "decoder_rest.onnx")):
        other = served.get(url)  # the per-image graph, and the one for the tokens the per-click graph skipped
        assert other.status_code == 200 and other.content == (folder / name).read_bytes()
    sam_interface = served.get("/api/projects/1/decoder.onnx")  # SAM's interface, for other tools
    assert sam_interface.content == (folder / "decoder.onnx").read_bytes()
    embedding = served.get("/api/projects/1/images/1/embedding")
    assert embedding.headers["X-Model-Version"] == meta["model_version"]
    assert [int(v) for v in embedding.headers["X-Embedding-Shape"].split(",")] == meta["embedding_shape"]
    assert served.get("/api/projects/1/decoder", role="viewer").status_code == 403
    assert served.client.get("/api/projects/1/decoder.onnx").status_code == 401
    assert served.get("/api/projects/2/decoder").status_code == 404


def test_an_export_with_other_browser_graphs_is_done_again(served: Served) -> None:
    """A project folder exported by an earlier samkit (its browser graphs took the image tokens) is not served
    to this decoder.js: the manifest's interface is checked and the export is done again."""
    meta = served.get("/api/projects/1/decoder").json()
    folder = served.settings.project_dir / "onnx" / meta["model_version"]
    manifest = folder / "samkit_onnx.json"
    assert decoder_routes._ready(folder)
    current = manifest.read_text()
    stamp = (folder / "decoder_lowres.onnx").stat().st_mtime_ns
    older = json.loads(current)
    older["low_res_decoder"]["outputs"] = ["iou_predictions", "low_res_masks", "image_tokens", "mask_weights"]
    older["rest_decoder"]["inputs"] = ["image_tokens", "mask_weights"]
    manifest.write_text(json.dumps(older))
    assert not decoder_routes._ready(folder)
    decoder_routes._exports.pop(folder, None)  # as after a restart
    again = served.get("/api/projects/1/decoder")
    assert again.status_code == 200 and again.json()["outputs"] == meta["outputs"]
    assert (folder / "decoder_lowres.onnx").stat().st_mtime_ns != stamp  # exported again
    assert decoder_routes._ready(folder)


def test_first_export_runs_in_the_background(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that finds no export starts it and answers 503 (the page decodes on the server) while it runs."""
    monkeypatch.setattr(decoder_routes, "EXPORT_WAIT_S", 0.0)
    r = served.get("/api/projects/1/decoder")
    assert r.status_code == 503
    assert r.json()["detail"] == "the in-browser decoder is being prepared (a one-time ONNX export of the model)"
    assert r.headers["Retry-After"] == "30"
    monkeypatch.setattr(decoder_routes, "EXPORT_WAIT_S", 300.0)  # a bound for a loaded machine
    assert served.get("/api/projects/1/decoder").status_code == 200


def test_static_types_of_the_runtime(served: Served) -> None:
    """onnxruntime-web's files (copied by make from the npm package) are served with the types browsers demand."""
    client: TestClient = served.client
    for name, kind in (("decoder.js", "text/javascript"), ("vendor/ort.wasm.min.mjs", "text/javascript"),
                       ("vendor/ort-wasm-simd-threaded.mjs", "text/javascript"),
                       ("vendor/ort-wasm-simd-threaded.wasm", "application/wasm")):
        r = client.get(f"/{name}")
        assert r.status_code == 200, f"/{name}: {r.status_code} (run `make venv` to fetch onnxruntime-web)"
        assert r.headers["content-type"].split(";")[0] == kind, (name, r.headers["content-type"])
