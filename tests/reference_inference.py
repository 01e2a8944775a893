"""The authors' inference, written out literally as the correctness reference for post-processing.

Order of operations from facebookresearch/MaskFormer `mask_former_model.py` (`forward` at inference,
`semantic_inference`, `panoptic_inference`), detectron2's `sem_seg_postprocess`, and Mask2Former's
`instance_inference`:
- the mask logits of the whole batch are upsampled bilinearly (align_corners=False) to the padded input size;
- semantic (`SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE: False`): sigmoid, einsum "qc,qhw->chw" with the softmax
  class probabilities without the no-object column, then `sem_seg_postprocess` (crop the padding, resize
  bilinearly to the output size), then argmax over classes;
- panoptic (`True`): `sem_seg_postprocess` on the upsampled logits, then sigmoid; keep queries whose top class
  is not no-object and whose score > object_mask_threshold; argmax of score * mask; drop a segment whose area /
  area(mask >= 0.5) < overlap_threshold; merge stuff regions by class;
- instance (Mask2Former): logits after `sem_seg_postprocess`; top-k over queries x classes; binary mask =
  logits > 0; score = class probability * mean sigmoid inside the binary mask.

Our public API adds what transformers' processor offers on top (thresholds as arguments, a `mask_threshold`
that generalises the original's fixed 0.5 / logit 0, non-overlapping instance maps); those additions are
written here as plain loops after the original computation. Everything runs dense, in float32, per image.
Deliberate difference kept from our API: the padding is always cropped (the original's panoptic output is at
the padded size unless a resize is requested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sem_seg_postprocess(result: torch.Tensor, image_size, output_size) -> torch.Tensor:
    """detectron2: crop the padding, then resize bilinearly to the output size."""
    result = result[:, : image_size[0], : image_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=tuple(output_size), mode="bilinear", align_corners=False)[0]


def _sizes(batch_size, padded_size, valid_sizes, target_sizes):
    valid = valid_sizes or [tuple(padded_size)] * batch_size
    return list(zip(valid, target_sizes or valid))


def upsampled(mask_logits: torch.Tensor, padded_size) -> torch.Tensor:
    return F.interpolate(mask_logits.float(), size=tuple(padded_size), mode="bilinear", align_corners=False)


def semantic(class_logits, mask_logits, *, padded_size, valid_sizes=None, target_sizes=None):
    masks = upsampled(mask_logits, padded_size)
    results = []
    for b, (valid, target) in enumerate(_sizes(len(masks), padded_size, valid_sizes, target_sizes)):
        mask_cls = F.softmax(class_logits[b].float(), dim=-1)[..., :-1]
        semseg = torch.einsum("qc,qhw->chw", mask_cls, masks[b].sigmoid())
        results.append(sem_seg_postprocess(semseg, valid, target).argmax(0))
    return results


def panoptic(
    class_logits,
    mask_logits,
    *,
    padded_size,
    valid_sizes=None,
    target_sizes=None,
    threshold=0.5,
    mask_threshold=0.5,
    overlap_mask_area_threshold=0.8,
    label_ids_to_fuse=None,
):
    fuse = set(label_ids_to_fuse or ())
    masks = upsampled(mask_logits, padded_size)
    num_classes = class_logits.shape[-1] - 1
    results = []
    for b, (valid, target) in enumerate(_sizes(len(masks), padded_size, valid_sizes, target_sizes)):
        scores, labels = F.softmax(class_logits[b].float(), dim=-1).max(-1)
        mask_pred = sem_seg_postprocess(masks[b], valid, target).sigmoid()
        keep = labels.ne(num_classes) & (scores > threshold)
        cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
        panoptic_seg = torch.zeros(tuple(target), dtype=torch.int32)
        segments, current_segment_id, stuff_memory = [], 0, {}
        if len(cur_scores):
            cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
            for k in range(len(cur_classes)):
                pred_class = int(cur_classes[k])
                mask = cur_mask_ids == k
                mask_area = int(mask.sum())
                original_area = int((cur_masks[k] >= mask_threshold).sum())
                if mask_area > 0 and original_area > 0:
                    if mask_area / original_area < overlap_mask_area_threshold:
                        continue
                    if pred_class in fuse:
                        if pred_class in stuff_memory:
                            panoptic_seg[mask] = stuff_memory[pred_class]
                            continue
                        stuff_memory[pred_class] = current_segment_id + 1
                    current_segment_id += 1
                    panoptic_seg[mask] = current_segment_id
                    segments.append(
                        {
                            "id": current_segment_id,
                            "label_id": pred_class,
                            "was_fused": pred_class in fuse,
                            "score": round(float(cur_scores[k]), 6),
                        }
                    )
        results.append({"segmentation": panoptic_seg, "segments_info": segments})
    return results


def instance_candidates(class_logits_b, mask_pred, num_queries, mask_threshold=0.5):
    """Mask2Former's instance_inference on one image's target-size logits: (scores, labels, binary masks, probs)."""
    scores = F.softmax(class_logits_b.float(), dim=-1)[:, :-1]
    num_classes = scores.shape[1]
    labels = torch.arange(num_classes).unsqueeze(0).repeat(num_queries, 1).flatten(0, 1)
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(num_queries, sorted=False)
    labels_per_image = labels[topk_indices]
    mask_pred = mask_pred[torch.div(topk_indices, num_classes, rounding_mode="floor")]
    probs = mask_pred.sigmoid()
    pred_masks = (probs > mask_threshold).float()
    mask_scores = (probs.flatten(1) * pred_masks.flatten(1)).sum(1) / (pred_masks.flatten(1).sum(1) + 1e-6)
    return scores_per_image * mask_scores, labels_per_image, pred_masks.bool(), probs


def instance(
    class_logits,
    mask_logits,
    *,
    padded_size,
    valid_sizes=None,
    target_sizes=None,
    threshold=0.5,
    mask_threshold=0.5,
    overlap_mask_area_threshold=0.8,
):
    masks = upsampled(mask_logits, padded_size)
    results = []
    for b, (valid, target) in enumerate(_sizes(len(masks), padded_size, valid_sizes, target_sizes)):
        mask_pred = sem_seg_postprocess(masks[b], valid, target)
        scores, labels, binary, probs = instance_candidates(
            class_logits[b], mask_pred, class_logits.shape[1], mask_threshold
        )
        # Our additions: threshold, non-empty masks, best first; each pixel to the covering instance with the
        # highest score * probability (the earlier one on ties); drop instances mostly hidden by others.
        order = [
            int(i)
            for i in torch.argsort(scores, descending=True, stable=True)
            if scores[i] >= threshold and binary[i].any()
        ]
        best, winner = torch.full(tuple(target), -1.0), torch.full(tuple(target), -1)
        for n, i in enumerate(order):
            weighted = torch.where(binary[i], scores[i] * probs[i], torch.tensor(-1.0))
            winner[weighted > best] = n
            best = torch.maximum(best, weighted)
        segmentation, segments = torch.full(tuple(target), -1, dtype=torch.int32), []
        for n, i in enumerate(order):
            if (winner == n).sum().item() / binary[i].sum().item() >= overlap_mask_area_threshold:
                segmentation[winner == n] = len(segments)
                segments.append(
                    {
                        "id": len(segments),
                        "label_id": int(labels[i]),
                        "was_fused": False,
                        "score": round(float(scores[i]), 6),
                    }
                )
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results
