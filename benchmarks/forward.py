"""Forward section: eval, no_grad, batch 1; ours also with channels_last weights and input, alone and with bf16
autocast."""

from __future__ import annotations

import copy

import torch

from benchmarks.common import Settings, agreement, median_times
from modeling_maskformer.image_processing import post_processing


def bench_forward(theirs, ours, settings: Settings) -> dict:
    pixel_values = torch.randn(
        1, 3, settings.image_size, settings.image_size, generator=torch.Generator().manual_seed(0)
    )
    fast = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    fast_input = pixel_values.contiguous(memory_format=torch.channels_last)

    def run_fast(bf16: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return fast(fast_input)

    with torch.no_grad():
        expected, got = theirs(pixel_values), ours(pixel_values)
    result = {
        "input": list(pixel_values.shape),
        "max_abs_logit_difference": max(
            (expected.class_queries_logits - got.class_queries_logits).abs().max().item(),
            (expected.masks_queries_logits - got.masks_queries_logits).abs().max().item(),
        ),
    }
    functions = {
        "transformers": lambda: theirs(pixel_values),
        "ours": lambda: ours(pixel_values),
        "ours_channels_last": lambda: run_fast(False),
    }
    try:
        bf16 = run_fast(True)
        result["bf16_semantic_agreement"] = agreement(semantic_map_of(bf16), semantic_map_of(got))
        functions["ours_channels_last_bf16"] = lambda: run_fast(True)
    except RuntimeError as error:  # an op without a bf16 CPU kernel
        result["bf16_error"] = f"{type(error).__name__}: {error}"
    with torch.no_grad():
        result["seconds"] = median_times(functions, settings.repeats, settings.warmup)
    return result


def semantic_map_of(outputs) -> torch.Tensor:
    """Our semantic map of model outputs, at the input size."""
    class_logits, mask_logits = outputs.class_queries_logits.float(), outputs.masks_queries_logits.float()
    size = [4 * side for side in mask_logits.shape[-2:]]
    return post_processing.semantic_segmentation(class_logits, mask_logits, padded_size=size)[0]
