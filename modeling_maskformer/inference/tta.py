"""Test-time augmentation (TTA) for semantic segmentation, as the authors' multi-scale results (facebookresearch/
MaskFormer `SemanticSegmentorWithTTA`, detectron2's `DatasetMapperTTA`): each view resizes the short side to one of
`min_sizes` (long side capped at `max_size`), also mirrored after the resize with `flip`; the per-class scores before
the argmax (`post_processing.semantic_scores`; the per-pixel baseline's softmax) of all views, mirrored back, are
averaged and their argmax is the class map. One size at a time, added into one (K, H_t, W_t) buffer a band of output
rows at a time, so memory does not grow with the number of sizes. K classes, (H_t, W_t) the output size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..image_processing.per_pixel_post_processing import per_pixel_logits, per_pixel_semantic_scores
from ..image_processing.post_processing import semantic_scores
from ..image_processing.validation import image_to_tensor

# The authors' ADE20K and COCO-Stuff configs test at these multiples of the single-scale test size
# (`TEST.AUG.MIN_SIZES` [256, ..., 896] for MIN_SIZE_TEST 512), the long side capped at 7x it (`TEST.AUG.MAX_SIZE`).
AUTHORS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
AUTHORS_MAX_RATIO = 7
BAND_ELEMENTS = 1 << 24  # float32 working memory per band of output rows (64 MiB)
# Images are converted once, here and in the pipeline; the image processor checks the size limits of each view.
NO_SIZE_LIMIT = {"min_side": 1, "max_side": 1 << 30, "max_pixels": 1 << 62}


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views: short sides `min_sizes`, long side capped at `max_size` (None: no cap), mirrored too with `flip`."""

    __test__ = False  # not a pytest test class, despite the name

    min_sizes: tuple[int, ...]
    max_size: int | None = None
    flip: bool = True

    def __post_init__(self) -> None:
        sizes = tuple(self.min_sizes) if isinstance(self.min_sizes, Sequence) else (self.min_sizes,)
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise InvalidInputError(f"min_sizes must be a non-empty list of positive ints, got {self.min_sizes!r}")
        if self.max_size is not None and not (isinstance(self.max_size, int) and self.max_size >= max(sizes)):
            raise InvalidInputError(
                f"max_size must be an int >= the largest min size {max(sizes)}, got {self.max_size!r}"
            )
        object.__setattr__(self, "min_sizes", sizes)

    @classmethod
    def from_test_size(
        cls,
        test_size: int,
        ratios: Sequence[float] = AUTHORS_RATIOS,
        max_ratio: float | None = AUTHORS_MAX_RATIO,
        flip: bool = True,
    ) -> TestTimeAugmentation:
        """The authors' ADE20K / COCO-Stuff scheme: short sides `ratios` x `test_size`, long side capped at
        `max_ratio` x `test_size` (512: [256, ..., 896], 3584)."""
        sizes = tuple(max(1, round(test_size * ratio)) for ratio in ratios)
        return cls(sizes, None if max_ratio is None else round(test_size * max_ratio), flip)

    @classmethod
    def for_processor(cls, processor, **kwargs: Any) -> TestTimeAugmentation:
        """`from_test_size` around the processor's own test size (`size["shortest_edge"]`)."""
        size = getattr(processor, "size", None) or {}
        if "shortest_edge" not in size:
            raise InvalidInputError(
                f"test-time augmentation needs a processor that resizes by its shortest edge, got size={size!r}"
            )
        return cls.from_test_size(int(size["shortest_edge"]), **kwargs)

    @property
    def num_views(self) -> int:
        return len(self.min_sizes) * (2 if self.flip else 1)


