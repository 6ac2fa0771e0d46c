"""Speed on this CPU, each figure beside a same-run reference: torch vs ONNX Runtime, fp32 vs int8, under load.

    .venv/bin/python bench/speed.py [--quick] [--out bench/results/speed.json]

1. GEMM probe: a 4096x256 @ 256x1024 fp32 matmul (this machine's floor, GFLOP/s).
2. sam_vit_b with the deterministic fill.py weights of ../shared/parity (speed does not depend on
   the values; int8 agreement does, so these weights keep it meaningful), exported with
   ``samkit.export.onnx.export_onnx`` (its validation report is copied in):
   image encoder torch fp32 / torch int8 (``torch.ao`` dynamic Linear) / onnxruntime fp32 / int8;
   one click (multimask, 481x321 GrabCut image) torch vs onnxruntime fp32 vs int8, and torch with its
   low-res logits read (``torch_low_res_read``: the padding's logits, made only when read).
3. samkit_tiny everything-mode (relaxed thresholds, so post-processing runs) at 1 and 2 threads
   and the adaptive default.
4. Under load: the clicks again with a CPU hog process (``while True: pass``) running beside them,
   for torch (adaptive threads, and fixed at 2), onnxruntime fp32, and torch with OpenMP's default
   spin-waiting (``SAMKIT_OMP_TUNING=0``, in a child process) quiet and loaded.
The machine's load average is recorded with each phase: on a shared machine figures are indicative.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import samkit  # first: makes OpenMP threads spin briefly, then sleep (samkit.runtime.tune_openmp)

# isort: split
from _report import new_report, save_report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMAGE = SHARED / "data" / "GrabCut" / "data_GT" / "124080.jpg"
HOG = "while True: pass"


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> dict:
    """Median / p90 of ``runs`` calls after ``warmup`` untimed ones, in milliseconds."""
    return timed_interleaved({"fn": fn}, runs, warmup)["fn"]


def summary(ms: list[float]) -> dict:
    """Median, p90 and count of millisecond timings."""
    s = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(s[min(len(s) - 1, int(0.9 * len(s)))], 2),
            "runs": len(ms)}


def timed_interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 3) -> dict[str, dict]:
    """:func:`timed` for several functions, called in turn (a, b, c, a, b, c, ...) so that each sees the
    same machine load over the run."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ms: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            ms[name].append(1000 * (time.perf_counter() - t))
    return {name: summary(values) for name, values in ms.items()}


@contextmanager
def cpu_hog():
    """A busy process beside the benchmark for the duration of the block."""
    hog = subprocess.Popen([sys.executable, "-c", HOG])
    try:
        time.sleep(0.5)
        yield
    finally:
        hog.kill()
        hog.wait()


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def gemm_probe(runs: int) -> dict:
    import torch

    a, b = torch.randn(4096, 256), torch.randn(256, 1024)
    t = timed(lambda: a @ b, runs, warmup=3)
    gflop = 2 * 4096 * 256 * 1024 / 1e9
    return {**t, "gflop": gflop, "gflops": round(gflop / (t["median_ms"] / 1000), 1),
            "threads": torch.get_num_threads()}


def fill_model(name: str):
    sys.path.insert(0, str(SHARED / "parity"))
    from fill import fill_state_dict

    from samkit.models.registry import resolve_name

    model = resolve_name(name).builder()
    model.load_state_dict(fill_state_dict(model.state_dict()))
    model.weights = "fill.py (deterministic, ../shared/parity)"
    return model.eval()


def click_fn(pred, size: tuple[int, int], seed: int = 0, low_res: bool = False) -> Callable[[], object]:
    """One random click (multimask); ``low_res``: also read the prediction's low-res logits (what feeding the
    mask back needs; the torch predictor makes those of the grid's padding only when they are read)."""
    import numpy as np

    h, w = size
    rng = np.random.default_rng(seed)

    def click() -> object:
        out = pred.predict(points=rng.uniform([0, 0], [w, h], size=(1, 2)), labels=[1], multimask=True)
        return out.low_res_logits if low_res else out

    return click


