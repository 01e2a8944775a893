"""MaskFormer inference: semantic, instance and panoptic maps from the class and mask predictions.

Pure tensor functions (no processor state); `MaskFormerImageProcessor.post_process_*` call them.

This module is the authors' algorithm (facebookresearch/MaskFormer `mask_former_model.py`, `semantic_inference`
and `panoptic_inference`; instance inference from Mask2Former's `instance_inference`), in their order of
operations: the mask *logits* are upsampled bilinearly to the padded input (U), the padding is cropped and the
result resized bilinearly to the output size (R); the sigmoid comes
- for semantic inference, after U and before R: per-class scores sum_q p_q(k) * sigmoid(U(m_q)) are resized,
  then the argmax is taken;
- for panoptic and instance inference, after both resamplings.

It runs in bands of output rows (`resampling.py`): each band resamples only the logit rows it reads, so the
memory grows with the band and the output map, never with queries x output pixels; `band_rows` sets the band
(default: about `BAND_ELEMENTS` values per tensor). Every other step is the authors' as they wrote it.

`method` picks the evaluation, the same for the three tasks; all give the same maps (up to float rounding on
exact ties):
- "dense": this module, every query resampled at every output pixel, band by band;
- "bounded": a CPU accelerator (`bounded.py`, `bounded_masks.py`) that decides most pixels from bounds instead;
- "auto" (default): the one the cost model (`cost.py`) predicts faster for these sizes on this machine; always
  "dense" off the CPU.

Deliberate differences from the original, all documented in docs/inference.md (post-processing): the padding is cropped
before any resize (also for panoptic, where the original's outputs are at the padded size when not resized);
instance inference honours `threshold`, `mask_threshold` and `overlap_mask_area_threshold` and paints
non-overlapping maps; queries with non-finite logits are ignored with a warning.

Output conventions (mirroring `transformers.MaskFormerImageProcessor` where it is correct):
- maps come at the target size, by default the valid (unpadded) input size.
- semantic: (H_t, W_t) int64 class ids.
- instance: `segmentation` (H_t, W_t) int32 segment ids 0..N-1, -1 where no instance, or with
  `return_binary_maps` an (N, H_t, W_t) bool stack of each kept instance's full binary mask (overlaps allowed);
  `segments_info` sorted by descending score.
- panoptic: `segmentation` (H_t, W_t) int32 segment ids from 1, 0 where no segment.

Shape legend: B batch, Q queries, K classes (+1 "no object", the last class logit), (h, w) the mask logits at
stride 4 of the padded input (H, W), (h_v, w_v) one image's unpadded content, (H_t, W_t) the output size,
M kept queries (panoptic), U candidate queries and N instances (instance), rows: a band's output rows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .bounded import semantic as bounded_semantic
from .bounded import semantic_open_share
from .bounded_masks import InstanceMasks as BoundedInstanceMasks
from .bounded_masks import panoptic as bounded_panoptic
from .bounded_masks import panoptic_open_share
from .cost import evaluate, use_bounded
from .resampling import BAND_ELEMENTS, Geometry, Rows, image_sizes, take

logger = logging.getLogger(__name__)

Method = Literal["auto", "dense", "bounded"]


def _prepared(class_logits: Tensor, mask_logits: Tensor, padded_size, valid_sizes, target_sizes, masks=True):
    """float32 logits, the per-image geometry, and per image the ids of the queries with finite logits (class
    logits only, when `masks` is False: the caller checks the masks it uses with `_finite_maps`)."""
    class_logits, mask_logits = class_logits.detach().float(), mask_logits.detach().float()
    if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            "Expected class logits (B, Q, K + 1) and mask logits (B, Q, h, w), got "
            f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
        )
    padded = (int(padded_size[0]), int(padded_size[1]))
    sizes = image_sizes(len(class_logits), padded, valid_sizes, target_sizes)
    # NOTE: a sum is non-finite when any term is (or, rarely, when huge terms overflow: checked element-wise).
    finite = torch.isfinite(class_logits.sum(-1))  # (B, Q)
    if masks:
        finite &= torch.isfinite(mask_logits.sum((-2, -1)))
    if not finite.all():
        finite = torch.isfinite(class_logits).all(-1)
        if masks:
            finite &= torch.isfinite(mask_logits).flatten(2).all(-1)
        _warn_non_finite((~finite).sum(1).tolist(), finite.shape[1])
    queries = [row.nonzero().squeeze(1) for row in finite]
    geometries = [Geometry.of(tuple(mask_logits.shape[-2:]), padded, v, t, mask_logits.device) for v, t in sizes]
    return class_logits, mask_logits, geometries, queries


def _kept(values: Tensor, index: Tensor) -> Tensor:
    """values[index] along dim 0, without a copy when the index keeps every row (the usual case)."""
    return values if len(index) == len(values) else values[index]


def _warn_non_finite(dropped: list[int], total: int) -> None:
    if any(dropped):
        logger.warning("Ignoring queries with non-finite (NaN or inf) logits: %s of %d per image.", dropped, total)


def _finite_maps(logits: Tensor) -> Tensor:
    """(M, h, w) -> (M,) bool: which maps are finite everywhere (warns about the others)."""
    finite = torch.isfinite(logits.sum((-2, -1)))
    if not finite.all():
        finite = torch.isfinite(logits).flatten(1).all(1)
        _warn_non_finite([int((~finite).sum())], len(logits))
    return finite


def _check(method: Method, band_rows: int | None) -> None:
    if method not in ("auto", "dense", "bounded"):
        raise ValueError(f"method must be 'auto', 'dense' or 'bounded', got {method!r}")
    if band_rows is not None and (isinstance(band_rows, bool) or not isinstance(band_rows, int) or band_rows < 1):
        raise ValueError(f"band_rows must be a positive int (output rows per band) or None, got {band_rows!r}")


def _tiny(task: str, method: str) -> None:
    """One tiny image (8 queries, 4 classes, 8x8 logits of noise, so that every stage of each path runs) through a
    task's `method`: its fixed cost, for `cost.py`."""
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(1, 8, 5, generator=generator) * 3
    mask_logits = torch.randn(1, 8, 8, 8, generator=generator) * 4
    if task == "semantic":
        semantic_segmentation(class_logits, mask_logits, padded_size=(32, 32), method=method)
    elif task == "panoptic":
        panoptic_segmentation(class_logits, mask_logits, padded_size=(32, 32), threshold=0.0, method=method)
    else:
        instance_segmentation(class_logits, mask_logits, padded_size=(32, 32), threshold=0.0, method=method)


