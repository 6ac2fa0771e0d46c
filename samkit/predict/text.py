"""Text prompts for text-promptable models (EVF-SAM): checks, tokenisation, length limit, prompt tokens."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np
import torch

from samkit.errors import PromptError
from samkit.models.evf_sam import EvfSam, pad_token_ids
from samkit.models.text_tokenizer import BOS, EOS, PAD, truncate_ids


def has_text_encoder(model: Any) -> TypeGuard[EvfSam]:
    """Whether ``model`` takes text prompts (an :class:`EvfSam`, or a model that says it behaves as one)."""
    return bool(getattr(model, "has_text_encoder", False))


def require_text_encoder(model: Any) -> None:
    if not has_text_encoder(model):
        raise PromptError(f"model {getattr(model, 'arch', type(model).__name__)!r} has no text encoder: text "
                          "prompts need a text-promptable model such as evf_sam (samkit.load_model('evf_sam'))")


def token_ids(model: Any, texts: Sequence[Any] | None, tokens: Sequence[Any] | None,
              semantic: bool = False) -> list[list[int]] | None:
    """Checked token id lists, one per prompt, from ``texts`` (tokenised by the model) or ``tokens``
    (already tokenised); None when neither is given. Sequences over the model's limit are truncated
    with a warning."""
    if texts is None and tokens is None:
        return None
    require_text_encoder(model)
    if texts is not None and tokens is not None:
        raise PromptError("give text or text_tokens, not both")
    if texts is not None:
        if semantic and not getattr(model, "supports_semantic", False):
            warnings.warn(f"{model.arch} was not trained with the '[semantic] ' prefix (EVF-SAM multitask "
                          "checkpoints are)", stacklevel=3)
        ids = [_tokenize(model, _check_text(t), semantic) for t in texts]
    elif tokens is not None:
        if semantic:
            raise PromptError("semantic=True adds the '[semantic] ' prefix to text=; with text_tokens, "
                              "include the prefix's token ids yourself")
        ids = [_check_tokens(t, model.vocab_size) for t in tokens]
    if not ids:
        raise PromptError("no text prompt given: the list of texts is empty")
    limited = []
    for i, seq in enumerate(ids):  # a loop, not a comprehension: the warning's stacklevel counts frames
        limited.append(_limit(seq, model.max_text_tokens, i if len(ids) > 1 else None))
    return limited


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise PromptError(f"a text prompt must be a string, got {type(text).__name__}")
    if not text.strip():
        raise PromptError("text prompt is empty: describe the object to segment, e.g. 'the dog on the left'")
    return text


def _tokenize(model: Any, text: str, semantic: bool) -> list[int]:
    """The model's token ids of ``text``; PromptError when the text itself gives no token besides the
    special ones (e.g. only zero-width or control characters)."""
    ids = model.tokenize(text, semantic=semantic)
    bare = model.tokenize(text) if semantic else ids
    if all(i in (BOS, PAD, EOS) for i in bare):
        raise PromptError(f"text prompt {text!r} is empty: it gives no tokens; describe the object to segment, "
                          "e.g. 'the dog on the left'")
    return ids


def _check_tokens(tokens: Any, vocab_size: int) -> list[int]:
    try:
        arr = np.asarray(tokens)
    except (TypeError, ValueError):
        raise PromptError(f"text_tokens must be a sequence of token ids, got {tokens!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise PromptError(f"text_tokens must be a non-empty 1-D sequence of token ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0)):
        raise PromptError(f"text_tokens must be integers, got {arr.dtype}")
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        raise PromptError(f"token id {int(arr[bad][0])} is outside the vocabulary (0 .. {vocab_size - 1})")
    return [int(v) for v in arr]


def _limit(ids: list[int], limit: int, index: int | None) -> list[int]:
    if len(ids) <= limit:
        return ids
    which = "text prompt" if index is None else f"text prompt {index}"
    warnings.warn(f"{which} has {len(ids)} tokens, more than the model's limit of {limit}: truncated to {limit}",
                  stacklevel=4)
    return truncate_ids(ids, limit)


def prompt_tokens(model: Any, image: torch.Tensor, ids: list[list[int]]) -> torch.Tensor:
    """(B,1,256) prompt tokens for B token id lists about one image; ``image`` is the (1,3,224,224) BEiT-3 input."""
    dev = model.device
    input_ids, padding = pad_token_ids(ids)
    with torch.inference_mode():
        return model.text_prompt(image.to(dev), input_ids.to(dev), None if padding is None else padding.to(dev))
