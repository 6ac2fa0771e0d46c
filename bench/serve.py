"""Annotation server under load: N concurrent clients clicking for T seconds on loopback.

    .venv/bin/python bench/serve.py [--clients 20] [--seconds 30] [--model samkit_tiny] [--out bench/results/serve.json]

Starts ``samkit serve`` on a temporary project of GrabCut photos (a real uvicorn process), signs in,
walks the queue as an annotator would (the first click on each next image, with the queue's background
encoding, against a cold first click), encodes every image (an ``encode`` job: clicks then hit cached
embeddings), then each client
thread sends predict requests with one random foreground point on a random image, back to back, for
``--seconds``. Reports p50 / p95 / max HTTP predict latency, requests, errors, and the bare
``Predictor.predict`` latency on the same images in this process (the speed goal: HTTP <= 1.3x bare).

With ``--clients 1`` (the round-trip goal) clicks alternate in blocks of ten on the same images and points:
sent with httpx, sent again with the standard library's ``http.client`` (a thinner client), then run on bare
predictors in this process, so all figures see the same machine load (this host is shared and its speed
drifts within seconds); ``http_over_bare_p50`` (httpx) and ``raw_client_over_bare_p50`` (http.client) are
the medians of the per-block ratios, and ``server_side_ms`` the medians of the answers' ``Server-Timing``
(the model's part and the whole route function's). Each client keeps one keep-alive connection;
``client_overhead_ms`` is httpx's round trip to ``/api/health`` (no model, no database).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _report import new_report, save_report

from samkit.server.threaded import free_port

REPO = Path(__file__).resolve().parents[1]
GRABCUT = REPO.parent / "shared" / "data" / "GrabCut" / "data_GT"
IMAGES = ("106024.jpg", "124080.jpg", "153077.jpg", "153093.jpg", "181079.jpg")
PASSWORD = "bench-admin-pass"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def start_server(project: Path, port: int, model: str) -> subprocess.Popen:
    env = os.environ | {"SAMKIT_ADMIN_PASSWORD": PASSWORD}
    proc = subprocess.Popen([sys.executable, "-m", "samkit.cli", "serve", str(project), "--port", str(port),
                             "--model", model], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("samkit serve did not start")


def click_load(base: str, headers: dict, images: list[dict], clients: int, seconds: float) -> tuple[list, list]:
    """(latencies in s, errors) of ``clients`` threads clicking for ``seconds``."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            while time.monotonic() < stop:
                image = rng.choice(images)
                point = [rng.uniform(0, image["width"] - 1), rng.uniform(0, image["height"] - 1)]
                t = time.perf_counter()
                try:
                    r = http.post(f"/api/projects/1/images/{image['id']}/predict",
                                  json={"points": [point], "labels": [1]})
                    ok = r.status_code == 200
                    message = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, message = False, f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(message))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing`` header -> {name: milliseconds} (``model;dur=5.6, route;dur=6.1``)."""
    out = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";dur=")
        if rest:
            out[name] = float(rest.split(";")[0])
    return out


class RawClient:
    """POSTs JSON on one keep-alive connection with the standard library's ``http.client`` (reconnecting when
    the server closed an idle one): a thinner client than httpx, whose own request building and response
    parsing add about half a millisecond to every round trip on this machine."""

    def __init__(self, base: str, headers: dict) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.headers = headers | {"Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port)

    def post(self, path: str, body: dict) -> tuple[int, Any, dict[str, float]]:
        """(status, JSON answer, the answer's Server-Timing in ms)."""
        data = json.dumps(body)
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, body=data, headers=self.headers)
                r = self.conn.getresponse()
                return r.status, json.loads(r.read()), server_timing(r.getheader("Server-Timing"))
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def paired_clicks(base: str, headers: dict, images: list[dict], root: Path, model_name: str,
                  seconds: float, block: int = 10) -> dict[str, Any]:
    """One client: blocks of ``block`` clicks sent with httpx, the same clicks with :class:`RawClient`, then
    on bare predictors in this process. Returns latencies (s) per client and bare, the per-block ratios of
    medians (HTTP over bare) per client, and errors."""
    import samkit  # noqa: PLC0415 -- torch only when this mode runs

    model = samkit.load_model(model_name)
    bare: dict[int, samkit.Predictor] = {}
    for image in images:
        bare[image["id"]] = samkit.Predictor(model)
        bare[image["id"]].set_image(root / image["path"])
    rng = random.Random(0)
    lat: dict[str, list[float]] = {"httpx": [], "raw": [], "bare": [], "model": [], "route": []}
    ratios: dict[str, list[float]] = {"httpx": [], "raw": []}
    errors: list[str] = []
    raw = RawClient(base, headers)
    stop = time.monotonic() + seconds
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        while time.monotonic() < stop:
            clicks = []
            for _ in range(block):
                image = rng.choice(images)
                clicks.append((f"/api/projects/1/images/{image['id']}/predict", image["id"],
                               {"points": [[rng.uniform(0, image["width"] - 1), rng.uniform(0, image["height"] - 1)]],
                                "labels": [1]}))
            got: dict[str, list[float]] = {"httpx": [], "raw": [], "bare": [], "model": [], "route": []}
            for path, _, body in clicks:
                t = time.perf_counter()
                r = http.post(path, json=body)
                r.json()
                elapsed = time.perf_counter() - t
                (got["httpx"].append(elapsed) if r.status_code == 200 else
                 errors.append(f"HTTP {r.status_code}: {r.text[:200]}"))
            for path, _, body in clicks:
                t = time.perf_counter()
                status, answer, timing = raw.post(path, body)
                elapsed = time.perf_counter() - t
                if status != 200:
                    errors.append(f"HTTP {status}: {answer}")
                    continue
                got["raw"].append(elapsed)
                got["model"].append(timing["model"] / 1000)
                got["route"].append(timing["route"] / 1000)
            for _, image_id, body in clicks:
                t = time.perf_counter()
                bare[image_id].predict(points=body["points"], labels=body["labels"])
                got["bare"].append(time.perf_counter() - t)
            if got["httpx"] and got["raw"]:
                for key, values in got.items():
                    lat[key] += values
                for key in ratios:
                    ratios[key].append(statistics.median(got[key]) / statistics.median(got["bare"]))
    raw.close()
    return {"latencies": lat, "ratios": ratios, "errors": errors}


