"""Evaluation with `transformers.Trainer`: mIoU, PQ (all / things / stuff) and mask AP per evaluation
(docs/training.md shows the `TrainingArguments` and collator it needs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from ..data.collator import SEGMENT_MAP_KEYS
from ..errors import InvalidInputError
from .evaluator import Evaluator, summary


class SegmentationTrainer(Trainer):
    """`transformers.Trainer` that reads the collator's evaluation targets (`segment_map`, `segment_classes`) as
    `label_ids` for `SegmentationMetrics` but keeps them out of the model's forward."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs = {key: value for key, value in inputs.items() if key not in SEGMENT_MAP_KEYS}
        return super().compute_loss(model, inputs, *args, **kwargs)


class SegmentationMetrics:
    """A `compute_metrics` for `TrainingArguments(batch_eval_metrics=True)`: the last batch's call returns `summary`'s
    numbers (mask AP with `thing_ids`; undefined values left out), at the processor's resolution.

    `predictions`: the model outputs but the loss (`class_queries_logits`, `masks_queries_logits`, then `pixel_mask`
    as the first integer (B, H, W) tensor). `label_ids`: `label_names`, the batch-first targets of
    `MaskFormerCollator(processor, return_segment_maps=True)`. NOTE: not `mask_labels` / `class_labels`: on the
    last batch Trainer slices every label tensor along dim 0, which would cut masks out of per-image lists.
    """

    label_names = list(SEGMENT_MAP_KEYS)

    def __init__(self, processor, id2label: Mapping[int, str], thing_ids: Iterable[int] = (), *, ignore_index=255):
        self.processor, self.ignore_index = processor, ignore_index
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.thing_ids = sorted({int(c) for c in thing_ids})
        self.reset()

    def reset(self) -> None:
        self.evaluator = Evaluator(
            self.id2label, thing_ids=self.thing_ids, ignore_index=self.ignore_index, panoptic=True
        )

    def __call__(self, eval_prediction, compute_result: bool | None = None) -> dict[str, float] | None:
        if compute_result is None:
            raise InvalidInputError(
                "SegmentationMetrics scores batch by batch: use TrainingArguments(batch_eval_metrics=True) "
                "(without it Trainer concatenates every mask logit of the evaluation set)"
            )
        outputs = _model_outputs(eval_prediction.predictions)
        segment_map, segment_classes = self._targets(eval_prediction.label_ids)
        if len(segment_map) != len(outputs["class_queries_logits"]):
            raise ValueError(f"{len(segment_map)} targets for {len(outputs['class_queries_logits'])} predictions")
        real = outputs.get("pixel_mask", torch.ones(segment_map.shape)).bool()  # (B, H, W)
        rows, cols = real.any(2).sum(1).tolist(), real.any(1).sum(1).tolist()  # each image's size without padding
        items = [self._item(segment_map[b, : rows[b], : cols[b]], segment_classes[b]) for b in range(len(rows))]
        self.evaluator.update(self.processor, outputs, items)
        if not compute_result:
            return None
        results = {key: value for key, value in summary(self.evaluator.compute()).items() if value is not None}
        self.reset()
        return results

    def _targets(self, label_ids: Any) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = label_ids if isinstance(label_ids, tuple | list) and len(label_ids) == 2 else ()
        tensors = [torch.as_tensor(t) for t in tensors if isinstance(t, torch.Tensor | np.ndarray)]
        if len(tensors) != 2 or tensors[0].ndim != 3 or tensors[1].ndim != 2 or tensors[0].is_floating_point():
            raise InvalidInputError(
                "SegmentationMetrics needs TrainingArguments(label_names=SegmentationMetrics.label_names) and "
                f"MaskFormerCollator(processor, return_segment_maps=True); got label_ids of type {type(label_ids).__name__}"
            )
        return tensors[0].cpu(), tensors[1].cpu()

    def _item(self, segment_map: torch.Tensor, segment_classes: torch.Tensor) -> dict:
        classes = segment_classes.tolist()
        present = [i for i, c in enumerate(classes, start=1) if c >= 0]  # Trainer pads with -100 across processes
        lookup = np.full(len(classes) + 1, self.ignore_index, dtype=np.int64)
        lookup[present] = [classes[i - 1] for i in present]
        ids = segment_map.numpy().clip(min=0)  # (H, W); padded by Trainer with -100 → no segment
        return {
            "semantic": lookup[ids],
            "panoptic_ids": ids,
            "segments_info": [{"id": i, "category_id": classes[i - 1], "iscrowd": 0} for i in present],
        }


def _model_outputs(predictions: Any) -> dict[str, torch.Tensor]:
    tensors = [torch.as_tensor(p) for p in predictions if isinstance(p, torch.Tensor | np.ndarray)]
    if len(tensors) < 2 or tensors[0].ndim != 3 or tensors[1].ndim != 4:
        raise InvalidInputError(
            "expected Trainer predictions holding class_queries_logits (B, Q, K+1) and masks_queries_logits "
            f"(B, Q, h, w); got {[tuple(t.shape) for t in tensors]}"
        )
    outputs = {"class_queries_logits": tensors[0], "masks_queries_logits": tensors[1]}
    pixel_mask = [t for t in tensors[2:] if t.ndim == 3 and not t.is_floating_point()]
    return outputs | ({"pixel_mask": pixel_mask[0]} if pixel_mask else {})
