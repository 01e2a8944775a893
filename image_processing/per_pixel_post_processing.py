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


def per_pixel_logits(outputs: Any) -> Tensor | None:
    """The (B, K, h, w) `logits` of a per-pixel classifier's outputs (no `class_queries_logits`), else None."""

    def field(name: str) -> Any:
        return outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)

    logits = field("logits")
    if field("class_queries_logits") is not None or not isinstance(logits, Tensor):
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


def _resampled(logits: Tensor, padded_size, valid_sizes, target_sizes):
    """Per image, R(U(logits)): (K, H_t, W_t) float32."""
    logits = logits.detach().float()  # (B, K, h, w), checked by `per_pixel_logits`
    padded = (int(padded_size[0]), int(padded_size[1]))
    for b, (valid, target) in enumerate(image_sizes(len(logits), padded, valid_sizes, target_sizes)):
        yield Geometry.of(tuple(logits.shape[-2:]), padded, valid, target, logits.device).full(logits[b])


@torch.no_grad()
def per_pixel_semantic_scores(
    logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
) -> list[Tensor]:
    """Per image, softmax_k(R(U(logits))), (K, H_t, W_t) float32 (test-time augmentation averages them)."""
    return [scores.softmax(0) for scores in _resampled(logits, padded_size, valid_sizes, target_sizes)]


@torch.no_grad()
def per_pixel_semantic_segmentation(
    logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
) -> list[Tensor]:
    """Per image, the (H_t, W_t) int64 class map argmax_k R(U(logits)) (the softmax does not change it)."""
    return [scores.max(0).indices for scores in _resampled(logits, padded_size, valid_sizes, target_sizes)]
