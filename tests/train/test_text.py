"""Text-prompter training on a frozen SAM (samkit.train.text): cache, tokenizer, models, one training step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import samkit
from samkit.data.refer_scenes import ReferScenes
from samkit.models.evf_sam import EvfSam
from samkit.models.text_tiny import TextOnlyEvfSam
from samkit.models.text_tokenizer import BOS, EOS, PAD
from samkit.train.optim import build_optimizer
from samkit.train.text import (
    ConstantPrompt,
    TextTrainConfig,
    build_cache,
    build_prompter,
    encode_texts,
    evaluate_cached,
    load_text_config,
    patch_coverage,
    point_embeddings,
    scene_expressions,
    text_parameters,
    train_step,
    train_tokenizer,
)

TINY_BEIT3 = {"embed_dim": 32, "depth": 1, "num_heads": 2, "ffn_dim": 64, "img_size": 32, "patch_size": 16,
              "max_text_positions": 34}


@pytest.fixture(scope="module")
def sam():
    model = samkit.load_model("samkit_tiny")
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def scenes():
    return ReferScenes(None, "train", length=3, image_size=128)  # procedural backgrounds: no data needed


@pytest.fixture(scope="module")
def cache(sam, scenes):
    return build_cache(sam, scenes, expressions_per_scene=4, beit_size=32, full_targets=True)


@pytest.fixture(scope="module")
def tokenizer(cache, tmp_path_factory):
    return train_tokenizer(cache["texts"] * 3 + ["the red circle", "the blue square"],
                           tmp_path_factory.mktemp("tok") / "t.model", vocab_size=40)


def test_scene_expressions_are_distinct_and_start_with_the_scene_sentence(scenes):
    sample = scenes[0]
    exprs = scene_expressions(sample, 5, np.random.default_rng(0))
    assert exprs[0][0] == sample.sentence and exprs[0][1] == sample.extra["target"]
    assert len({t for t, _, _ in exprs}) == len(exprs) <= 5
    assert all(0 <= target < len(sample.extra["objects"]) for _, target, _ in exprs)


def test_cache_shapes(cache, sam):
    n, e = cache["embeddings"].shape[0], len(cache["texts"])
    size, grid = sam.img_size, sam.img_size // 16
    assert cache["embeddings"].shape == (n, 256, grid, grid) and n == 3 and e >= 3
    assert cache["beit_images"].shape == (3, 3, 32, 32)
    assert cache["targets"].shape == (e, 4 * grid, 4 * grid) and cache["full"].shape == (e, size, size)
    assert all(cache["targets"][i].any() for i in range(e))


def test_tokenizer_follows_xlmr_ids_and_pads(tokenizer):
    ids = tokenizer.encode("the red circle")
    assert ids[0] == BOS and ids[-1] == EOS and all(i > EOS for i in ids[1:-1])
    batch, padding = encode_texts(tokenizer, ["the red circle", "the circle"], limit=32, pad_to=16)
    assert batch.shape == (2, 16) and padding.shape == (2, 16)
    assert batch[1, padding[1]].eq(PAD).all() and not padding[:, 0].any()


def test_late_fusion_ignores_the_image_and_early_fusion_does_not(sam, tokenizer):
    torch.manual_seed(0)
    cfg = TextTrainConfig(beit3=TINY_BEIT3)
    ids, padding = encode_texts(tokenizer, ["the red circle"], 32)
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    for variant, cls, same in (("early", EvfSam, False), ("late", TextOnlyEvfSam, True)):
        model = build_prompter(TextTrainConfig(variant=variant, beit3=cfg.beit3), sam, tokenizer.vocab_size).eval()
        assert type(model) is cls
        with torch.no_grad():
            ta, tb = model.text_prompt(a, ids, padding), model.text_prompt(b, ids, padding)
        assert ta.shape == (1, 1, 256)
        assert torch.allclose(ta, tb) == same
        assert all(not n.startswith("visual_model.") for n, _ in
                   ((n, p) for n, p in model.named_parameters() if p.requires_grad))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["early", "late", "constant"])
def test_training_steps_lower_the_loss_on_a_tiny_batch(sam, cache, tokenizer, variant):
    torch.manual_seed(0)
    cfg = TextTrainConfig(variant=variant, beit3=TINY_BEIT3, lr=3e-2 if variant == "constant" else 3e-3, warmup_steps=0)
    prompter = build_prompter(cfg, sam, tokenizer.vocab_size)
    params = text_parameters(prompter)
    frozen = {k: v.clone() for k, v in sam.state_dict().items()}
    optimizer = build_optimizer(params, cfg)
    index = torch.arange(4)
    tok = None if variant == "constant" else tokenizer
    data = {**cache, "points": point_embeddings(sam, cache["targets"])}
    steps = [train_step(prompter, sam, data, index, tok, optimizer, params, max_tokens=32, pad_to=16,
                        point_distill=0.5) for _ in range(16)]
    losses = [s["loss"] + 0.5 * s["point_mse"] for s in steps]
    assert min(losses[-3:]) < 0.9 * losses[0], losses
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in frozen.items())  # the SAM stays frozen
    metrics = evaluate_cached(sam, cache, prompter.eval(), tok, max_tokens=32)
    assert metrics["num_expressions"] == len(cache["texts"]) and 0.0 <= metrics["giou"] <= 1.0


def test_patch_coverage_is_each_patch_s_target_fraction_in_token_order():
    target = torch.zeros(1, 64, 64, dtype=torch.bool)
    target[0, :32, 48:] = True  # top-right: rows 0-31, columns 48-63
    cover = patch_coverage(target, 4)  # 16 px patches, row-major like the BEiT-3 patch tokens
    expected = torch.zeros(4, 4)
    expected[:2, 3] = 1.0
    assert torch.equal(cover, expected.flatten()[None])
    assert torch.allclose(patch_coverage(target, 2), torch.tensor([[0.0, 0.5, 0.0, 0.0]]))


def test_patch_grounding_trains_a_head_on_the_early_patch_tokens(sam, cache, tokenizer):
    torch.manual_seed(0)
    cfg = TextTrainConfig(variant="early", beit3=TINY_BEIT3, lr=3e-3, warmup_steps=0, patch_grounding=1.0)
    prompter = build_prompter(cfg, sam, tokenizer.vocab_size)
    head = torch.nn.Linear(32, 1)
    params = text_parameters(prompter) + list(head.parameters())
    optimizer = build_optimizer(params, cfg)
    data = {**cache, "patches": patch_coverage(cache["targets"], 2)}
    before = head.weight.detach().clone()
    steps = [train_step(prompter, sam, data, torch.arange(4), tokenizer, optimizer, params, max_tokens=32,
                        patch_head=head, patch_grounding=1.0) for _ in range(12)]
    assert not torch.equal(head.weight, before)
    assert steps[-1]["patch_bce"] < 0.8 * steps[0]["patch_bce"]
    exported = prompter.state_dict()  # the head is the trainer's, not part of the exported EVF layout
    assert all(not k.startswith("patch") for k in exported) and len(exported) == len(build_prompter(
        cfg, sam, tokenizer.vocab_size).state_dict())


@pytest.mark.parametrize("variant", ["late", "constant"])
def test_patch_grounding_needs_early_fusion(variant):
    with pytest.raises(ValueError, match="patch_grounding needs image patches"):
        TextTrainConfig(variant=variant, patch_grounding=1.0).validate()
    with pytest.raises(ValueError, match="patch_grounding must be >= 0"):
        TextTrainConfig(patch_grounding=-1.0).validate()


def test_oracle_box_baseline_segments_the_targets(sam, cache):
    metrics = evaluate_cached(sam, cache, oracle_box=True)
    assert metrics["giou"] > 0.3


def test_point_embeddings_are_point_prompts_inside_the_targets(sam, cache):
    points = point_embeddings(sam, cache["targets"], chunk=2)
    assert points.shape == (len(cache["texts"]), 256)
    prompter = ConstantPrompt()
    hits = []
    for i in range(len(points)):  # each target's point token, alone, segments (part of) that target
        prompter.token.data.copy_(points[i].view(1, 1, 256))
        one = {**cache, "texts": cache["texts"][i:i + 1], "scene": cache["scene"][i:i + 1],
               "full": cache["full"][i:i + 1], "kinds": cache["kinds"][i:i + 1]}
        hits.append(evaluate_cached(sam, one, prompter)["giou"])
    assert np.mean(hits) > 0.2


def test_constant_prompt_ignores_its_inputs():
    token = ConstantPrompt().text_prompt(torch.zeros(1, 3, 8, 8), torch.zeros(3, 5, dtype=torch.long))
    assert token.shape == (3, 1, 256)


def test_config_files_load_and_early_late_differ_only_in_variant():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    cfgs = {v: load_text_config(root / f"samkit_tiny_text_{v}.json").to_dict() for v in ("early", "late", "constant")}
    schedule = ("steps", "warmup_steps", "lr")  # one free token: fewer steps, a larger lr
    for v, d in cfgs.items():
        assert d["variant"] == v
        skip = ("variant", "out_dir", "patch_grounding") + (schedule if v == "constant" else ())
        same = {k: x for k, x in cfgs["early"].items() if k not in skip}
        assert {k: x for k, x in d.items() if k not in skip} == same
    assert cfgs["early"]["patch_grounding"] > 0 and cfgs["late"]["patch_grounding"] == 0  # early-only aux
    with pytest.raises(ValueError, match="unknown"):
        load_text_config({"varient": "early"})
    with pytest.raises(ValueError, match="variant"):
        load_text_config({"variant": "middle"})


def test_optimiser_fields_are_checked_as_in_train_config():
    """The text config shares TrainConfig's optimiser fields and their checks (OptimConfig)."""
    for bad, message in (({"schedule": "cosnie"}, "schedule must be one of"), ({"lr": 0.0}, "lr must be > 0"),
                         ({"warmup_steps": -1}, "warmup_steps"), ({"grad_clip": 0.0}, "grad_clip")):
        with pytest.raises(ValueError, match=message):
            TextTrainConfig(**bad).validate()
        with pytest.raises(ValueError, match=message):
            load_text_config(bad)
    assert TextTrainConfig(schedule="step", decay_steps=[10]).validate().schedule == "step"
