"""XLM-R style tokenisation with a checkpoint's own sentencepiece model (BEiT-3 / EVF-SAM).

Ids follow fairseq's dictionary, as ``transformers.XLMRobertaTokenizer`` gives them: ``<s>`` = 0,
``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, and every other sentencepiece id shifted by +1
(sentencepiece's own ``<unk>`` = 0 becomes 3). A sentence is ``<s> pieces... </s>``.
"""
from __future__ import annotations

import os
from pathlib import Path

from samkit._optional import require
from samkit.errors import CheckpointError

BOS, PAD, EOS, UNK = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1


class XlmrTokenizer:
    """Text -> token ids with a sentencepiece model file (``sentencepiece.bpe.model``)."""

    def __init__(self, model_file: str | os.PathLike) -> None:
        require("sentencepiece", "text", "text prompts")
        import sentencepiece

        self.path = Path(model_file)
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.Load(str(self.path))
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path} is not a readable sentencepiece model: {exc}") from None

    @property
    def vocab_size(self) -> int:
        """Ids in use: the sentencepiece pieces shifted by one, plus ``<mask>`` (XLM-R's last id)."""
        return len(self.sp) + FAIRSEQ_OFFSET + 1

    def piece_ids(self, text: str) -> list[int]:
        """Ids of ``text``'s pieces, without ``<s>`` / ``</s>``."""
        return [i + FAIRSEQ_OFFSET if i else UNK for i in self.sp.EncodeAsIds(text)]

    def encode(self, text: str) -> list[int]:
        """``<s>`` + pieces + ``</s>``."""
        return [BOS, *self.piece_ids(text), EOS]


def truncate_ids(ids: list[int], limit: int) -> list[int]:
    """At most ``limit`` ids; a final ``</s>`` is kept as the last id."""
    if len(ids) <= limit:
        return list(ids)
    if ids[-1] == EOS:
        return [*ids[:limit - 1], EOS]
    return list(ids[:limit])
