"""MaskFormer inference: semantic, instance and panoptic maps from the class and mask predictions.

Pure tensor functions (no processor state); `MaskFormerImageProcessor.post_process_*` call them.

Shape legend: B batch, Q queries, K classes (+1 "no object", the last class logit), (h, w) the mask
logits at stride 4 of the padded input (H, W), (h_v, w_v) the real content of one image inside (H, W)
(padding is bottom/right), (H_t, W_t) the requested output size, N maps being resampled.

Resampling follows the paper's code (detectron2 `sem_seg_postprocess`): probabilities upsampled
bilinearly to the padded input, the padding cropped, then resized bilinearly to the target size.
Those two passes compose into one linear map in which every output pixel is a convex blend of a
small window (3x3 at stride 4) of low-resolution values (`_Resampler`). The functions use that to
stay exact without resampling every map at full resolution: window maxima/minima decide most pixels
at low resolution (which class or query wins, whether a mask passes its threshold), and only the
pixels of undecided windows, along boundaries, are evaluated, over the few maps still in contention.
The cost follows the boundary length instead of K x H_t x W_t. The literal implementations
(`_reference_*`, at the bottom) resample everything; the tests and `scripts/bench_postprocess.py`
check that both give the same pixels. They can differ only through float rounding on exact ties
(a probability exactly at mask_threshold, two maps exactly equal), which continuous logits avoid.

Output conventions (mirroring `transformers.MaskFormerImageProcessor` where it is correct):
- maps come at the target size, by default the valid size in input pixels (transformers: the
  stride-4 mask size when no target size is given).
- semantic: (H_t, W_t) int64 class ids.
- instance: `segmentation` (H_t, W_t) int32 segment ids 0..N-1, -1 where no instance (transformers
  fills -1 as well, in float32), or with `return_binary_maps` an (N, H_t, W_t) bool stack of each
  kept instance's full binary mask (overlaps allowed); `segments_info` sorted by descending score.
- panoptic: `segmentation` (H_t, W_t) int32 segment ids from 1, 0 where no segment. transformers also
  leaves 0 on unclaimed pixels but returns a float -1 map when no query passes; we return 0 throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .window_resampling import (
    _BOUND_SLACK,
    _WINDOW_STRIDE,
    _argmax_map,
    _image_sizes,
    _resample_dense,
    _Resampler,
    _sliding,
    _threshold_stats,
)


def _class_probs(class_logits: torch.Tensor) -> torch.Tensor:
    """(B, Q, K+1) logits -> (B, Q, K+1) float32 probabilities."""
    return class_logits.detach().float().softmax(-1)


# ----------------------------------------------------------------------------------------------------
# Semantic segmentation (paper Sec. 3.4, "semantic inference")
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def semantic_segmentation(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
) -> list[torch.Tensor]:
    """Per-pixel class maps: argmax_k sum_q p_q(k) * sigmoid(m_q), resampled to each target size.

    Returns one (H_t, W_t) int64 tensor of class ids per image. Unlike transformers 5.23, the padding
    is cropped before resizing, so a padded image gets the same map as when run alone.
    """
    probs = _class_probs(class_logits)[..., :-1]  # (B, Q, K)
    masks = mask_logits.detach().float().sigmoid()  # (B, Q, h, w)
    padded = (int(padded_size[0]), int(padded_size[1]))
    results = []
    for b, (valid, target) in enumerate(_image_sizes(len(probs), padded, valid_sizes, target_sizes)):
        segm = torch.einsum("qk,qhw->khw", probs[b], masks[b])  # (K, h, w)
        classes = _classes_in_contention(_Resampler(segm.shape[1:], padded, valid, target, segm.device), segm)
        resampler = _Resampler(segm.shape[1:], padded, valid, target, segm.device, stride=_WINDOW_STRIDE)
        results.append(_argmax_map(resampler, resampler.extend(segm[classes])).render(classes))
    return results


def _classes_in_contention(resampler: _Resampler, segm: torch.Tensor) -> torch.Tensor:
    """Ids of the classes of segm (K, h, w) that can be the argmax somewhere (usually a few of K).

    `resampler` must have stride 1 (every window start).
    Every output pixel of a window is at least the window min of any one class (a lower bound on the
    pixel's max, `floor`, taken over the classes on top at some low-res sample). A class can win only
    where one of its samples reaches the floor of a window holding that sample.
    """
    # NOTE: max-reductions of differences; comparisons reduced with .any() are several times slower.
    leaders = ((segm - segm.amax(0)).flatten(1).amax(1) >= 0).nonzero().squeeze(1)
    if not len(leaders):  # NaN scores: no bound to prune with
        return torch.arange(len(segm), device=segm.device)
    floor = resampler.window_extrema(resampler.extend(segm[leaders]))[1].amax(0)  # (R, C)
    floor = floor.masked_fill(resampler.block_sizes == 0, float(segm.amax()) + 1)  # windows without pixels
    (ky, kx), (y, x) = resampler.window, (resampler.y, resampler.x)
    # The lowest floor of the windows holding each sample. Every window holding a repeat of an edge
    # sample holds the sample itself, so the extension can simply be cropped.
    pad = (kx - 1, kx - 1, ky - 1, ky - 1)
    sample_floor = -_sliding(F.pad(-floor[None], pad, value=-torch.inf), torch.maximum, resampler.window)[0]
    sample_floor = sample_floor[y.head : y.head + segm.shape[1], x.head : x.head + segm.shape[2]]  # (h, w)
    lowered = sample_floor - _BOUND_SLACK * sample_floor.abs()
    return ((segm - lowered).flatten(1).amax(1) >= 0).nonzero().squeeze(1)


# ----------------------------------------------------------------------------------------------------
# Instance segmentation (Mask2Former-style top-k scoring)
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def instance_segmentation(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    return_binary_maps: bool = False,
) -> list[dict]:
    """Instances from the top-Q (query, class) pairs, scored like Mask2Former.

    score = p_q(k) * mean mask probability inside the binary mask (prob > mask_threshold); pairs
    scoring < threshold or with an empty mask are dropped. Each pixel goes to the instance with the
    highest score * prob among those whose binary mask covers it; an instance is kept only if its
    visible area / binary area >= overlap_mask_area_threshold (0 keeps every overlapping mask).
    transformers 5.23 ignores mask_threshold and the overlap threshold; here every argument counts.

    Returns per image {"segmentation", "segments_info": [{"id", "label_id", "was_fused", "score"}]};
    see the module docstring for the segmentation formats.
    """
    probs = _class_probs(class_logits)[..., :-1]  # (B, Q, K)
    num_queries, num_classes = probs.shape[1:]
    padded = (int(padded_size[0]), int(padded_size[1]))
    results = []
    for b, (valid, target) in enumerate(_image_sizes(len(probs), padded, valid_sizes, target_sizes)):
        class_scores, pairs = probs[b].flatten().topk(num_queries)  # best first
        # The mask factor is <= 1, so a pair whose class probability misses the threshold cannot pass.
        passing = class_scores >= threshold
        class_scores, pairs = class_scores[passing], pairs[passing]
        queries, query_of = torch.unique(pairs // num_classes, return_inverse=True)
        low_res = mask_logits[b, queries].detach().float().sigmoid()  # (U, h, w): each query once
        resampler = _Resampler(
            low_res.shape[1:], padded, valid, target, low_res.device, stride=_WINDOW_STRIDE
        )
        masks = resampler.extend(low_res)
        extrema = resampler.window_extrema(masks)
        area, inside = _threshold_stats(
            resampler, masks, mask_threshold, strict=True, with_sums=True, extrema=extrema
        )
        scores = class_scores * (inside / area.clamp(min=1)).float()[query_of]
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[(scores[order] >= threshold) & (area[query_of[order]] > 0)]
        source, scores, labels = query_of[order], scores[order], pairs[order] % num_classes  # N instances

        # Map n + 1 is instance n: score * prob where its binary mask covers the pixel, -1 elsewhere;
        # map 0, "no instance", is 0 (prob 1 covering everywhere, weight 0). The argmax is then the
        # covering instance with the highest score * prob, or no instance.
        weight = torch.cat([scores.new_zeros(1), scores])

        def covering(values: torch.Tensor, index: torch.Tensor, weight=weight) -> torch.Tensor:
            return torch.where(values > mask_threshold, values * weight[index], -1.0)

        maps = torch.cat([masks.new_ones(1, *masks.shape[1:]), masks[source]])  # (N + 1, h, w)
        maps_extrema = tuple(torch.cat([e.new_ones(1, *e.shape[1:]), e[source]]) for e in extrema)
        winners = _argmax_map(resampler, maps, covering, extrema=maps_extrema)
        visible = winners.counts(len(maps))[1:].tolist()
        area = area[source].tolist()
        kept = [visible[n] / area[n] >= overlap_mask_area_threshold for n in range(len(source))]

        segment_of = torch.full((len(maps),), -1, dtype=torch.int32, device=masks.device)  # per map
        segments = []
        for n, (label, score) in enumerate(zip(labels.tolist(), scores.tolist())):
            if kept[n]:
                segment_of[n + 1] = len(segments)
                segments.append(
                    {"id": len(segments), "label_id": label, "was_fused": False, "score": round(score, 6)}
                )
        if return_binary_maps:
            kept_masks = low_res[source[torch.tensor(kept, dtype=torch.bool, device=source.device)]]
            segmentation = _resample_dense(kept_masks, padded, valid, target) > mask_threshold
        else:
            segmentation = winners.render(segment_of)
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


# ----------------------------------------------------------------------------------------------------
# Panoptic segmentation (paper Sec. 3.4 / original `panoptic_inference`)
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def panoptic_segmentation(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
) -> list[dict]:
    """Non-overlapping segments: the paper's panoptic inference.

    Queries whose most likely class is not "no object" and whose probability p exceeds `threshold`
    compete per pixel by p * sigmoid(mask). A segment is dropped when its visible area is empty or
    < overlap_mask_area_threshold * its own area (prob >= mask_threshold); transformers 5.23 measures
    that own area on p * prob instead and keeps only ratios strictly above the threshold. Segments of
    a class in `label_ids_to_fuse` (stuff) share one id; `segments_info` lists each id once, with the
    score of its first query (transformers repeats the entry for every fused query).

    Returns per image {"segmentation": (H_t, W_t) int32, "segments_info": [{"id", "label_id",
    "was_fused", "score"}]}, ids from 1 in query order and 0 where no segment.
    """
    fuse = set() if label_ids_to_fuse is None else {int(label) for label in label_ids_to_fuse}
    probs = _class_probs(class_logits)
    num_classes = probs.shape[-1] - 1
    class_scores, class_labels = probs.max(-1)  # (B, Q)
    padded = (int(padded_size[0]), int(padded_size[1]))
    results = []
    for b, (valid, target) in enumerate(_image_sizes(len(probs), padded, valid_sizes, target_sizes)):
        keep = (class_labels[b] != num_classes) & (class_scores[b] > threshold)
        scores, labels = class_scores[b, keep], class_labels[b, keep]  # M kept queries
        if not len(scores):
            segmentation = torch.zeros(target, dtype=torch.int32, device=class_logits.device)
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        masks = mask_logits[b, keep].detach().float().sigmoid()  # (M, h, w)
        resampler = _Resampler(masks.shape[1:], padded, valid, target, masks.device, stride=_WINDOW_STRIDE)
        masks = resampler.extend(masks)
        extrema = resampler.window_extrema(masks)
        own_area = _threshold_stats(resampler, masks, mask_threshold, strict=False, extrema=extrema)[
            0
        ].tolist()
        winners = _argmax_map(
            resampler, masks, lambda values, m, scores=scores: values * scores[m], extrema=extrema
        )
        visible = winners.counts(len(scores)).tolist()

        segment_of = [0] * len(scores)
        segments, fused_ids = [], {}
        for m, (label, score) in enumerate(zip(labels.tolist(), scores.tolist())):
            if visible[m] == 0 or own_area[m] == 0 or visible[m] / own_area[m] < overlap_mask_area_threshold:
                continue
            if label in fused_ids:
                segment_of[m] = fused_ids[label]
                continue
            segment_of[m] = len(segments) + 1
            segments.append(
                {"id": segment_of[m], "label_id": label, "was_fused": label in fuse, "score": round(score, 6)}
            )
            if label in fuse:
                fused_ids[label] = segment_of[m]
        segmentation = winners.render(torch.tensor(segment_of, dtype=torch.int32, device=masks.device))
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


# ----------------------------------------------------------------------------------------------------
# Literal references: the algorithms above written plainly (every class or query resampled at full
# resolution, Python loops over segments). For tests and `scripts/bench_postprocess.py` only.
# ----------------------------------------------------------------------------------------------------
def _reference_semantic(class_logits, mask_logits, *, padded_size, valid_sizes=None, target_sizes=None):
    probs = class_logits.float().softmax(-1)[..., :-1]
    segm = torch.einsum("bqk,bqhw->bkhw", probs, mask_logits.float().sigmoid())
    sizes = _image_sizes(len(segm), padded_size, valid_sizes, target_sizes)
    return [_resample_dense(segm[b], tuple(padded_size), v, t).argmax(0) for b, (v, t) in enumerate(sizes)]


def _reference_instance(
    class_logits, mask_logits, *, padded_size, valid_sizes=None, target_sizes=None,
    threshold=0.5, mask_threshold=0.5, overlap_mask_area_threshold=0.8,
):  # fmt: skip
    probs = class_logits.float().softmax(-1)[..., :-1]
    num_queries, num_classes = probs.shape[1:]
    results = []
    for b, (valid, target) in enumerate(_image_sizes(len(probs), padded_size, valid_sizes, target_sizes)):
        mask_probs = _resample_dense(mask_logits[b].float().sigmoid(), tuple(padded_size), valid, target)
        candidates = []
        for pair in probs[b].flatten().topk(num_queries).indices.tolist():
            query, label = divmod(pair, num_classes)
            binary = mask_probs[query] > mask_threshold
            if binary.any():
                score = probs[b, query, label].item() * mask_probs[query][binary].mean().item()
                if score >= threshold:
                    candidates.append((score, query, label))
        candidates.sort(key=lambda candidate: -candidate[0])
        best, winner = torch.zeros(target), torch.full(target, -1)
        for n, (score, query, _) in enumerate(candidates):
            weighted = score * mask_probs[query] * (mask_probs[query] > mask_threshold)
            winner[weighted > best] = n
            best = torch.maximum(best, weighted)
        segmentation, segments = torch.full(target, -1, dtype=torch.int32), []
        for n, (score, query, label) in enumerate(candidates):
            area = (mask_probs[query] > mask_threshold).sum().item()
            if (winner == n).sum().item() / area >= overlap_mask_area_threshold:
                segmentation[winner == n] = len(segments)
                segments.append(
                    {"id": len(segments), "label_id": label, "was_fused": False, "score": round(score, 6)}
                )
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


def _reference_panoptic(
    class_logits, mask_logits, *, padded_size, valid_sizes=None, target_sizes=None,
    threshold=0.5, mask_threshold=0.5, overlap_mask_area_threshold=0.8, label_ids_to_fuse=None,
):  # fmt: skip
    fuse = set(label_ids_to_fuse or ())
    num_classes = class_logits.shape[-1] - 1
    class_scores, class_labels = class_logits.float().softmax(-1).max(-1)
    results = []
    for b, (valid, target) in enumerate(
        _image_sizes(len(class_scores), padded_size, valid_sizes, target_sizes)
    ):
        keep = (class_labels[b] != num_classes) & (class_scores[b] > threshold)
        scores, labels = class_scores[b, keep], class_labels[b, keep]
        segmentation, segments, fused_ids = torch.zeros(target, dtype=torch.int32), [], {}
        if len(scores):
            mask_probs = _resample_dense(
                mask_logits[b, keep].float().sigmoid(), tuple(padded_size), valid, target
            )
            winner = (scores.view(-1, 1, 1) * mask_probs).argmax(0)
            for m in range(len(scores)):
                label, area = labels[m].item(), (winner == m).sum().item()
                own_area = (mask_probs[m] >= mask_threshold).sum().item()
                if area == 0 or own_area == 0 or area / own_area < overlap_mask_area_threshold:
                    continue
                if label in fused_ids:
                    segment_id = fused_ids[label]
                else:
                    segment_id = len(segments) + 1
                    segments.append(
                        {
                            "id": segment_id,
                            "label_id": label,
                            "was_fused": label in fuse,
                            "score": round(scores[m].item(), 6),
                        }
                    )
                    if label in fuse:
                        fused_ids[label] = segment_id
                segmentation[winner == m] = segment_id
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results
