"""scripts/train_samkit_tiny_ref.py: the one command that re-makes the bundled samkit_tiny_ref. Its chain, each run
cut to one step, ends in a file of exactly the bundled file's layout; the head fold keeps the head's function."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from samkit.refine import RefinerConfig, SamRefiner, read_refiner_file
from samkit.refine.file import resolve_refiner

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("train_samkit_tiny_ref", REPO / "scripts" / "train_samkit_tiny_ref.py")
assert _spec is not None and _spec.loader is not None
chain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chain)


def test_head_fold_is_the_hidden_and_output_layers_multiplied():
    """Where the hidden layer's ReLU passes everything (a large positive bias), the folded head is the same function."""
    torch.manual_seed(0)
    src = SamRefiner(RefinerConfig(sam_arch="samkit_tiny", sam_img_size=320, blocks=1)).eval()
    head = src.global_refiner.fusion.head
    with torch.no_grad():
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.2)
        head.hidden[0].bias.fill_(10.0)
    dst = chain.fold_head(src).eval()
    assert dst.cfg.head_hidden is False and dst.global_refiner.fusion.head.hidden is None
    x = torch.rand(2, head.hidden[0].weight.shape[1], 6, 5)
    for got, want in zip(dst.global_refiner.fusion.head(x), head(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_chain_ends_in_the_bundled_layout(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs' data paths are relative to the repository root
    result = chain.run_chain(tmp_path, steps=1)
    assert result == tmp_path / "samkit_tiny_ref_fast1l4d" / "refiner.fp16.safetensors"
    assert len(list(tmp_path.glob("*_init.fp16.safetensors"))) == 5  # the five layout changes
    made, shipped = read_refiner_file(result), read_refiner_file(resolve_refiner("samkit_tiny_ref"))
    assert made[0] == shipped[0]  # the same RefinerConfig
    assert {k: v.shape for k, v in made[1].items()} == {k: v.shape for k, v in shipped[1].items()}
    before = result.stat().st_mtime_ns
    assert chain.run_chain(tmp_path, steps=1) == result and result.stat().st_mtime_ns == before  # done: skipped


def test_unknown_start_is_a_one_line_error_before_any_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        chain.main(["--start", str(tmp_path / "missing.fp16.safetensors"), "--runs", str(runs)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "missing.fp16.safetensors" in err and "not a file" in err
    assert not runs.exists()
