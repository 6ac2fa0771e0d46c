"""Click-to-mask latency in Chromium: the in-browser decoder (web/decoder.js on onnxruntime-web) vs the
server round trip (POST .../predict from the same page), for samkit_tiny and sam_vit_b's decoder.

    .venv/bin/python bench/browser.py [--clicks 30] [--warmup 10] [--models samkit_tiny,sam_vit_b] [--out FILE]

For each model: starts ``samkit serve`` on a temporary project of one GrabCut photo (sam_vit_b with random
weights, saved to a temporary checkpoint: timing only), signs in, has the image encoded and the decoder
graph exported first, then opens a page of the server's origin in Debian's chromium (Playwright,
/usr/bin/chromium) and times ``decode()`` for ``--clicks`` seeded random foreground clicks (3 masks each,
thresholded at the original size) with the in-browser decoder (the page cross-origin isolated as the
server's pages are, so onnxruntime-web runs on every core; and without isolation, one thread) and with
the server's. The in-browser decoder upsamples the best of the 3 masks before decode() returns and the
other two when first read: that extra time is reported apart (``other_two_candidates_median_ms``), and so
is the work it does in the background after decode() returns (``out.ready``: the masks' whole low-res
grids, for a mask fed back, and the best mask's first-block work for the next click;
``background_median_ms``): awaited before the next click, as a person's next click would find it done.
After each timed click, a second click as the annotation tool sends it (both points, the second one
negative, the shown mask fed back as ``maskInput``, one mask out) is timed too (``second_click``).
Before timing, one click fetches the image's embedding and ``--warmup`` clicks let Chromium optimise the
WebAssembly (its first code is a quick baseline compile; both reported apart). Reports median, p90, min
and max ms per click. Issue 19's goal: in-browser decode <= 50 ms for sam_vit_b's decoder on the 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
from _report import new_report, save_report
from playwright.sync_api import Route, sync_playwright
from safetensors.torch import save_file
from serve import GRABCUT, PASSWORD, start_server

import samkit
from samkit.server.app import ISOLATION_HEADERS
from samkit.server.threaded import free_port

CHROMIUM = "/usr/bin/chromium"
IMAGE = "106024.jpg"
PAGE = "/__bench_browser__.html"
TIMEOUT = 900  # s: the first embedding and export of sam_vit_b on a loaded 2-core machine

# (report key, decoder kind, headers of the page): the page as the server serves its pages (cross-origin
# isolated: onnxruntime-web on every core), the same page without those headers (one WebAssembly thread,
# for contrast) and the server's predict endpoint from the same page.
VARIANTS = (("in_browser", "browser", ISOLATION_HEADERS), ("in_browser_one_thread", "browser", {}),
            ("server", "server", {}))

# In the page: one click that fetches the embedding, warm-up clicks (the browser compiles the hot
# WebAssembly functions again, optimised, in the background meanwhile), then the timed clicks.
CLICKS_JS = """async ({token, clicks, warmup, server}) => {
  const { createDecoder } = await import('/decoder.js');
  let t = performance.now();
  const decoder = await createDecoder(1, token, { server });
  const createMs = performance.now() - t;
  const [w, h] = [clicks.width, clicks.height];
  t = performance.now();
  await decoder.decode(1, [[w / 2, h / 2]], [1], null, null);
  const firstMs = performance.now() - t;
  const warmupMs = [];
  // a second click, as the annotation tool sends it: both points, the shown mask fed back, one mask
  const refine = (x, y, i, out) => decoder.decode(1, [[x, y], clicks.second[i]], [1, 0], null, out.feedback[0],
                                                  { multimask: false });
  for (const [i, [x, y]] of clicks.points.slice(0, warmup).entries()) {
    t = performance.now();
    const out = await decoder.decode(1, [[x, y]], [1], null, null);
    warmupMs.push(performance.now() - t);
    await out.ready;
    await (await refine(x, y, i, out)).ready;
  }
  const ms = [];
  const restMs = []; // the other two candidates, which the in-browser decoder upsamples when first read
  const backgroundMs = []; // then the decoder's background work (the whole grids, the next click's start)
  const refineMs = []; // then the second click
  for (const [i, [x, y]] of clicks.points.entries()) {
    if (i < warmup) continue;
    t = performance.now();
    const out = await decoder.decode(1, [[x, y]], [1], null, null);
    ms.push(performance.now() - t);
    if (out.masks.length !== 3 || out.masks[0].data.length !== w * h) throw new Error('unexpected masks');
    t = performance.now();
    if (out.masks[1].data.length + out.masks[2].data.length !== 2 * w * h) throw new Error('unexpected masks');
    restMs.push(performance.now() - t);
    t = performance.now();
    await out.ready; // the background work for the next click: as a person's next click would find it, done
    backgroundMs.push(performance.now() - t);
    t = performance.now();
    const second = await refine(x, y, i, out);
    refineMs.push(performance.now() - t);
    if (second.masks.length !== 1 || second.masks[0].data.length !== w * h) throw new Error('unexpected masks');
    await second.ready;
  }
  return { kind: decoder.kind, reason: decoder.reason, createMs, firstMs, warmupMs, ms, restMs, backgroundMs, refineMs,
           crossOriginIsolated: globalThis.crossOriginIsolated, cores: navigator.hardwareConcurrency };
}"""


def _summary(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
            "min_ms": round(ordered[0], 2), "max_ms": round(ordered[-1], 2), "clicks": len(ms)}


def _blank_page(headers: dict) -> Callable[[Route], None]:
    """A route handler answering a blank page of the server's origin with ``headers``."""
    def fulfill(route: Route) -> None:
        route.fulfill(body="<!doctype html><title>bench</title>", content_type="text/html", headers=headers or None)
    return fulfill