@torch.no_grad()
def semantic_scores_tta(
    model, processor, image: Any, augmentation: TestTimeAugmentation, *, target_size: Sequence[int] | None = None
) -> Tensor:
    """The per-class scores averaged over the views, (K, H_t, W_t) float32 on the model's device; `target_size`
    defaults to the image's. The model must be in eval mode."""
    pixels, _ = image_to_tensor(image, "image", **NO_SIZE_LIMIT)  # (C, h, w), decoded once for all views
    target = tuple(int(v) for v in (target_size or pixels.shape[-2:]))
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device, dtype = (parameter.device, parameter.dtype) if parameter is not None else ("cpu", torch.float32)
    total: Tensor | None = None  # (K, H_t, W_t)
    cap = {} if augmentation.max_size is None else {"longest_edge": augmentation.max_size}
    for min_size in augmentation.min_sizes:
        inputs = processor(pixels, return_tensors="pt", do_resize=True, size={"shortest_edge": min_size} | cap)
        pixel_values, pixel_mask = inputs["pixel_values"], inputs["pixel_mask"]  # (1, 3, H, W), (1, H, W)
        valid = (int(pixel_mask[0].any(1).sum()), int(pixel_mask[0].any(0).sum()))
        if augmentation.flip:
            # NOTE: mirrored after the resize, as detectron2's TTA does; the padding stays bottom/right.
            mirrored = pixel_values.clone()
            mirrored[..., : valid[0], : valid[1]] = pixel_values[..., : valid[0], : valid[1]].flip(-1)
            pixel_values, pixel_mask = torch.cat([pixel_values, mirrored]), pixel_mask.expand(2, -1, -1)
        outputs = model(pixel_values=pixel_values.to(device, dtype), pixel_mask=pixel_mask.to(device))
        geometry = {"padded_size": tuple(pixel_values.shape[-2:]), "valid_sizes": [valid], "target_sizes": [target]}
        per_pixel = per_pixel_logits(outputs)  # the per-pixel baseline's (V, K, h, w) class logits, else None
        if per_pixel is not None:
            logits, masks, band = per_pixel, None, target[0]  # NOTE: the softmax needs every class: one band
            classes = per_pixel.shape[1]
        else:
            # (V, Q, K+1), (V, Q, h, w)
            logits, masks = outputs["class_queries_logits"], outputs["masks_queries_logits"]
            classes = logits.shape[-1] - 1
            # Per output row: the upsampled maps and scores (source rows per output row x w_v), and K x W_t.
            maps = max(logits.shape[1], classes)
            per_row = maps * (valid[0] + 2) / target[0] * valid[1] + maps * target[1]
            band = max(1, min(target[0], int(BAND_ELEMENTS // max(per_row, 1))))
        if total is None:
            total = torch.zeros(classes, *target, device=logits.device)
        for view in range(len(pixel_values)):
            for first in range(0, target[0], band):
                rows = (first, min(first + band, target[0]))
                if per_pixel is not None:
                    scores = per_pixel_semantic_scores(per_pixel[view : view + 1], **geometry)[0]  # (K, H_t, W_t)
                else:
                    scores = semantic_scores(logits[view : view + 1], masks[view : view + 1], **geometry, rows=rows)[0]
                total[:, rows[0] : rows[1]] += scores.flip(-1) if view == 1 else scores  # view 1: the mirrored one
        del outputs, per_pixel, logits, masks, scores  # nothing of this size outlives it
    return total.div_(augmentation.num_views)


@torch.no_grad()
def semantic_segmentation_tta(
    model,
    processor,
    images: Any,
    augmentation: TestTimeAugmentation,
    *,
    target_sizes: Sequence[Sequence[int]] | None = None,
) -> list[Tensor]:
    """Per image, the (H_t, W_t) int64 class map of `semantic_scores_tta`."""
    images = images if isinstance(images, list | tuple) else [images]
    if target_sizes is not None and len(target_sizes) != len(images):
        raise InvalidInputError(f"Got {len(target_sizes)} target sizes for {len(images)} images.")
    targets = target_sizes or [None] * len(images)
    # NOTE: argmax over classes (first on ties) as max().indices, faster on CPU
    return [
        semantic_scores_tta(model, processor, image, augmentation, target_size=target).max(0).indices
        for image, target in zip(images, targets)
    ]
