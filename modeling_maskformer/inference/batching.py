"""Forward passes whose results do not depend on the batch size: only images of one padded size share a batch.

    inputs = [processor([image], return_tensors="pt") for image in images]  # each image alone
    outputs = forward_by_padded_size(model, inputs, batch_size=4, device="cpu")  # per image, a batch of one

NOTE: MaskFormer, like the original, does not read `pixel_mask`: padding an image to a larger batch-mate changes
what the model sees (convolutions at the border, attention over padded positions), so a mixed-size batch would
change its predictions. Each image is therefore preprocessed alone (padded only by its own processor rule) and only
images of the same padded size share a forward pass. Used by the evaluator (`evaluation/evaluator.py`) and batch
prediction (`batch_predict.py`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

# What post-processing reads of a model's outputs ("logits": the per-pixel baseline's).
OUTPUT_FIELDS = ("class_queries_logits", "masks_queries_logits", "logits", "pixel_mask")


def single_image_outputs(outputs, index: int) -> dict[str, Tensor]:
    """What post-processing reads of image `index` of a batch's outputs, kept as a batch of one."""
    return {name: outputs[name][index : index + 1] for name in OUTPUT_FIELDS if outputs.get(name) is not None}


def padded_size_batches(inputs: Sequence[Mapping[str, Tensor]], batch_size: int) -> list[list[int]]:
    """Positions of `inputs` (each the processor's output for ONE image) grouped by padded size, in chunks of at
    most `batch_size`: groups in order of their first image, positions in input order within a group."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    by_size: dict[tuple[int, int], list[int]] = {}
    for position, single in enumerate(inputs):
        by_size.setdefault(tuple(single["pixel_values"].shape[-2:]), []).append(position)
    return [
        positions[i : i + batch_size] for positions in by_size.values() for i in range(0, len(positions), batch_size)
    ]


def forward_batches(
    model, inputs: Sequence[Mapping[str, Tensor]], *, batch_size: int, device: torch.device | str
) -> Iterator[tuple[list[int], list[dict[str, Tensor]]]]:
    """Per forward pass: the input positions it covered and, per position, the outputs as a batch of one."""
    for chunk in padded_size_batches(inputs, batch_size):
        batch = {key: torch.cat([inputs[p][key] for p in chunk]).to(device) for key in ("pixel_values", "pixel_mask")}
        outputs = model(**batch)
        yield chunk, [single_image_outputs(outputs, i) for i in range(len(chunk))]


def forward_by_padded_size(
    model, inputs: Sequence[Mapping[str, Tensor]], *, batch_size: int, device: torch.device | str
) -> list[dict[str, Tensor]]:
    """Per input, in input order, the model's outputs as a batch of one (see the module docstring)."""
    outputs: list[dict[str, Tensor] | None] = [None] * len(inputs)
    for chunk, singles in forward_batches(model, inputs, batch_size=batch_size, device=device):
        for position, single in zip(chunk, singles):
            outputs[position] = single
    return outputs