def _bands(geometry: Geometry, maps: int, band_rows: int | None):
    return geometry.bands(band_rows or geometry.band_rows(maps, BAND_ELEMENTS))


# ----------------------------------------------------------------------------------------------------
# Semantic segmentation (paper Sec. 3.4; the original's `semantic_inference` and `sem_seg_postprocess`)
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def semantic_segmentation(
    class_logits: Tensor,
    mask_logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    method: Method = "auto",
    band_rows: int | None = None,
) -> list[Tensor]:
    """Per-pixel class maps: argmax_k of R(sum_q p_q(k) * sigmoid(U(m_q))), one (H_t, W_t) int64 map per image.

    U upsamples the mask logits to the padded input, the padding is cropped, R resizes to the target size
    (the original's `semantic_inference` then `sem_seg_postprocess`). Unlike transformers 5.x, the sigmoid
    comes after the upsampling and the padding is cropped before resizing, so it never leaks into the map.
    """
    _check(method, band_rows)
    class_logits, mask_logits, geometries, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes
    )
    results = []
    for b, geometry in enumerate(geometries):
        probs = class_logits[b, queries[b]].softmax(-1)[:, :-1]  # (Q, K)
        logits = _kept(mask_logits[b], queries[b])  # (Q, h, w)
        paths = {
            "dense": functools.partial(_semantic_dense, probs, logits, geometry, band_rows),
            "bounded": functools.partial(bounded_semantic, probs, logits, geometry, band_rows),
        }
        probe = functools.partial(semantic_open_share, probs, logits)  # asked only if it matters
        counts = {"maps": len(logits), "classes": probs.shape[1], "open_share": probe, "tiny": _tiny}
        results.append(evaluate("semantic", method, geometry, paths, **counts))
    return results


def _semantic_dense(probs: Tensor, logits: Tensor, geometry: Geometry, band_rows: int | None) -> Tensor:
    """The original's semantic inference of one image, band by band: (H_t, W_t) int64."""
    segmentation = torch.empty(geometry.target, dtype=torch.long, device=logits.device)
    for rows in _bands(geometry, max(probs.shape), band_rows):
        # NOTE: max(0).indices, not argmax(0): the same first index on ties, and 3x faster on CPU (torch 2.x).
        segmentation[rows[0] : rows[1]] = _semantic_scores(probs, logits, geometry, rows).max(0).indices
    return segmentation


