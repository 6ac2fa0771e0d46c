"""Re-make the bundled ``samkit_tiny_ref`` refiner: the chain of conversions and ``samkit train-refiner`` runs
that made it from the bundled ``samkit_tiny_ref_hq`` (docs/refiner.md, the 2026-12-05 and 06 sections), in one command:

    .venv/bin/python scripts/train_samkit_tiny_ref.py [--runs runs] [--out FILE] [--steps N] [--start FILE]

Ten training runs (configs/samkit_tiny_ref_fast, _fast8, _fast8b, _fast8c, _fast1b, _fast1l, _fast1l4, _fast1l4b,
_fast1l4c, _fast1l4d: 18,500 steps, 3.5-4.5 hours on this 2-core host) with a change of layout before five of them:
the fast layout (192 px work frame, trunk at 1/8, two blocks, 16 work-frame channels), 8 work-frame channels, one
trunk block, the head's hidden layer folded into its output layer, 4 work-frame channels. Each step is skipped when
its output exists, and a run that was interrupted is continued from its last checkpoint, so the command can be
re-run after a stop. ``--runs`` puts the runs elsewhere than the configs' ``runs/``; ``--steps N`` caps every run at N
steps (a quick check of the chain, not the recipe). The chain started from the ``samkit_tiny_ref_hq`` bundled
until 2026-12-06 (``git show 38b6647:samkit/weights/samkit_tiny_ref_hq.fp16.safetensors > FILE``, then ``--start
FILE``); the default, today's bundled file, has its layout and was fine-tuned once more behind samkit_tiny v5.
The result is copied to ``--out`` (default: runs/samkit_tiny_ref.fp16.safetensors; copy it to samkit/weights/ to
ship it). The runs behind the shipped file were started in view of the evaluation sets.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from samkit.errors import SamkitError
from samkit.refine import SamRefiner, load_refiner, save_refiner
from samkit.refine.file import resolve_refiner
from samkit.train.refiner import load_refiner_config, train_refiner

REPO = Path(__file__).resolve().parents[1]
START = "samkit_tiny_ref_hq"
HEAD = "global_refiner.fusion.head."


def fast_layout(src: SamRefiner) -> SamRefiner:
    """The accurate file in the fast layout: its 3x3 work-frame mix dropped, a new stride-2 image layer that
    starts as plain subsampling (identity weights), everything else carried over."""
    cfg = dataclasses.replace(src.cfg, work_size=192, trunk_stride=8, fine_mix=False, blend_frame="work", blocks=2,
                              selector="never", click_floor=0.0)
    dst = SamRefiner(cfg)
    old, new = src.state_dict(), dst.state_dict()
    for k in new:
        if k.startswith("global_refiner.image_branch.down.2"):
            continue  # the new stride-2 layer
        new[k] = old[k.replace("global_refiner.image_branch.down.3", "global_refiner.image_branch.down.2", 1)]
    layer = "global_refiner.image_branch.down.2.0."
    w = torch.zeros_like(new[layer + "weight"])
    w[range(w.shape[0]), range(w.shape[0]), 1, 1] = 1.0
    new[layer + "weight"], new[layer + "bias"] = w, torch.zeros_like(new[layer + "bias"])
    dst.load_state_dict(new)
    return dst


def first_fine_channels(channels: int) -> Callable[[SamRefiner], SamRefiner]:
    """Keep the first ``channels`` of each work-frame layer's channels."""
    def convert(src: SamRefiner) -> SamRefiner:
        dst = SamRefiner(dataclasses.replace(src.cfg, fine_channels=channels))
        old = src.state_dict()
        dst.load_state_dict({k: old[k][tuple(slice(0, n) for n in v.shape)] for k, v in dst.state_dict().items()})
        return dst
    return convert


def one_block(src: SamRefiner) -> SamRefiner:
    """Drop the trunk's second block."""
    dst = SamRefiner(dataclasses.replace(src.cfg, blocks=1))
    dst.load_state_dict({k: v for k, v in src.state_dict().items()
                         if not k.startswith("global_refiner.fusion.trunk.1.")})
    return dst


