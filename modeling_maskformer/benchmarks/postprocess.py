"""Post-processing section: the three `post_process_*` of each processor fed identical crafted outputs of a
confident model; agreement with the literal reference implementations and with transformers."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch
import transformers

from ..image_processing import MaskFormerImageProcessor, post_processing
from .common import Settings, agreement, crafted_outputs, label_map, median_times, processor_settings


def first_map(results: list) -> torch.Tensor:
    """The first image's map from a post-processing result (a tensor, or a dict with "segmentation")."""
    return results[0] if isinstance(results[0], torch.Tensor) else results[0]["segmentation"]


def post_processing_inputs(settings: Settings):
    """Crafted outputs at the realistic geometry: original -> resized valid content, padded input."""
    processor = MaskFormerImageProcessor(**processor_settings(settings))
    valid = processor.get_resize_output_size(*settings.original)
    divisor = processor.size_divisor
    padded = (math.ceil(valid[0] / divisor) * divisor, math.ceil(valid[1] / divisor) * divisor)
    segments, classes = label_map(*settings.original, settings.num_segments, seed=1)
    class_logits, mask_logits = crafted_outputs(segments, classes, valid, padded, seed=2)
    return class_logits, mask_logits, valid, padded, classes[segments]


POST_PROCESSINGS = {  # task: (processor method, our reference implementation)
    "semantic": ("post_process_semantic_segmentation", post_processing._reference_semantic),
    "instance": ("post_process_instance_segmentation", post_processing._reference_instance),
    "panoptic": ("post_process_panoptic_segmentation", post_processing._reference_panoptic),
}


def bench_post_processing(settings: Settings) -> dict:
    class_logits, mask_logits, valid, padded, truth = post_processing_inputs(settings)
    pixel_mask = torch.zeros(1, *padded, dtype=torch.long)
    pixel_mask[:, : valid[0], : valid[1]] = 1
    outputs = SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=mask_logits, pixel_mask=pixel_mask
    )
    same = processor_settings(settings)
    processors = {
        "transformers": transformers.MaskFormerImageProcessor(**same),
        "ours": MaskFormerImageProcessor(**same),
    }
    geometry = {"padded_size": padded, "valid_sizes": [valid], "target_sizes": [settings.original]}
    result = {"original": list(settings.original), "valid": list(valid), "padded": list(padded)}
    for task, (method, reference) in POST_PROCESSINGS.items():
        extra = {"label_ids_to_fuse": set()} if task == "panoptic" else {}  # silences transformers' warning
        calls = {
            name: functools.partial(
                getattr(processor, method), outputs, target_sizes=[settings.original], **extra
            )
            for name, processor in processors.items()
        }
        seconds = median_times(calls, settings.post_repeats, settings.warmup)
        segmentation = first_map(calls["ours"]())
        expected = first_map(reference(class_logits, mask_logits, **geometry))
        result[task] = {"seconds": seconds, "agreement_with_reference": agreement(segmentation, expected)}
        if task == "semantic":  # the crafted outputs are only realistic if they recover the label map
            result[task]["agreement_with_label_map"] = agreement(segmentation, truth)
        else:
            background = -1 if task == "instance" else 0
            result[task]["segments_found"] = len(set(segmentation.unique().tolist()) - {background})
    result.update(no_padding_agreement(class_logits, mask_logits, padded, processors))
    return result


def no_padding_agreement(class_logits, mask_logits, padded, processors) -> dict:
    """Ours vs transformers where transformers' semantic map is exact: no padding, output at the input size.
    (Its panoptic overlap test differs from the paper's, so that figure is for information.)"""
    outputs = SimpleNamespace(
        class_queries_logits=class_logits,
        masks_queries_logits=mask_logits,
        pixel_mask=torch.ones(1, *padded, dtype=torch.long),
    )
    maps = {
        task: [
            first_map(getattr(processor, method)(outputs, target_sizes=[tuple(padded)]))
            for processor in processors.values()
        ]
        for task, (method, _) in POST_PROCESSINGS.items()
        if task != "instance"
    }
    return {
        "semantic_agreement_with_transformers_no_padding": agreement(*maps["semantic"]),
        "panoptic_agreement_with_transformers_no_padding_info": agreement(*maps["panoptic"]),
    }
