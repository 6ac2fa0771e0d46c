"""Builders of the SAM-family models (SAM ViT-B/L/H, MobileSAM, samkit_tiny, EVF-SAM), each registered
with :func:`~samkit.models.registry.register_model` together with its released checkpoint."""
from __future__ import annotations

from torch import nn

from samkit.models.beit3 import BEIT3_CONFIGS, Beit3, Beit3Config
from samkit.models.evf_sam import EvfSam
from samkit.models.image_encoder import ImageEncoderViT
from samkit.models.mask_decoder import MaskDecoder
from samkit.models.prompt_encoder import PromptEncoder
from samkit.models.registry import register_model, resolve_name
from samkit.models.sam import Sam
from samkit.models.tiny_vit import TinyViT

SAMKIT_TINY_SIZE = 320  # samkit_tiny's input frame: trained at 256 px, run at 320 (chosen on its validation split)
SAMKIT_TINY_TRAIN_SIZE = 256  # the frame its weights were trained at (and the text model built on it)

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_HF_URL = "https://huggingface.co/"
# Checksums: the releases publish none besides the md5 fragment in SAM's file names. The full md5
# digests and sizes below are from public md5sum listings of the same files (their first hex digits
# match the file names); sha256 is left unset because no official value exists.


def _sam(image_encoder: nn.Module, arch: str) -> Sam:
    return Sam(image_encoder, PromptEncoder(), MaskDecoder(), arch=arch)


@register_model("sam_vit_b", "SAM ViT-B (Kirillov et al. 2023)", url=_SAM_URL + "sam_vit_b_01ec64.pth",
                filename="sam_vit_b_01ec64.pth", size=375042383, md5_prefix="01ec64d29a2fca3f0661936605ae66f8",
                aliases=("vit_b",))
def build_sam_vit_b() -> Sam:
    """SAM ViT-B (91M image encoder)."""
    return _sam(ImageEncoderViT(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
                "sam_vit_b")


@register_model("sam_vit_l", "SAM ViT-L (Kirillov et al. 2023)", url=_SAM_URL + "sam_vit_l_0b3195.pth",
                filename="sam_vit_l_0b3195.pth", size=1249524607, md5_prefix="0b3195507c641ddb6910d2bb5adee89c",
                aliases=("vit_l",))
def build_sam_vit_l() -> Sam:
    """SAM ViT-L (308M image encoder)."""
    return _sam(ImageEncoderViT(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
                "sam_vit_l")


@register_model("sam_vit_h", "SAM ViT-H (Kirillov et al. 2023)", url=_SAM_URL + "sam_vit_h_4b8939.pth",
                filename="sam_vit_h_4b8939.pth", size=2564550879, md5_prefix="4b8939a88964f0f4ff5f5b2642c598a6",
                aliases=("vit_h", "default"))
def build_sam_vit_h() -> Sam:
    """SAM ViT-H (637M image encoder)."""
    return _sam(ImageEncoderViT(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
                "sam_vit_h")


@register_model("mobile_sam", "MobileSAM: TinyViT-5M encoder + SAM decoder (Zhang et al. 2023)",
                url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                filename="mobile_sam.pt", size=40728226, md5_prefix="f3c0d8cda613564d499310dab6c812cd",
                aliases=("mobile_sam_vit_t", "vit_t"))
def build_mobile_sam() -> Sam:
    """MobileSAM: TinyViT-5M image encoder with SAM's prompt encoder and mask decoder."""
    return _sam(TinyViT(), "mobile_sam")


@register_model("samkit_tiny",
                "samkit's demo model: MobileSAM layout trained from scratch here at 256 px, run at 320 "
                "(docs/samkit_tiny.md)",
                filename="samkit_tiny.fp16.safetensors", bundled="samkit_tiny.fp16.safetensors",
                img_size=SAMKIT_TINY_SIZE, aliases=("tiny",))
def build_samkit_tiny() -> Sam:
    """samkit_tiny: MobileSAM's architecture (same state-dict layout) run at a 320 px input frame."""
    model = build_mobile_sam()
    model.set_input_size(SAMKIT_TINY_SIZE)
    model.arch = "samkit_tiny"
    return model


@register_model("evf_sam", "EVF-SAM text prompts: SAM ViT-H + BEiT-3 large early fusion (Zhang et al. 2024)",
                url=_HF_URL + "YxZhang/evf-sam", filename="evf-sam", hub_repo="YxZhang/evf-sam",
                aliases=("evf-sam",))
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
    sam = resolve_name(backbone).builder()
    if not isinstance(sam, Sam):
        raise ValueError(f"backbone must be a SAM model, not {backbone!r}")
    return EvfSam(sam, Beit3(text_encoder))


@register_model("evf_sam_multitask", "EVF-SAM multitask: also parts and semantic-level masks ('[semantic] ' prefix)",
                url=_HF_URL + "YxZhang/evf-sam-multitask", filename="evf-sam-multitask",
                hub_repo="YxZhang/evf-sam-multitask", aliases=("evf-sam-multitask",))
def build_evf_sam_multitask(backbone: str = "sam_vit_h", text_encoder: str | Beit3Config = "large") -> EvfSam:
    """EVF-SAM multitask: the EVF-SAM layout, trained also for parts and semantic-level masks
    (``[semantic] `` text prefix)."""
    model = build_evf_sam(backbone, text_encoder)
    model.arch = "evf_sam_multitask"
    model.supports_semantic = True
    return model