def next_image_flow(base: str, headers: dict, dwell_s: float) -> dict:
    """The annotator's path through a fresh project (nothing encoded yet): the first image is clicked cold
    (its encoder runs in the request); then for each next image of the queue, after ``dwell_s`` seconds of
    work on the previous one (the image marked done, the queue read again: that starts encoding the next
    ones in the background), the latency of its first click. Returns ms figures."""
    click = {"points": [[20.0, 20.0]], "labels": [1]}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        images = sorted(http.get("/api/projects/1/images").json(), key=lambda i: i["id"])  # the queue's order,
        first, rest = images[0], images[1:]  # read without starting its background encoding
        t = time.perf_counter()
        http.post(f"/api/projects/1/images/{first['id']}/predict", json=click).raise_for_status()
        cold = time.perf_counter() - t
        http.get("/api/projects/1/queue").raise_for_status()  # the tool shows the queue: the next get encoded
        latencies = []
        previous = first
        for image in rest:
            time.sleep(dwell_s)
            http.put(f"/api/projects/1/images/{previous['id']}/status", json={"status": "done"}).raise_for_status()
            http.get("/api/projects/1/queue").raise_for_status()  # opening the next image reads the queue
            t = time.perf_counter()
            http.post(f"/api/projects/1/images/{image['id']}/predict", json=click).raise_for_status()
            latencies.append(time.perf_counter() - t)
            previous = image
    return {"cold_first_click_ms": 1000 * cold, "dwell_s": dwell_s,
            "next_image_first_click_ms": [round(1000 * v, 1) for v in latencies],
            "next_image_first_click_ms_median": 1000 * statistics.median(latencies)}


def client_overhead(base: str, headers: dict, count: int = 100) -> float:
    """Median round trip (s) of ``/api/health`` on one keep-alive httpx connection."""
    out = []
    with httpx.Client(base_url=base, headers=headers) as http:
        for _ in range(count):
            t = time.perf_counter()
            http.get("/api/health")
            out.append(time.perf_counter() - t)
    return statistics.median(out)