def _model_source(name: str, folder: Path) -> str:
    """samkit_tiny as bundled; any other registry model with random weights in a checkpoint file."""
    if name == "samkit_tiny":
        return name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = samkit.load_model(name, pretrained=False)
    path = folder / f"{name}_random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def bench_model(name: str, clicks: int, warmup: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="samkit-bench-browser-") as tmp:
        project = Path(tmp) / "project"
        (project / "images").mkdir(parents=True)
        (project / "images" / IMAGE).write_bytes((GRABCUT / IMAGE).read_bytes())
        source = _model_source(name, Path(tmp))
        port = free_port()
        proc = start_server(project, port, source)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
                token = http.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()["token"]
                auth = {"Authorization": f"Bearer {token}"}
                t = time.perf_counter()
                image = http.get("/api/projects/1/images/1", headers=auth).json()
                embedding = http.get("/api/projects/1/images/1/embedding", headers=auth)
                embedding.raise_for_status()
                encode_s = time.perf_counter() - t
                t = time.perf_counter()
                info = http.get("/api/projects/1/decoder", headers=auth)
                while info.status_code == 503 and time.perf_counter() - t < TIMEOUT:  # exporting in the background
                    time.sleep(2)
                    info = http.get("/api/projects/1/decoder", headers=auth)
                info.raise_for_status()
                export_s = time.perf_counter() - t
            rng = random.Random(seed)
            w, h = image["width"], image["height"]
            points = [[rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)] for _ in range(warmup + clicks)]
            second = [[rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)] for _ in range(warmup + clicks)]
            arg = {"token": token, "warmup": warmup,
                   "clicks": {"width": w, "height": h, "points": points, "second": second}}
            runs = {}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                for run, kind, headers in VARIANTS:
                    page = browser.new_page()
                    page.route(f"{base}{PAGE}", _blank_page(headers))
                    page.goto(f"{base}{PAGE}")
                    out = page.evaluate(CLICKS_JS, arg | {"server": kind == "server"})
                    page.close()
                    if out["kind"] != kind:
                        raise SystemExit(f"{name}: expected the {kind} decoder, got {out['kind']}: {out['reason']}")
                    runs[run] = {**_summary(out["ms"]), "create_ms": round(out["createMs"], 1),
                                  "first_click_ms": round(out["firstMs"], 1),
                                  "warmup_clicks_ms": [round(v, 1) for v in out["warmupMs"]], "reason": out["reason"],
                                  "cross_origin_isolated": out["crossOriginIsolated"], "cores": out["cores"],
                                  "other_two_candidates_median_ms": round(statistics.median(out["restMs"]), 2),
                                  "background_median_ms": round(statistics.median(out["backgroundMs"]), 2),
                                  "second_click": _summary(out["refineMs"])}
                browser.close()
            meta = info.json()
            return {"model": name, "weights": "bundled" if source == name else "random (timing only)",
                    "image": IMAGE, "image_hw": [h, w], "embedding_bytes": len(embedding.content),
                    "decoder_graph_bytes": meta["graph_bytes"], "first_encode_s": round(encode_s, 1),
                    "first_export_s": round(export_s, 1), **runs,
                    "browser_vs_server": round(runs["server"]["median_ms"] / runs["in_browser"]["median_ms"], 2)}
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--models", default="samkit_tiny,sam_vit_b")
    ap.add_argument("--warmup", type=int, default=10, help="untimed clicks first (reported apart)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/browser.json"))
    args = ap.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing: `make services` installs Debian's chromium")
    report = new_report("browser", clicks=args.clicks, warmup=args.warmup, seed=args.seed, chromium=CHROMIUM,
                        load_average_at_start=list(os.getloadavg()), cpus=os.cpu_count(),
                        threads_env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "SAMKIT_THREADS")},
                        python=platform.python_version(), goal_ms={"sam_vit_b in-browser median": 50}, models=[])
    for name in args.models.split(","):
        result = bench_model(name, args.clicks, args.warmup, args.seed)
        report["models"].append(result)
        b, one, s = result["in_browser"], result["in_browser_one_thread"], result["server"]
        print(f"{name}: in-browser median {b['median_ms']} ms (p90 {b['p90_ms']}, {b['reason']}; the other two "
              f"candidates {b['other_two_candidates_median_ms']} ms more, the work in the background "
              f"{b['background_median_ms']} ms more; one thread {one['median_ms']} ms; a second click with the "
              f"mask fed back {b['second_click']['median_ms']} ms), "
              f"server round trip median {s['median_ms']} ms (p90 {s['p90_ms']}; "
              f"second click {s['second_click']['median_ms']} ms)")
    report["load_average_at_end"] = list(os.getloadavg())
    save_report(report, args.out)


if __name__ == "__main__":
    main()
