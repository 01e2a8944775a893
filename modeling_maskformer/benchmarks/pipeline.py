"""Pipeline section: `pipeline("image-segmentation")(image, subtask="semantic")`, each side with its own model
and processor."""

from __future__ import annotations

import torch
import transformers

from .common import Settings, median_times, scene_image
from .postprocess import post_processing_inputs


def swap_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor):
    """A forward hook: the model runs in full, then its logits are replaced by the crafted confident ones."""

    def hook(module, args, output):
        output["class_queries_logits"], output["masks_queries_logits"] = class_logits, mask_logits
        return output

    return hook


def bench_pipeline(theirs, their_processor, ours, our_processor, settings: Settings) -> dict:
    """Timed twice: as is (random weights: near-uniform, unrealistic logits) and with the model's logits
    swapped for the crafted confident ones of the post-processing section (the figure the target is for)."""
    image = scene_image(*settings.original, seed=3)
    segmenters = {
        "transformers": transformers.pipeline(
            "image-segmentation", model=theirs, image_processor=their_processor
        ),
        "ours": transformers.pipeline("image-segmentation", model=ours, image_processor=our_processor),
    }
    functions = {name: (lambda s=s: s(image, subtask="semantic")) for name, s in segmenters.items()}
    result = {"image": [image.height, image.width]}
    result["seconds_random_init_logits"] = median_times(functions, settings.repeats, settings.warmup)
    class_logits, mask_logits = post_processing_inputs(settings)[:2]
    hooks = [model.register_forward_hook(swap_logits(class_logits, mask_logits)) for model in (theirs, ours)]
    try:
        result["seconds"] = median_times(functions, settings.repeats, settings.warmup)
    finally:
        for hook in hooks:
            hook.remove()
    return result
