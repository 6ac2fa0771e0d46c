"""Model registry: names -> builders and the released checkpoints' metadata.

The registry knows no model: each builder registers itself where it is defined, with
:func:`register_model` (as timm's ``@register_model``). ``import samkit.models`` imports every
module that defines builders (:mod:`samkit.models.build_sam`, :mod:`samkit.models.text_tiny`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., Any])


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. ``md5_prefix``: the md5 digest, or its leading hex digits (SAM puts 6 in its file names).

    ``bundled``: file name under ``samkit/weights/`` for weights that ship inside the package (no download);
    ``img_size``: the input frame the builder sets up (1024 for the released models);
    ``hub_repo``: a Hugging Face model repository (``url`` is its page): the checkpoint is a directory
    (config.json, weights, tokenizer), downloaded into ``<cache dir>/<filename>/``.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    url: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None
    md5_prefix: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    bundled: str | None = None
    img_size: int = 1024
    hub_repo: str | None = None


REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str, **fields: Any) -> Callable[[Builder], Builder]:
    """Decorator: register the decorated builder as model ``name``; ``fields`` are the other
    :class:`ModelSpec` fields (url, filename, aliases, ...). Returns the builder unchanged."""

    def add(builder: Builder) -> Builder:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        REGISTRY[name] = ModelSpec(name, builder, description, **fields)
        return builder

    return add


def resolve_name(name: str) -> ModelSpec:
    """Registry entry for a name or alias; unknown names raise ``KeyError`` listing the known ones."""
    if name in REGISTRY:
        return REGISTRY[name]
    for spec in REGISTRY.values():
        if name in spec.aliases:
            return spec
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")


def list_models() -> list[str]:
    """Names of every registered model."""
    return list(REGISTRY)
