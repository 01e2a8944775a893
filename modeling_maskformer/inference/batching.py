"""Forward passes whose results do not depend on the batch size: only images of one padded size share a batch.

NOTE: MaskFormer, like the original, does not read `pixel_mask`, so padding an image to a larger batch-mate would
change its predictions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

# What post-processing reads of a model's outputs ("logits": the per-pixel baseline's).
OUTPUT_FIELDS = ("class_queries_logits", "masks_queries_logits", "logits", "pixel_mask")


def forward_batches(
    model, inputs: Sequence[Mapping[str, Tensor]], *, batch_size: int, device: torch.device | str
) -> Iterator[tuple[list[int], list[dict[str, Tensor]]]]:
    """Per forward pass over `inputs` (each the processor's output for ONE image): the positions it covered and their
    outputs, each as a batch of one."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for position, single in enumerate(inputs):
        by_size.setdefault(tuple(single["pixel_values"].shape[-2:]), []).append(position)
    for positions in by_size.values():
        for chunk in (positions[i : i + batch_size] for i in range(0, len(positions), batch_size)):
            batch = {
                key: torch.cat([inputs[p][key] for p in chunk]).to(device) for key in ("pixel_values", "pixel_mask")
            }
            outputs = model(**batch)
            fields = [name for name in OUTPUT_FIELDS if outputs.get(name) is not None]
            yield chunk, [{name: outputs[name][i : i + 1] for name in fields} for i in range(len(chunk))]


def forward_by_padded_size(
    model, inputs: Sequence[Mapping[str, Tensor]], *, batch_size: int, device: torch.device | str
) -> list[dict[str, Tensor]]:
    """Per input, in input order, the model's outputs as a batch of one."""
    outputs: list[dict[str, Tensor]] = [{}] * len(inputs)
    for chunk, singles in forward_batches(model, inputs, batch_size=batch_size, device=device):
        for position, single in zip(chunk, singles):
            outputs[position] = single
    return outputs
