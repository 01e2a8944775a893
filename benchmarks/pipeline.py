"""Pipeline section: the whole `pipeline("image-segmentation")` call, each side with its own model and processor.

Three regimes, as in the post-processing section: "random-init" (the random-weight models as they are, on a
512x683 scene), "trained" (a 384 px synthetic scene; after the full forward pass a hook replaces the logits
with the recorded outputs of the `make demo` model on such a scene) and "crafted" (512x683; the crafted
confident logits). Calls: the stock pipeline with default settings (no subtask: panoptic, threshold 0.9) and
with subtask="semantic" on both sides; ours also through `MaskFormerSegmentationPipeline(fast_inference=True)`
(channels-last, bf16 autocast where the CPU computes bf16 natively).
"""

from __future__ import annotations

import copy

import torch
import transformers

from benchmarks.common import Settings, median_times, processor_settings, scene_image
from benchmarks.postprocess import crafted_regime
from benchmarks.recorded import load_recorded
from modeling_maskformer.data import SyntheticShapesConfig, build_dataset
from modeling_maskformer.image_processing import MaskFormerImageProcessor
from modeling_maskformer.inference.pipeline import MaskFormerSegmentationPipeline


def swap_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor):
    """A forward hook: the model runs in full, then its logits are replaced."""

    def hook(module, args, output):
        output["class_queries_logits"], output["masks_queries_logits"] = class_logits, mask_logits
        return output

    return hook


def synthetic_scene(size: int):
    dataset = build_dataset(
        "synthetic",
        "validation",
        num_images=1,
        image_size=size,
        config=SyntheticShapesConfig(thing_colours="by_class"),
    )
    return dataset[0]["image"]


def bench_pipeline(theirs, their_processor, ours, our_processor, settings: Settings) -> dict:
    result = {}
    scene = scene_image(*settings.original, seed=3)
    trained = load_recorded("demo_384")
    crafted = crafted_regime(settings)
    regimes = {
        "random-init": (scene, None),
        "trained": (
            synthetic_scene(384),
            (trained["class_queries_logits"][:1], trained["masks_queries_logits"][:1]),
        ),
        "crafted": (scene, (crafted["class_queries_logits"], crafted["masks_queries_logits"])),
    }
    resize_to = {"random-init": None, "trained": 384, "crafted": None}
    fast_model = copy.deepcopy(ours)
    for name, (image, logits) in regimes.items():
        size = resize_to[name]
        processors = [their_processor, our_processor]
        if size is not None:  # keep the scene at its recorded size on both sides
            same = {**processor_settings(settings), "size": {"shortest_edge": size, "longest_edge": 4 * size}}
            processors = [transformers.MaskFormerImageProcessor(**same), MaskFormerImageProcessor(**same)]
        segmenters = {
            "transformers": transformers.pipeline("image-segmentation", model=theirs, image_processor=processors[0]),
            "ours": transformers.pipeline("image-segmentation", model=ours, image_processor=processors[1]),
        }
        segmenters["ours_fast"] = transformers.pipeline(
            "image-segmentation",
            model=fast_model,
            image_processor=processors[1],
            pipeline_class=MaskFormerSegmentationPipeline,
            fast_inference=True,
        )
        hooks = []
        if logits is not None:
            hooks = [model.register_forward_hook(swap_logits(*logits)) for model in (theirs, ours, fast_model)]
        try:
            entry = {"image": [image.height, image.width]}
            for call, kwargs in (("defaults", {}), ("semantic", {"subtask": "semantic"})):
                functions = {key: (lambda s=s, kw=kwargs, im=image: s(im, **kw)) for key, s in segmenters.items()}
                entry[call] = median_times(functions, settings.repeats, settings.warmup)
            result[name] = entry
        finally:
            for hook in hooks:
                hook.remove()
    result["fast_path"] = fast_model.fast_inference
    return result
