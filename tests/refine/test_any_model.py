"""A refiner behind every kind of model in the registry (issue 16): samkit_tiny, MobileSAM, a SAM ViT (sam_vit_b,
l and h share one builder and a 256-channel embedding; vit_b runs here at a 256 px frame to stay fast) and EVF-SAM
with a text prompt. An untrained refiner's own logits start at 0 and its global stage blends them with the
model's at the image's resolution (``blend_frame`` "image"), so its answer keeps the sign of the model's logits:
the masks must be exactly the model's, for clicks and for text alike; its local stage (forced on every click)
answers in the same shapes."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from samkit.models.evf_sam import EvfSam
from samkit.models.load import load_model
from samkit.models.sam import Sam
from samkit.predict.predictor import Predictor
from samkit.refine import RefinerConfig, SamRefiner
from tests.text_models import TINY_BEIT3


def _resized(model: Sam | EvfSam, size: int) -> Sam | EvfSam:
    model.set_input_size(size)
    return model


MODELS: dict[str, Callable[[], Sam | EvfSam]] = {
    "samkit_tiny": lambda: load_model("samkit_tiny"),
    "mobile_sam": lambda: load_model("mobile_sam", pretrained=False),
    "sam_vit_b": lambda: _resized(load_model("sam_vit_b", pretrained=False), 256),
    "evf_sam": lambda: _resized(load_model("evf_sam", pretrained=False, backbone="sam_vit_b",
                                           text_encoder=TINY_BEIT3), 256),
}


@pytest.mark.filterwarnings("ignore:.*random weights")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_untrained_refiner_keeps_the_masks_of_any_model(name, grabcut):
    torch.manual_seed(0)
    model = MODELS[name]()
    refiner = SamRefiner(RefinerConfig(sam_arch=model.arch, embed_dim=model.prompt_encoder.embed_dim,
                                       sam_img_size=model.img_size, selector="never")).eval()
    pred = Predictor(model, refiner=refiner)
    sample = grabcut[0]
    pred.set_image(sample.image)
    h, w = sample.image.shape[:2]
    prompts = [dict(points=[[w / 2, h / 2], [w / 5, h / 5]], labels=[1, 0], multimask=True)]
    if isinstance(model, EvfSam):
        prompts.append(dict(text_tokens=[0, 17, 23, 2]))  # <s> two pieces </s>: a text prompt, no clicks
    for prompt in prompts:
        plain = pred.predict(**prompt, refine=False)
        refined = pred.predict(**prompt, refine=True)
        assert refined.logits.shape == plain.logits.shape == (plain.masks.shape[0], h, w)
        assert not np.array_equal(refined.logits, plain.logits)  # the refiner ran
        np.testing.assert_array_equal(refined.masks, plain.masks)
        np.testing.assert_array_equal(refined.scores, plain.scores)
        np.testing.assert_array_equal(refined.low_res_logits, plain.low_res_logits)
        refiner.selector.mode = "always"
        local = pred.predict(**prompt, refine=True)
        refiner.selector.mode = "never"
        assert all(refiner.last_local) and local.logits.shape == plain.logits.shape