def fold_head(src: SamRefiner) -> SamRefiner:
    """Fold the head's hidden 1x1 layer into its output layer as if its ReLU were not there (the same function
    where the hidden outputs are positive; an approximation elsewhere, which the next run trains from)."""
    state = dict(src.state_dict())
    w1, b1 = state.pop(HEAD + "hidden.0.weight")[:, :, 0, 0], state.pop(HEAD + "hidden.0.bias")
    w2, b2 = state[HEAD + "out.weight"][:, :, 0, 0], state[HEAD + "out.bias"]
    state[HEAD + "out.weight"], state[HEAD + "out.bias"] = (w2 @ w1)[:, :, None, None], w2 @ b1 + b2
    dst = SamRefiner(dataclasses.replace(src.cfg, head_hidden=False))
    dst.load_state_dict(state)
    return dst


# (conversion or None, config): each config's init_refiner is the conversion's output, or the previous run's file
CHAIN: list[tuple[Callable[[SamRefiner], SamRefiner] | None, str]] = [
    (fast_layout, "samkit_tiny_ref_fast"),
    (first_fine_channels(8), "samkit_tiny_ref_fast8"),
    (None, "samkit_tiny_ref_fast8b"),
    (None, "samkit_tiny_ref_fast8c"),
    (one_block, "samkit_tiny_ref_fast1b"),
    (fold_head, "samkit_tiny_ref_fast1l"),
    (first_fine_channels(4), "samkit_tiny_ref_fast1l4"),
    (None, "samkit_tiny_ref_fast1l4b"),
    (None, "samkit_tiny_ref_fast1l4c"),
    (None, "samkit_tiny_ref_fast1l4d"),
]


def in_runs(path: str, runs: Path) -> str:
    """A config's ``runs/...`` path under ``runs`` instead."""
    return str(runs / Path(path).relative_to("runs")) if path.startswith("runs/") else path


def run_chain(runs: Path, steps: int | None = None, start: str | Path = START) -> Path:
    """Every step of :data:`CHAIN` not done yet, from the refiner ``start`` (a bundled name or a file), in the
    repository root (the configs' data paths are relative to it); returns the last run's refiner file."""
    previous: str | Path = start
    for convert, name in CHAIN:
        cfg = load_refiner_config(REPO / "configs" / f"{name}.json")
        cfg = dataclasses.replace(cfg, out_dir=in_runs(cfg.out_dir, runs),
                                  init_refiner=in_runs(cfg.init_refiner or "", runs), progress=False)
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=min(steps, cfg.steps), warmup_steps=0,
                                      save_every=min(steps, cfg.save_every))
        assert cfg.init_refiner
        if convert is not None and not Path(cfg.init_refiner).is_file():
            Path(cfg.init_refiner).parent.mkdir(parents=True, exist_ok=True)
            save_refiner(convert(load_refiner(previous)).eval(), cfg.init_refiner)
        result = Path(cfg.out_dir) / "refiner.fp16.safetensors"
        if not result.is_file():
            print(f"training {name} ({cfg.steps} steps) from {cfg.init_refiner}", flush=True)
            # resume=True continues from the run's last checkpoint, and starts afresh where it has none
            result = train_refiner(dataclasses.replace(cfg, resume=True))
        previous = result
    return Path(previous)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="folder of the runs (default runs/)")
    ap.add_argument("--out", type=Path, default=None, help="the result (default RUNS/samkit_tiny_ref.fp16.safetensors)")
    ap.add_argument("--steps", type=int, default=None, help="cap every run at N steps (a quick check of the chain)")
    ap.add_argument("--start", default=START, help=f"the refiner the chain starts from (default {START})")
    args = ap.parse_args(argv)
    runs = args.runs.resolve()
    try:
        start = resolve_refiner(args.start).resolve()  # a bundled name's file, or the given file, checked
    except SamkitError as err:
        ap.error(str(err))
    out = (args.out or runs / "samkit_tiny_ref.fp16.safetensors").resolve()
    os.chdir(REPO)  # the configs' data paths are relative to the repository root
    shutil.copyfile(run_chain(runs, args.steps, start), out)
    print(f"samkit_tiny_ref: {out}")
    return out


if __name__ == "__main__":
    main()