def vit_b_section(args, folder: Path) -> tuple[dict, dict]:
    """Encoder and click figures of sam_vit_b; also returns the predictors for the load section."""
    import torch

    from samkit.data.image_io import load_image
    from samkit.export.onnx import export_onnx
    from samkit.predict.onnx_runtime import OnnxPredictor
    from samkit.predict.predictor import Predictor

    image = load_image(IMAGE)
    size = image.shape[:2]
    model = fill_model("sam_vit_b")
    t = time.perf_counter()
    report = export_onnx(model, folder, quantize="int8", image=image)
    out = {"export_s": round(time.perf_counter() - t, 1), "validation": report["validation"],
           "onnx_mb": {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(folder.glob("*.onnx"))}}
    torch_pred = Predictor(model)
    preds = {"torch": torch_pred, "onnx_fp32": OnnxPredictor(folder), "onnx_int8": OnnxPredictor(folder, "int8")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated (torchao replaces it)
        q_model = torch.ao.quantization.quantize_dynamic(fill_model("sam_vit_b"), {torch.nn.Linear}, dtype=torch.qint8)
    encoders = {**preds, "torch_int8": Predictor(q_model)}
    enc = {"load_avg": load_average(),
           **timed_interleaved({name: lambda p=pred: p.set_image(image) for name, pred in encoders.items()},
                               args.encoder_runs, warmup=1)}  # a session's first run sets up its memory
    for name in encoders:
        print(f"encoder {name:10s} {enc[name]['median_ms'] / 1000:.2f} s", flush=True)
    enc["int8_speedup_onnx"] = round(enc["onnx_fp32"]["median_ms"] / enc["onnx_int8"]["median_ms"], 2)
    enc["int8_speedup_torch"] = round(enc["torch"]["median_ms"] / enc["torch_int8"]["median_ms"], 2)
    out["encoder"] = enc
    emb = folder / "image.emb.safetensors"
    torch_pred.save_embedding(emb)
    for pred in preds.values():
        pred.load_embedding(emb)
    clicks = {**{name: click_fn(pred, size) for name, pred in preds.items()},
              "torch_low_res_read": click_fn(torch_pred, size, low_res=True)}
    click = {"load_avg": load_average(), **timed_interleaved(clicks, args.clicks)}
    for name in clicks:
        print(f"click   {name:10s} {click[name]['median_ms']:.1f} ms", flush=True)
    out["click"] = click
    return out, {"preds": preds, "size": size, "emb": emb}


def load_section(args, ctx: dict, quiet: dict) -> dict:
    """The same clicks with a CPU hog beside them; torch also at a fixed 2 threads and with spin-waiting."""
    preds, size = ctx["preds"], ctx["size"]
    two = preds["torch"].__class__(preds["torch"].model, threads=2)
    two.load_embedding(ctx["emb"])
    out = {"quiet_torch_2_threads": timed(click_fn(two, size), args.clicks, warmup=3)}
    cases = {**preds, "torch_2_threads": two}
    with cpu_hog():
        out["load_avg"] = load_average()
        out.update(timed_interleaved({name: click_fn(pred, size, seed=1) for name, pred in cases.items()}, args.clicks))
    for name in cases:
        print(f"loaded  {name:16s} {out[name]['median_ms']:.1f} ms", flush=True)
    base = {"torch": quiet["torch"], "onnx_fp32": quiet["onnx_fp32"], "onnx_int8": quiet["onnx_int8"],
            "torch_2_threads": out["quiet_torch_2_threads"]}
    out["slowdown"] = {k: round(out[k]["median_ms"] / base[k]["median_ms"], 2) for k in base}
    out["torch_vs_onnx_fp32_loaded"] = round(out["torch"]["median_ms"] / out["onnx_fp32"]["median_ms"], 2)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["SAMKIT_OMP_TUNING"] = "0"
    cmd = [sys.executable, __file__, "--spin-child", str(ctx["emb"]), "--clicks", str(args.clicks)]
    out["torch_spin_wait_2_threads"] = json.loads(
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"spin-wait torch 2 threads {out['torch_spin_wait_2_threads']}", flush=True)
    return out


def spin_child(emb: Path, clicks: int) -> dict:
    """Clicks at a fixed 2 threads with OpenMP's default waiting (this process: SAMKIT_OMP_TUNING=0)."""
    from samkit.predict.predictor import Predictor

    pred = Predictor(fill_model("sam_vit_b"), threads=2)
    pred.load_embedding(emb)
    size = pred.original_size
    out = {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "quiet": timed(click_fn(pred, size), clicks, 3)}
    with cpu_hog():
        out["load_avg"] = load_average()
        out["loaded"] = timed(click_fn(pred, size, seed=1), clicks, 3)
    out["slowdown"] = round(out["loaded"]["median_ms"] / out["quiet"]["median_ms"], 2)
    return out


def everything_section(args) -> dict:
    import torch

    from samkit.data.image_io import load_image
    from samkit.predict.everything import AutomaticMaskGenerator
    from samkit.predict.predictor import Predictor

    relaxed = {"pred_iou_thresh": 0.25, "stability_score_thresh": 0.7, "stability_score_offset": 0.1,
               "crop_n_layers": 0}  # whole image only, whatever the model recommends
    model = samkit.load_model("samkit_tiny")
    image = load_image(IMAGE)
    out = {"points_per_side": args.grid, "load_avg": load_average()}
    for threads in (1, 2, None):
        gen = AutomaticMaskGenerator(Predictor(model, threads=threads), points_per_side=args.grid, **relaxed)
        key = f"threads_{threads or 'adaptive'}"
        before = torch.get_num_threads()
        out[key] = timed(lambda g=gen: g.generate(image), args.everything_runs, warmup=0)
        out[key]["masks"] = len(gen.generate(image)) if threads == 1 else None
        assert torch.get_num_threads() == before
        print(f"everything {key} {out[key]['median_ms'] / 1000:.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few runs, 16x16 everything grid (a smoke run)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed.json")
    ap.add_argument("--clicks", type=int, default=None)
    ap.add_argument("--spin-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.clicks = args.clicks or (10 if args.quick else 50)
    if args.spin_child:
        print(json.dumps(spin_child(args.spin_child, args.clicks)))
        return
    args.encoder_runs = 1 if args.quick else 3
    args.grid, args.everything_runs = (16, 1) if args.quick else (32, 2)
    import torch

    report = new_report("speed", quick=args.quick, torch=torch.__version__, cpus=os.cpu_count(),
                        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                        gomp_spincount=os.environ.get("GOMP_SPINCOUNT"),
                        load_avg_start=load_average())
    report["gemm_probe"] = gemm_probe(20 if args.quick else 50)
    print(f"GEMM probe {report['gemm_probe']['gflops']} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="samkit-speed-") as tmp:
        vit_b, ctx = vit_b_section(args, Path(tmp))
        report["sam_vit_b"] = vit_b
        click = vit_b["click"]
        decoder_gflop = 1.7
        floor_ms = decoder_gflop / report["gemm_probe"]["gflops"] * 1000
        report["sam_vit_b"]["click_vs_gemm_floor"] = {
            "decoder_gflop": decoder_gflop, "floor_ms": round(floor_ms, 2),
            **{k: round(click[k]["median_ms"] / floor_ms, 2)
               for k in ("torch", "torch_low_res_read", "onnx_fp32", "onnx_int8")}}
        report["sam_vit_b"]["click_torch_vs_onnx_fp32"] = round(
            click["torch"]["median_ms"] / click["onnx_fp32"]["median_ms"], 2)
        report["under_load"] = load_section(args, ctx, click)
    report["samkit_tiny_everything"] = everything_section(args)
    report["load_avg_end"] = load_average()
    save_report(report, args.out)


if __name__ == "__main__":
    main()
