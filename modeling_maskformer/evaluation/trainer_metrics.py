"""`compute_metrics` for `transformers.Trainer`: mIoU, PQ (all / things / stuff) and mask AP per evaluation.

collator = MaskFormerCollator(processor, return_segment_maps=True)
args = TrainingArguments(..., batch_eval_metrics=True, label_names=SegmentationMetrics.label_names,
                         remove_unused_columns=False)
trainer = Trainer(model, args, data_collator=collator, train_dataset=..., eval_dataset=...,
                  compute_metrics=SegmentationMetrics(processor, id2label, thing_ids=...))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..data.collator import SEGMENT_MAP_KEYS
from .evaluator import Evaluator, summary


class SegmentationMetrics:
    """A `compute_metrics` for `Trainer(args=TrainingArguments(batch_eval_metrics=True, ...))`.

    Trainer calls it once per evaluation batch with an `EvalPrediction` and `compute_result` (True on the last
    batch). What it receives:
    - `predictions`: the model outputs other than the loss, as a tuple in output order: `loss_dict` (a dict,
      when labels were given), `class_queries_logits` (B, Q, K+1), `masks_queries_logits` (B, Q, H/4, W/4),
      `auxiliary_logits` (a list, with deep supervision), `pixel_mask` (B, H, W), then hidden states. It
      takes the first two tensors and the first integer (B, H, W) tensor after them.
    - `label_ids`: the batch keys named in `TrainingArguments.label_names`, which must be
      `SegmentationMetrics.label_names` = ("segment_map", "segment_classes"), the batch-first targets of
      `MaskFormerCollator(processor, return_segment_maps=True)`.
      NOTE: not the default `mask_labels` / `class_labels`: Trainer slices every tensor of a batch's labels
      along dimension 0 on the last batch (accelerate's `gather_for_metrics` removes the samples it
      duplicated to even out processes), which would cut masks out of a list of per-image (N, H, W) tensors.

    Ground truth is the processed targets: each segment of `segment_map` with its class; mIoU over all
    pixels inside the pixel mask with a target; PQ with every segment (things in `thing_ids`, the rest
    stuff); mask AP over thing segments if `thing_ids` is given. So scores are at the processor's input
    resolution, not the original one (`evaluate_model` scores at the original size). Returns on the last
    batch `mean_iou`, `pixel_accuracy`, `pq`, `sq`, `rq`, `pq_things`, `pq_stuff` and, with things,
    `mask_ap`, `mask_ap50` (values that are undefined are left out); then starts afresh.

    Batch size: the model does not read `pixel_mask`, so images padded to a larger batch-mate are predicted
    slightly differently. Use `per_device_eval_batch_size=1` or images of one size (e.g. fixed crops) when
    numbers must not depend on the batch size. Several processes need images of one size too (Trainer
    gathers outputs across processes by concatenation).
    """

    label_names = list(SEGMENT_MAP_KEYS)

    def __init__(
        self,
        processor,
        id2label: Mapping[int, str],
        thing_ids: Iterable[int] = (),
        *,
        ignore_index: int = 255,
    ):
        self.processor = processor
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.thing_ids = sorted({int(c) for c in thing_ids})
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.evaluator = Evaluator(
            self.id2label, thing_ids=self.thing_ids, ignore_index=self.ignore_index, panoptic=True
        )

    def __call__(self, eval_prediction, compute_result: bool | None = None) -> dict[str, float] | None:
        if compute_result is None:
            raise ValueError(
                "SegmentationMetrics scores batch by batch: use TrainingArguments(batch_eval_metrics=True) "
                "(without it Trainer concatenates every mask logit of the evaluation set)"
            )
        outputs = model_outputs(eval_prediction.predictions)
        segment_map, segment_classes = self._targets(eval_prediction.label_ids)
        if segment_map.shape[0] != outputs["class_queries_logits"].shape[0]:
            raise ValueError(
                f"{segment_map.shape[0]} targets for {outputs['class_queries_logits'].shape[0]} predictions"
            )
        pixel_mask = outputs.get("pixel_mask")
        items = []
        for b in range(segment_map.shape[0]):
            rows, cols = segment_map.shape[-2:]
            if pixel_mask is not None:
                real = pixel_mask[b].bool()
                rows, cols = int(real.any(1).sum()), int(real.any(0).sum())
            items.append(self._item(segment_map[b, :rows, :cols], segment_classes[b]))
        self.evaluator.update(self.processor, outputs, items)
        if not compute_result:
            return None
        results = {key: value for key, value in summary(self.evaluator.compute()).items() if value is not None}
        self.reset()
        return results

    def _targets(self, label_ids: Any) -> tuple[torch.Tensor, torch.Tensor]:
        ok = isinstance(label_ids, tuple | list) and len(label_ids) == 2
        ok = ok and all(isinstance(t, torch.Tensor | np.ndarray) for t in label_ids)
        if ok:
            segment_map, segment_classes = (torch.as_tensor(t) for t in label_ids)
            ok = segment_map.ndim == 3 and segment_classes.ndim == 2 and not segment_map.is_floating_point()
        if not ok:
            raise ValueError(
                "SegmentationMetrics needs TrainingArguments(label_names=SegmentationMetrics.label_names) and "
                "MaskFormerCollator(processor, return_segment_maps=True); got label_ids of type "
                f"{type(label_ids).__name__}"
            )
        return segment_map.cpu(), segment_classes.cpu()

    def _item(self, segment_map: torch.Tensor, segment_classes: torch.Tensor) -> dict:
        """One image's targets in the dataset item format (see `Evaluator`)."""
        classes = segment_classes.tolist()
        present = [i for i, c in enumerate(classes, start=1) if c >= 0]  # Trainer pads with -100 across processes
        lookup = np.full(len(classes) + 1, self.ignore_index, dtype=np.int64)
        for i in present:
            lookup[i] = classes[i - 1]
        ids = segment_map.numpy().clip(min=0)  # (H, W); padded by Trainer with -100 → no segment
        return {
            "semantic": lookup[ids],
            "panoptic_ids": ids.astype(np.int32),
            "segments_info": [{"id": i, "category_id": classes[i - 1], "iscrowd": 0} for i in present],
        }


def model_outputs(predictions: Any) -> dict[str, torch.Tensor]:
    """The post-processing inputs in a Trainer `predictions` tuple (see `SegmentationMetrics`), or a mapping."""
    if isinstance(predictions, Mapping):
        return {
            key: torch.as_tensor(predictions[key])
            for key in ("class_queries_logits", "masks_queries_logits", "pixel_mask")
            if predictions.get(key) is not None
        }
    tensors = [torch.as_tensor(p) for p in predictions if isinstance(p, torch.Tensor | np.ndarray)]
    if len(tensors) < 2 or tensors[0].ndim != 3 or tensors[1].ndim != 4:
        raise ValueError(
            "expected Trainer predictions holding class_queries_logits (B, Q, K+1) and masks_queries_logits "
            f"(B, Q, h, w); got {[tuple(t.shape) for t in tensors]}"
        )
    outputs = {"class_queries_logits": tensors[0], "masks_queries_logits": tensors[1]}
    pixel_mask = [t for t in tensors[2:] if t.ndim == 3 and not t.is_floating_point()]
    if pixel_mask:
        outputs["pixel_mask"] = pixel_mask[0]
    return outputs
