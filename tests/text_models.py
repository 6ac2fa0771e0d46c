"""Small text-promptable models and tokenizers for fast tests (no released weights or tokenizer files here)."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from samkit.models.beit3 import Beit3Config
from samkit.models.build_sam import build_evf_sam
from samkit.models.evf_sam import EvfSam
from samkit.models.text_tokenizer import XlmrTokenizer

# The EVF layout with a 2-layer, 64-wide BEiT-3 (full vocabulary) and at most 64 text tokens.
TINY_BEIT3 = Beit3Config(embed_dim=64, depth=2, num_heads=4, ffn_dim=128, max_text_positions=66)

SENTENCES = ["the man in the red shirt", "a dog on the left", "the small red circle left of the blue square",
             "the largest object", "zebra top left", "bus going to south common",
             "the broccoli closest to the ketchup bottle", "[semantic] sky", "[semantic] the ground"]


def train_tokenizer(directory: Path) -> Path:
    """A 40-piece sentencepiece model (ids: 0 <unk>, 1 <s>, 2 </s>, as XLM-R's) written to DIRECTORY."""
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES * 10), model_writer=out,
                                             vocab_size=40, model_type="unigram", character_coverage=1.0,
                                             hard_vocab_limit=False, minloglevel=2)
    path = Path(directory) / "sentencepiece.bpe.model"
    path.write_bytes(out.getvalue())
    return path


def tiny_evf(tokenizer: Path | None = None, backbone: str = "samkit_tiny", seed: int = 0) -> EvfSam:
    """EVF layout around ``backbone`` (samkit_tiny: 256 px, fast) with :data:`TINY_BEIT3`, seeded random weights."""
    torch.manual_seed(seed)
    model = build_evf_sam(backbone, TINY_BEIT3).eval()
    with torch.no_grad():  # larger projector outputs, so the text token visibly moves the masks
        model.text_hidden_fcs[0][2].weight.mul_(20.0)
    if tokenizer is not None:
        model.tokenizer = XlmrTokenizer(tokenizer)
    return model
