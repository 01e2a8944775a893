"""Batches of training items for the model: pixel values, pixel mask and per-image mask and class labels."""

from __future__ import annotations

from ..image_processing import MaskFormerImageProcessor


class MaskFormerCollator:
    """Batches augmented items through the image processor (rescale, normalise, pad, binary masks)."""

    def __init__(self, processor: MaskFormerImageProcessor):
        self.processor = processor

    def __call__(self, batch):
        images, maps, mappings = zip(*batch)
        return self.processor(list(images), segmentation_maps=[m.numpy() for m in maps],
                              instance_id_to_semantic_id=list(mappings), do_resize=False, return_tensors="pt")  # fmt: skip