def _semantic_scores(probs: Tensor, logits: Tensor, geometry: Geometry, rows: Rows) -> Tensor:
    """The original's semantic scores over output rows rows[0]..rows[1]-1: (K, rows, W_t)."""
    sources = geometry.y.sources(rows)  # the rows of the cropped input these output rows blend
    masks = geometry.upsampled(logits, sources).sigmoid()  # (Q, source rows, w_v)
    scores = torch.einsum("qk,qhw->khw", probs, masks)  # (K, source rows, w_v)
    return geometry.resized(scores, rows, sources)


@torch.no_grad()
def semantic_scores(
    class_logits: Tensor,
    mask_logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    rows: tuple[int, int] | None = None,
) -> list[Tensor]:
    """The per-class score maps before the argmax: R(sum_q p_q(k) * sigmoid(U(m_q))), (K, H_t, W_t) float32
    per image, or only the output rows rows[0]..rows[1]-1 (to bound memory: K x rows x W_t).

    `semantic_segmentation` gives their argmax without holding them all; test-time augmentation averages them.
    """
    class_logits, mask_logits, geometries, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes
    )
    results = []
    for b, geometry in enumerate(geometries):
        probs = class_logits[b, queries[b]].softmax(-1)[:, :-1]  # (Q, K)
        first, last = rows if rows is not None else (0, geometry.target[0])
        if not 0 <= first < last <= geometry.target[0]:
            raise ValueError(f"rows {rows} are not a range of the {geometry.target[0]} output rows")
        results.append(_semantic_scores(probs, _kept(mask_logits[b], queries[b]), geometry, (first, last)))
    return results


# ----------------------------------------------------------------------------------------------------
# Panoptic segmentation (paper Sec. 3.4; the original's `panoptic_inference`)
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def panoptic_segmentation(
    class_logits: Tensor,
    mask_logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
    method: Method = "auto",
    band_rows: int | None = None,
) -> list[dict]:
    """Non-overlapping segments: the original's panoptic inference at the target size.

    Queries whose most likely class is not "no object" and whose probability p exceeds `threshold` compete
    per pixel by p * sigmoid(m) (m: the logits upsampled, cropped and resized to the target). A segment is
    dropped when its visible area is empty or < overlap_mask_area_threshold * its own area (pixels with
    sigmoid(m) >= mask_threshold); its pixels stay 0. Segments of a class in `label_ids_to_fuse` (stuff) share
    one id; `segments_info` lists each id once, with the score of its first query (transformers repeats the
    entry for every fused query).

    Returns per image {"segmentation": (H_t, W_t) int32, "segments_info": [{"id", "label_id", "was_fused",
    "score"}]}, ids from 1 in query order and 0 where no segment.
    """
    _check(method, band_rows)
    fuse = set() if label_ids_to_fuse is None else {int(label) for label in label_ids_to_fuse}
    class_logits, mask_logits, geometries, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes, masks=False
    )
    num_classes = class_logits.shape[-1] - 1
    results = []
    for b, geometry in enumerate(geometries):
        scores, labels = class_logits[b, queries[b]].softmax(-1).max(-1)  # (Q,)
        keep = (labels != num_classes) & (scores > threshold)
        scores, labels, logits = scores[keep], labels[keep], mask_logits[b, queries[b][keep]]  # M kept
        if len(logits):
            finite = _finite_maps(logits)
            if not finite.all():
                scores, labels, logits = scores[finite], labels[finite], logits[finite]
        if not len(scores):
            segmentation = torch.zeros(geometry.target, dtype=torch.int32, device=class_logits.device)
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        paths = {
            "dense": functools.partial(_panoptic_winners, scores, logits, geometry, mask_threshold, band_rows),
            "bounded": functools.partial(bounded_panoptic, scores, logits, geometry, mask_threshold, band_rows),
        }
        probe = functools.partial(panoptic_open_share, scores, logits, geometry, mask_threshold)
        winner, visible, own_area = evaluate(
            "panoptic", method, geometry, paths, maps=len(logits), open_share=probe, tiny=_tiny
        )
        segment_of = [0] * (len(scores) + 1)  # per kept query, its segment id (0: dropped)
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
        results.append({"segmentation": _relabel(winner, segment_of), "segments_info": segments})
    return results


