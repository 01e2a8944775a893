"""Batches for the model: pixel values, pixel mask and per-image mask and class labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..image_processing import MaskFormerImageProcessor
from .dataset import instance_masks, to_instance_targets

# Batch keys `return_segment_maps=True` adds; give them to `TrainingArguments(label_names=...)`.
SEGMENT_MAP_KEYS = ("segment_map", "segment_classes")


class MaskFormerCollator:
    """A model batch through the image processor (a `collate_fn` or a Trainer's `data_collator`) from `TrainingSet`
    items (only padded here) or `SegmentationItem`s (resized here): `pixel_values`, `pixel_mask`, per image
    `mask_labels` (N_i, H, W) of `mask_dtype` (bool: a quarter of the memory) and `class_labels` (N_i,).
    `return_segment_maps=True` adds `segment_map` (B, H, W) (i >= 1 inside mask_labels[b][i - 1]) and
    `segment_classes` (B, N_max) (-1 past N_i), batch-first for `transformers.Trainer` to gather."""

    def __init__(
        self,
        processor: MaskFormerImageProcessor,
        return_segment_maps: bool = False,
        mask_dtype: torch.dtype = torch.float32,
    ):
        if mask_dtype not in (torch.float32, torch.bool):
            raise ValueError(f"MaskFormerCollator: mask_dtype must be torch.float32 or torch.bool, got {mask_dtype!r}")
        self.processor = processor
        self.return_segment_maps = return_segment_maps
        self.mask_dtype = mask_dtype

    def __call__(self, batch: Sequence) -> Mapping[str, object]:
        if not batch:
            raise ValueError("MaskFormerCollator got an empty batch")
        instance_data = isinstance(batch[0], Mapping) and batch[0].get("instances") is not None
        instance_data |= isinstance(batch[0], tuple | list) and len(batch[0]) == 3 and torch.is_tensor(batch[0][2])
        if instance_data and self.return_segment_maps:
            raise ValueError(
                "MaskFormerCollator: return_segment_maps cannot hold instance data (its objects may "
                "overlap, a segment map cannot)"
            )
        if all(isinstance(item, Mapping) for item in batch):
            features = self._from_dataset_items(batch)
        elif all(isinstance(item, tuple | list) and len(item) == 3 and torch.is_tensor(item[2]) for item in batch):
            images, masks, classes = zip(*batch)
            features = self.processor(list(images), do_resize=False, return_tensors="pt")
            self._add_masks(features, masks, [c.long() for c in classes])
        elif all(isinstance(item, tuple | list) and len(item) == 3 for item in batch):
            images, maps, mappings = zip(*batch)
            features = self.processor(
                list(images),
                segmentation_maps=[np.asarray(m) for m in maps],
                instance_id_to_semantic_id=list(mappings),
                do_resize=False,
                return_tensors="pt",
                mask_dtype=self.mask_dtype,
            )
        else:
            raise TypeError(
                "MaskFormerCollator takes dataset items (dicts with 'image' and 'semantic' or 'panoptic_ids') or "
                f"TrainingSet items (image, instance map, mapping), not a mix; got {[type(i).__name__ for i in batch]}"
            )
        if self.return_segment_maps:
            features["segment_map"], features["segment_classes"] = segment_maps(
                features["mask_labels"], features["class_labels"]
            )
        return features

    def _from_dataset_items(self, batch: Sequence[Mapping]):
        ignore_index = self.processor.ignore_index
        if ignore_index is None:
            raise ValueError("MaskFormerCollator needs a processor with an ignore_index for dataset items (e.g. 255)")
        if self.processor.do_reduce_labels:
            raise ValueError(
                "the processor has do_reduce_labels=True, but dataset items are already reduced (the loaders do it "
                "once); use a processor with do_reduce_labels=False"
            )
        if all(item.get("instances") is not None for item in batch):
            features = self.processor([item["image"] for item in batch], return_tensors="pt")
            masks, classes = [], []
            for item, valid in zip(batch, features["pixel_mask"]):
                size = [int(valid.any(1).sum()), int(valid.any(0).sum())]  # the resized image, before padding
                object_masks, labels = instance_masks(item)
                object_masks = torch.from_numpy(object_masks.view(np.uint8))  # (N, H, W) -> (N, h, w) nearest
                masks.append(TF.resize(object_masks, size, interpolation=InterpolationMode.NEAREST_EXACT).bool())
                classes.append(torch.from_numpy(labels))
            return self._add_masks(features, masks, classes)
        maps, mappings = zip(*(to_instance_targets(item, ignore_index) for item in batch))
        return self.processor(
            [item["image"] for item in batch],
            segmentation_maps=list(maps),
            instance_id_to_semantic_id=list(mappings),
            return_tensors="pt",
            mask_dtype=self.mask_dtype,
        )

    def _add_masks(self, features, masks: Sequence[torch.Tensor], classes: list[torch.Tensor]):
        """Each (N_i, h, w) mask stack zero-padded at the bottom and right to the batch's (H, W), of `mask_dtype`."""
        height, width = features["pixel_values"].shape[-2:]
        pad = [(0, width - m.shape[2], 0, height - m.shape[1]) for m in masks]
        features["mask_labels"] = [F.pad(m.to(self.mask_dtype), p) for m, p in zip(masks, pad)]
        features["class_labels"] = classes
        return features


def segment_maps(
    mask_labels: Sequence[torch.Tensor], class_labels: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment_map (B, H, W), segment_classes (B, N_max)), see `MaskFormerCollator`; masks must not overlap."""
    height, width = mask_labels[0].shape[-2:]
    most = max((len(c) for c in class_labels), default=0)
    segment_map = torch.zeros(len(mask_labels), height, width, dtype=torch.long)
    segment_classes = torch.full((len(mask_labels), most), -1, dtype=torch.long)
    for b, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
        if len(classes):
            ids = torch.arange(1, len(classes) + 1, dtype=torch.long)
            binary = masks.round().long() if masks.is_floating_point() else masks.long()
            segment_map[b] = (binary * ids[:, None, None]).sum(0)  # (N, H, W) -> (H, W)
            segment_classes[b, : len(classes)] = classes
    return segment_map, segment_classes