def bare_predict(model_name: str, paths: list[Path], clicks: int) -> list[float]:
    """Latencies of Predictor.predict (one random point, multimask) with the embedding set."""
    import samkit  # noqa: PLC0415 -- torch only after the server is measured

    pred = samkit.Predictor(samkit.load_model(model_name))
    rng, out = random.Random(0), []
    for path in paths:
        pred.set_image(path)
        h, w = pred.original_size
        for _ in range(clicks):
            t = time.perf_counter()
            pred.predict(points=[[rng.uniform(0, w - 1), rng.uniform(0, h - 1)]], labels=[1])
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--model", default="samkit_tiny")
    ap.add_argument("--dwell", type=float, default=2.0, help="seconds spent on an image before the next one")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        (project / "images").mkdir(parents=True)
        for name in IMAGES:
            shutil.copy(GRABCUT / name, project / "images" / name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(project, port, args.model)
        try:
            token = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['token']}"}
            flow = next_image_flow(base, headers, args.dwell)
            print(f"next image: first click {flow['next_image_first_click_ms_median']:.1f} ms (median), "
                  f"cold {flow['cold_first_click_ms']:.1f} ms", flush=True)
            job = httpx.post(f"{base}/api/projects/1/jobs", json={"kind": "encode"}, headers=headers).json()
            while httpx.get(f"{base}/api/projects/1/jobs/{job['id']}", headers=headers).json()["state"] in (
                    "queued", "running"):
                time.sleep(0.2)
            images = httpx.get(f"{base}/api/projects/1/images", headers=headers).json()
            overhead = client_overhead(base, headers)
            started = time.perf_counter()
            paired: dict[str, Any] = {}
            if args.clients == 1:
                paired = paired_clicks(base, headers, images, project / "images", args.model, args.seconds)
                latencies, bare, errors = paired["latencies"]["httpx"], paired["latencies"]["bare"], paired["errors"]
            else:
                latencies, errors = click_load(base, headers, images, args.clients, args.seconds)
            wall = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        if args.clients != 1:
            bare = bare_predict(args.model, [project / "images" / n for n in IMAGES], clicks=20)
    p50 = _percentile(latencies, 0.5)
    report = new_report(
        "serve", model=args.model, clients=args.clients, seconds=args.seconds, cpus=os.cpu_count(),
        requests=len(latencies), errors=len(errors), first_errors=errors[:5],
        throughput_per_s=len(latencies) / wall,
        predict_http_ms={"p50": 1000 * p50, "p95": 1000 * _percentile(latencies, 0.95),
                         "max": 1000 * max(latencies, default=float("nan"))},
        predict_bare_ms={"p50": 1000 * statistics.median(bare), "p95": 1000 * _percentile(bare, 0.95)},
        client_overhead_ms=1000 * overhead, load_avg=os.getloadavg(), next_image=flow,
        note="HTTP latency under N concurrent clients includes queueing behind the one model lock; "
             "single-client runs (--clients 1) alternate HTTP and bare clicks: the figure for the 1.3x goal")
    if paired:
        raw = paired["latencies"]["raw"]
        report["predict_raw_client_ms"] = {"p50": 1000 * _percentile(raw, 0.5), "p95": 1000 * _percentile(raw, 0.95)}
        side = {key: 1000 * statistics.median(paired["latencies"][key]) for key in ("model", "route")}
        report["server_side_ms"] = side
        report["http_over_bare_p50"] = statistics.median(paired["ratios"]["httpx"])
        report["raw_client_over_bare_p50"] = statistics.median(paired["ratios"]["raw"])
        print(f"server side: model {side['model']:.2f} ms, route {side['route']:.2f} ms; "
              f"http.client round trip {report['predict_raw_client_ms']['p50']:.2f} ms")
        print(f"over bare (median of per-block ratios): httpx {report['http_over_bare_p50']:.3f}x, "
              f"http.client {report['raw_client_over_bare_p50']:.3f}x")
    else:
        report["http_over_bare_p50"] = p50 / statistics.median(bare)
    save_report(report, args.out)
    print(f"{len(latencies)} requests, {len(errors)} errors, p50 {report['predict_http_ms']['p50']:.1f} ms, "
          f"p95 {report['predict_http_ms']['p95']:.1f} ms (bare p50 {report['predict_bare_ms']['p50']:.1f} ms)")


if __name__ == "__main__":
    main()
