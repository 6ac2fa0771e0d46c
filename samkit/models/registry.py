"""Model registry: names -> builders and the released checkpoints' metadata."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from samkit.models.beit3 import BEIT3_CONFIGS, Beit3, Beit3Config
from samkit.models.evf_sam import EvfSam
from samkit.models.image_encoder import ImageEncoderViT
from samkit.models.mask_decoder import MaskDecoder
from samkit.models.prompt_encoder import PromptEncoder
from samkit.models.sam import Sam


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. ``md5_prefix``: the md5 digest, or its leading hex digits (SAM puts 6 in its file names).

    ``bundled``: file name under ``samkit/weights/`` for weights that ship inside the package (no download);
    ``img_size``: the input frame the builder sets up (1024 for the released models);
    ``hub_repo``: a Hugging Face model repository (``url`` is its page): the checkpoint is a directory
    (config.json, weights, tokenizer), downloaded into ``<cache dir>/<filename>/``.
    """

    name: str
    builder: Callable[[], nn.Module]
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


def _sam(image_encoder: nn.Module, arch: str) -> Sam:
    return Sam(image_encoder, PromptEncoder(), MaskDecoder(), arch=arch)


def build_sam_vit_b() -> Sam:
    """SAM ViT-B (91M image encoder)."""
    return _sam(ImageEncoderViT(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
                "sam_vit_b")


def build_sam_vit_l() -> Sam:
    """SAM ViT-L (308M image encoder)."""
    return _sam(ImageEncoderViT(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
                "sam_vit_l")


def build_sam_vit_h() -> Sam:
    """SAM ViT-H (637M image encoder)."""
    return _sam(ImageEncoderViT(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
                "sam_vit_h")


def build_mobile_sam() -> Sam:
    """MobileSAM: TinyViT-5M image encoder with SAM's prompt encoder and mask decoder."""
    from samkit.models.tiny_vit import TinyViT

    return _sam(TinyViT(), "mobile_sam")


SAMKIT_TINY_SIZE = 256  # samkit_tiny's input frame: it was trained at 256 px


def build_samkit_tiny() -> Sam:
    """samkit_tiny: MobileSAM's architecture (same state-dict layout) run at a 256 px input frame."""
    from samkit.models.input_size import set_input_size

    model = build_mobile_sam()
    set_input_size(model, SAMKIT_TINY_SIZE)
    model.arch = "samkit_tiny"
    return model


def build_evf_sam(backbone: str = "sam_vit_h", text_encoder: str | Beit3Config = "large") -> EvfSam:
    """EVF-SAM: ``backbone`` (any SAM registry name) + BEiT-3 (``"base"``, ``"large"`` or a
    :class:`Beit3Config`) + projector. The released checkpoints use sam_vit_h and large."""
    if backbone.startswith("evf_sam"):
        raise ValueError(f"backbone must be a SAM model, not {backbone!r}")
    if isinstance(text_encoder, str):
        if text_encoder not in BEIT3_CONFIGS:
            raise ValueError(f"text_encoder must be one of {', '.join(BEIT3_CONFIGS)} or a Beit3Config, "
                             f"got {text_encoder!r}")
        text_encoder = BEIT3_CONFIGS[text_encoder]
    return EvfSam(resolve_name(backbone).builder(), Beit3(text_encoder))


def build_evf_sam_multitask(backbone: str = "sam_vit_h", text_encoder: str | Beit3Config = "large") -> EvfSam:
    """EVF-SAM multitask: the EVF-SAM layout, trained also for parts and semantic-level masks
    (``[semantic] `` text prefix)."""
    model = build_evf_sam(backbone, text_encoder)
    model.arch = "evf_sam_multitask"
    model.supports_semantic = True
    return model


def _build_samkit_tiny_text() -> EvfSam:
    """samkit_tiny_text (:func:`samkit.models.text_tiny.build_samkit_tiny_text`)."""
    from samkit.models.text_tiny import build_samkit_tiny_text

    return build_samkit_tiny_text()


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_HF_URL = "https://huggingface.co/"
# Checksums: the releases publish none besides the md5 fragment in SAM's file names. The full md5
# digests and sizes below are from public md5sum listings of the same files (their first hex digits
# match the file names); sha256 is left unset because no official value exists.

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("sam_vit_b", build_sam_vit_b, "SAM ViT-B (Kirillov et al. 2023)", _SAM_URL + "sam_vit_b_01ec64.pth",
                  "sam_vit_b_01ec64.pth", size=375042383, md5_prefix="01ec64d29a2fca3f0661936605ae66f8",
                  aliases=("vit_b",)),
        ModelSpec("sam_vit_l", build_sam_vit_l, "SAM ViT-L (Kirillov et al. 2023)", _SAM_URL + "sam_vit_l_0b3195.pth",
                  "sam_vit_l_0b3195.pth", size=1249524607, md5_prefix="0b3195507c641ddb6910d2bb5adee89c",
                  aliases=("vit_l",)),
        ModelSpec("sam_vit_h", build_sam_vit_h, "SAM ViT-H (Kirillov et al. 2023)", _SAM_URL + "sam_vit_h_4b8939.pth",
                  "sam_vit_h_4b8939.pth", size=2564550879, md5_prefix="4b8939a88964f0f4ff5f5b2642c598a6",
                  aliases=("vit_h", "default")),
        ModelSpec("mobile_sam", build_mobile_sam, "MobileSAM: TinyViT-5M encoder + SAM decoder (Zhang et al. 2023)",
                  "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt", "mobile_sam.pt",
                  size=40728226, md5_prefix="f3c0d8cda613564d499310dab6c812cd", aliases=("mobile_sam_vit_t", "vit_t")),
        ModelSpec("samkit_tiny", build_samkit_tiny,
                  "samkit's demo model: MobileSAM layout trained from scratch here at 256 px (docs/samkit_tiny.md)",
                  filename="samkit_tiny.fp16.safetensors", bundled="samkit_tiny.fp16.safetensors",
                  img_size=SAMKIT_TINY_SIZE, aliases=("tiny",)),
        ModelSpec("samkit_tiny_text", _build_samkit_tiny_text,
                  "samkit's demo text model: frozen samkit_tiny + small early-fusion BEiT-3 trained here on synthetic "
                  "referring scenes (docs/samkit_tiny_text.md)",
                  filename="samkit_tiny_text.fp16.safetensors", bundled="samkit_tiny_text.fp16.safetensors",
                  img_size=SAMKIT_TINY_SIZE, aliases=("tiny_text",)),
        ModelSpec("evf_sam", build_evf_sam,
                  "EVF-SAM text prompts: SAM ViT-H + BEiT-3 large early fusion (Zhang et al. 2024)",
                  _HF_URL + "YxZhang/evf-sam", "evf-sam", hub_repo="YxZhang/evf-sam", aliases=("evf-sam",)),
        ModelSpec("evf_sam_multitask", build_evf_sam_multitask,
                  "EVF-SAM multitask: also parts and semantic-level masks ('[semantic] ' prefix)",
                  _HF_URL + "YxZhang/evf-sam-multitask", "evf-sam-multitask", hub_repo="YxZhang/evf-sam-multitask",
                  aliases=("evf-sam-multitask",)),
    ]
}


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
