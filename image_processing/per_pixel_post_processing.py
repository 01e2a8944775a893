"""Semantic inference of the paper's per-pixel baseline (`PerPixelBaselineForSemanticSegmentation`).

Class logits (B, K, h, w) go through MaskFormer's geometry (`resampling.Geometry`: U, crop, R), then softmax and
argmax, as detectron2's semantic heads. Panoptic and instance inference refuse them (`check_not_per_pixel`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .resampling import Geometry, image_sizes


def output_field(outputs: Any, name: str) -> Any:
    """A field of model outputs: a ModelOutput, any object, or a dict (None when missing)."""
    return outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)


def per_pixel_logits(outputs: Any) -> Tensor | None:
    """The (B, K, h, w) `logits` of a per-pixel classifier's outputs (no `class_queries_logits`), else None."""
    logits = output_field(outputs, "logits")
    if output_field(outputs, "class_queries_logits") is not None or not isinstance(logits, Tensor):
        return None
    if logits.ndim != 4:
        raise ValueError(f"per-pixel `logits` must be (B, K, h, w), got {tuple(logits.shape)}")
    return logits


def check_not_per_pixel(outputs: Any, task: str) -> None:
    """A clear error for panoptic or instance inference asked of a per-pixel classifier's outputs."""
    if per_pixel_logits(outputs) is not None:
        raise ValueError(
            f"{task} segmentation needs a mask-classification model (class_queries_logits and masks_queries_logits, "
            "e.g. MaskFormerForInstanceSegmentation); these outputs are a per-pixel classifier's (`logits` (B, K, h, "
            "w), e.g. PerPixelBaselineForSemanticSegmentation), which supports semantic segmentation only"
        )


@torch.no_grad()
def per_pixel_semantic_scores(
    logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    softmax: bool = True,
) -> list[Tensor]:
    """Per image, softmax_k(R(U(logits))), (K, H_t, W_t) float32 (test-time augmentation averages them); without
    `softmax`, R(U(logits)), whose argmax over k is the class map."""
    logits = logits.detach().float()  # (B, K, h, w), checked by `per_pixel_logits`
    padded = (int(padded_size[0]), int(padded_size[1]))
    results = []
    for b, (valid, target) in enumerate(image_sizes(len(logits), padded, valid_sizes, target_sizes)):
        scores = Geometry.of(tuple(logits.shape[-2:]), padded, valid, target, logits.device).full(logits[b])
        results.append(scores.softmax(0) if softmax else scores)
    return results