def _panoptic_winners(scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows):
    """The original's `panoptic_inference` maps, band by band: the winning query of each pixel (H_t, W_t) int32,
    and per query its visible pixels and its own area (pixels with sigmoid >= mask_threshold), as lists."""
    winner = torch.empty(geometry.target, dtype=torch.int32, device=logits.device)
    visible = torch.zeros(len(scores), dtype=torch.long, device=logits.device)
    own_area = torch.zeros(len(scores), dtype=torch.long, device=logits.device)
    for rows in _bands(geometry, len(logits), band_rows):
        sources = geometry.y.sources(rows)
        masks = geometry.resized(geometry.upsampled(logits, sources), rows, sources).sigmoid()  # (M, rows, W_t)
        band = (scores[:, None, None] * masks).max(0).indices  # NOTE: as argmax(0), faster on CPU
        own_area += (masks >= mask_threshold).sum((1, 2))
        visible += torch.bincount(band.flatten(), minlength=len(scores))
        winner[rows[0] : rows[1]] = band
    return winner, visible.tolist(), own_area.tolist()


def _relabel(winner: Tensor, ids: list[int]) -> Tensor:
    """(H_t, W_t) int32 indices -> ids[index], in place, a band at a time (the int64 index stays small)."""
    lookup = torch.tensor(ids, dtype=torch.int32, device=winner.device)
    step = max(1, (1 << 22) // max(winner.shape[1], 1))
    for first in range(0, len(winner), step):
        band = winner[first : first + step]
        band.copy_(take(lookup, band.flatten().long()).view(band.shape))
    return winner


# ----------------------------------------------------------------------------------------------------
# Instance segmentation (Mask2Former's `instance_inference`)
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def instance_segmentation(
    class_logits: Tensor,
    mask_logits: Tensor,
    *,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    return_binary_maps: bool = False,
    method: Method = "auto",
    band_rows: int | None = None,
) -> list[dict]:
    """Instances from the top-Q (query, class) pairs, scored like Mask2Former at the target size.

    score = p_q(k) * mean of sigmoid(m_q) over the binary mask sigmoid(m_q) > mask_threshold (m: the logits
    upsampled, cropped and resized to the target). Pairs scoring < threshold or with an empty mask are dropped.
    Each pixel goes to the instance with the highest score * sigmoid among those whose binary mask covers it;
    an instance is kept only if its visible area / binary area >= overlap_mask_area_threshold (0 keeps every
    overlapping mask). transformers 5.x ignores mask_threshold and the overlap threshold.

    Returns per image {"segmentation", "segments_info": [{"id", "label_id", "was_fused", "score"}]}; see the
    module docstring for the segmentation formats.
    """
    _check(method, band_rows)
    class_logits, mask_logits, geometries, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes
    )
    results = []
    for b, geometry in enumerate(geometries):
        probs = class_logits[b, queries[b]].softmax(-1)[:, :-1]  # (Q, K)
        num_classes = probs.shape[1]
        class_scores, pairs = probs.flatten().topk(min(len(probs), probs.numel()))  # best first
        # The mask factor is <= 1, so a pair whose class probability misses the threshold cannot pass.
        passing = class_scores >= threshold
        class_scores, pairs = class_scores[passing], pairs[passing]
        candidates, query_of = torch.unique(pairs // num_classes, return_inverse=True)  # U queries
        if not len(candidates):
            segmentation = (
                torch.zeros(0, *geometry.target, dtype=torch.bool, device=probs.device)
                if return_binary_maps
                else torch.full(geometry.target, -1, dtype=torch.int32, device=probs.device)
            )
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        logits = mask_logits[b, queries[b][candidates]]  # (U, h, w)
        masks = InstanceMasks(logits, geometry, mask_threshold, band_rows)
        if method == "bounded" or (method == "auto" and geometry.device.type == "cpu"):
            boxed = BoundedInstanceMasks(logits, geometry, mask_threshold, band_rows)
            if use_bounded("instance", method, geometry, maps=len(logits), open_share=boxed.open_share, tiny=_tiny):
                masks = boxed
        area, total = masks.measure()  # (U,) each
        scores = class_scores * (total / (area + 1e-6))[query_of]  # Mask2Former's mean mask score
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[(scores[order] >= threshold) & (area[query_of[order]] > 0)]
        instance_query, scores = query_of[order].tolist(), scores[order]  # N instances, best first
        labels, area = (pairs[order] % num_classes).tolist(), area[query_of[order]].tolist()
        winner, visible = masks.winners(instance_query, scores)  # (H_t, W_t) int32, N where no instance
        kept = [visible[n] / area[n] >= overlap_mask_area_threshold for n in range(len(order))]
        segment_of, segments = [-1] * (len(order) + 1), []
        for n, (label, score) in enumerate(zip(labels, scores.tolist())):
            if kept[n]:
                segment_of[n] = len(segments)
                segments.append({"id": len(segments), "label_id": label, "was_fused": False, "score": round(score, 6)})
        if return_binary_maps:
            segmentation = masks.binary([u for u, keep in zip(instance_query, kept) if keep])
        else:
            segmentation = _relabel(winner, segment_of)
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


class InstanceMasks:
    """The candidate queries' masks at the output size, band by band: per band the binary masks `inside` (sigmoid(m_u)
    > mask_threshold) and `covered` (the sigmoid inside them, 0 outside), (U, rows, W_t) each. Mask2Former's
    `instance_inference` and our non-overlapping map read them. They are evaluated again for each question, unless
    the output is one band (small images), which is kept. `bounded_masks.InstanceMasks` answers the same questions,
    evaluating each candidate only where its mask can be."""

    def __init__(self, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows: int | None) -> None:
        self.logits, self.geometry, self.threshold = logits, geometry, mask_threshold
        self.bands = list(_bands(geometry, 3 * len(logits), band_rows))
        self.kept = None

    def _masks(self):
        for rows in self.bands:
            if self.kept is not None:
                yield self.kept
                continue
            sources = self.geometry.y.sources(rows)
            masks = self.geometry.upsampled(self.logits, sources)
            masks = self.geometry.resized(masks, rows, sources).sigmoid()  # (U, rows, W_t)
            # NOTE: the comparison written to a float tensor, then float products and sums: several times faster
            # on CPU than bool masks in arithmetic (measured with torch 2.x).
            inside = torch.gt(masks, self.threshold, out=torch.empty_like(masks))
            band = (rows, inside, masks.mul_(inside))
            if len(self.bands) == 1:
                self.kept = band
            yield band

    def measure(self) -> tuple[Tensor, Tensor]:
        """Per candidate, its binary mask's area (int64) and the sum of its sigmoid there, (U,) each."""
        area = torch.zeros(len(self.logits), dtype=torch.long, device=self.logits.device)
        total = torch.zeros(len(self.logits), dtype=torch.float64, device=self.logits.device)
        for _, inside, covered in self._masks():
            # NOTE: a float32 sum of 0/1 values is exact below 2^24 (a band holds fewer), faster than an int sum.
            area += inside.sum((1, 2)).long()
            total += covered.sum((1, 2))
        return area, total.float()

    def winners(self, instance_query: list[int], scores: Tensor) -> tuple[Tensor, list[int]]:
        """Per pixel, the instance whose binary mask covers it with the highest score * sigmoid (the first one on
        ties), or N where none does: (H_t, W_t) int32, and each instance's visible pixels (N + 1,) as a list.
        scores: (N,) in decreasing order."""
        count = len(instance_query)
        winner = torch.full(self.geometry.target, count, dtype=torch.int32, device=scores.device)
        if not count:
            return winner, [winner.numel()]
        visible = torch.zeros(count + 1, dtype=torch.long, device=scores.device)
        index = torch.tensor(instance_query, dtype=torch.long, device=scores.device)
        # NOTE: with every score * sigmoid inside a binary mask > 0 (scores and mask threshold not ~0), the maximum
        # of score * covered (0 outside the masks) is the covering instance's: one maximum over the stack.
        positive = float(scores[-1]) > 1e-15 and self.threshold > 1e-15
        for rows, inside, covered in self._masks():
            covered = covered.index_select(0, index) * scores[:, None, None]  # (N, rows, W_t)
            if not positive:
                covered = torch.where(inside.index_select(0, index) > 0, covered, -1.0)
            best, band = covered.max(0)  # NOTE: the first maximum: the best-scoring instance on ties
            band.masked_fill_(best <= 0 if positive else best < 0, count)
            visible += torch.bincount(band.flatten(), minlength=count + 1)
            winner[rows[0] : rows[1]] = band
        return winner, visible.tolist()

    def binary(self, queries: list[int]) -> Tensor:
        """(len(queries), H_t, W_t) bool: each query's binary mask."""
        maps = torch.empty(len(queries), *self.geometry.target, dtype=torch.bool, device=self.logits.device)
        index = torch.tensor(queries, dtype=torch.long, device=self.logits.device)
        for rows, inside, _ in self._masks():
            maps[:, rows[0] : rows[1]] = inside.index_select(0, index) > 0
        return maps
