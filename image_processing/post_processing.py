"""MaskFormer inference: semantic, instance and panoptic maps from the class and mask predictions.

The authors' algorithm (facebookresearch/MaskFormer `semantic_inference`, `panoptic_inference`; Mask2Former's
`instance_inference`) in their order: logits upsampled to the padded input (U), cropped, resized to the output (R);
the sigmoid between U and R for semantic, after both otherwise. It runs a band of output rows at a time, so memory
follows the band (12-MP photos). `method`: "dense" (this module), "bounded" (the CPU accelerator, `bounded.py`,
`bounded_masks.py`: the same maps up to float ties), "auto" (the one `cost.py` predicts faster; dense off the CPU).

Deliberate differences from the original: the padding is cropped before any resize; instance inference honours
`threshold`, `mask_threshold` and `overlap_mask_area_threshold` and paints a non-overlapping map; queries with
non-finite logits are ignored with a warning. Outputs as transformers'; shapes: Q queries, K classes (+1 "no
object"), (h, w) the mask logits, (H_t, W_t) the output, M kept queries (panoptic), U candidates and N instances.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

# NOTE: names, not `from . import bounded`: transformers copies a remote-code folder's modules by following
# `from .module import name` lines only.
from .bounded import semantic as bounded_semantic
from .bounded import semantic_open_share
from .bounded_masks import InstanceMasks as BoundedInstanceMasks
from .bounded_masks import panoptic as bounded_panoptic
from .bounded_masks import panoptic_open_share
from .cost import use_bounded
from .resampling import BAND_ELEMENTS, Geometry, Rows, above, image_sizes, take

logger = logging.getLogger(__name__)

Method = Literal["auto", "dense", "bounded"]


def _images(class_logits: Tensor, mask_logits: Tensor, padded_size, valid_sizes, target_sizes, masks=True) -> list:
    """Per image: geometry, class (Q, K + 1) and mask (Q, h, w) float32 logits of the queries whose logits are
    finite (class logits only without `masks`: the caller checks the masks it uses)."""
    class_logits, mask_logits = class_logits.detach().float(), mask_logits.detach().float()
    if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            "Expected class logits (B, Q, K + 1) and mask logits (B, Q, h, w), got "
            f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
        )
    padded = (int(padded_size[0]), int(padded_size[1]))
    sizes = image_sizes(len(class_logits), padded, valid_sizes, target_sizes)
    finite = _finite(class_logits, mask_logits) if masks else _finite(class_logits)  # (B, Q)
    images = []
    for b, (valid, target) in enumerate(sizes):
        geometry = Geometry.of(tuple(mask_logits.shape[-2:]), padded, valid, target, mask_logits.device)
        if bool(finite[b].all()):  # the usual case: no copy
            images.append((geometry, class_logits[b], mask_logits[b]))
        else:
            images.append((geometry, class_logits[b, finite[b]], mask_logits[b, finite[b]]))
    return images


def _finite(*logits: Tensor, lead: int = 2) -> Tensor:
    """Which queries (the first `lead` dims) have all their logits finite; warns about the others."""
    # NOTE: a sum is non-finite when a term is (or, rarely, when huge terms overflow: then checked element-wise).
    finite = functools.reduce(torch.logical_and, [torch.isfinite(x.sum(tuple(range(lead, x.ndim)))) for x in logits])
    if not finite.all():
        finite = functools.reduce(torch.logical_and, [torch.isfinite(x).flatten(lead).all(-1) for x in logits])
        dropped = (~finite).sum(-1).view(-1).tolist()
        if any(dropped):
            message = "Ignoring queries with non-finite (NaN or inf) logits: %s of %d per image."
            logger.warning(message, dropped, finite.shape[-1])
    return finite


def _check(method: Method, band_rows: int | None) -> None:
    if method not in ("auto", "dense", "bounded"):
        raise ValueError(f"method must be 'auto', 'dense' or 'bounded', got {method!r}")
    if band_rows is not None and (isinstance(band_rows, bool) or not isinstance(band_rows, int) or band_rows < 1):
        raise ValueError(f"band_rows must be a positive int (output rows per band) or None, got {band_rows!r}")


def _bands(geometry: Geometry, maps: int, band_rows: int | None):
    return geometry.bands(band_rows or geometry.band_rows(maps, BAND_ELEMENTS))


def _tiny(task: str, method: str) -> None:
    """A tiny noisy image through a task's `method`: its fixed cost per image, for `cost.py`."""
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(1, 8, 5, generator=generator) * 3
    mask_logits = torch.randn(1, 8, 8, 8, generator=generator) * 4
    function = {"semantic": semantic_segmentation, "panoptic": panoptic_segmentation}.get(task, instance_segmentation)
    options = {} if task == "semantic" else {"threshold": 0.0}
    function(class_logits, mask_logits, padded_size=(32, 32), method=method, **options)


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

    Unlike transformers 5.x, the sigmoid comes after the upsampling and the padding is cropped before resizing,
    so it never leaks into the map.
    """
    _check(method, band_rows)
    results = []
    for geometry, classes, masks in _images(class_logits, mask_logits, padded_size, valid_sizes, target_sizes):
        probs = classes.softmax(-1)[:, :-1]  # (Q, K)
        share = functools.partial(semantic_open_share, probs, masks)  # asked only if it decides
        if use_bounded(
            "semantic", method, geometry, maps=len(masks), classes=probs.shape[1], open_share=share, tiny=_tiny
        ):
            results.append(bounded_semantic(probs, masks, geometry, band_rows))
            continue
        segmentation = torch.empty(geometry.target, dtype=torch.long, device=masks.device)
        for rows in _bands(geometry, max(probs.shape), band_rows):
            # NOTE: max(0).indices, not argmax(0): the same first index on ties, and 3x faster on CPU (torch 2.x).
            segmentation[rows[0] : rows[1]] = _semantic_scores(probs, masks, geometry, rows).max(0).indices
        results.append(segmentation)
    return results


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
    """The scores before the argmax: (K, H_t, W_t) float32 per image, or only `rows` (test-time augmentation)."""
    results = []
    for geometry, classes, masks in _images(class_logits, mask_logits, padded_size, valid_sizes, target_sizes):
        first, last = rows if rows is not None else (0, geometry.target[0])
        if not 0 <= first < last <= geometry.target[0]:
            raise ValueError(f"rows {rows} are not a range of the {geometry.target[0]} output rows")
        results.append(_semantic_scores(classes.softmax(-1)[:, :-1], masks, geometry, (first, last)))
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

    Queries whose most likely class is not "no object" and whose probability p exceeds `threshold` compete per
    pixel by p * sigmoid(m) (m: the logits upsampled, cropped and resized). A segment is dropped when its visible
    area is empty or < overlap_mask_area_threshold * its own area (pixels with sigmoid(m) >= mask_threshold); its
    pixels stay 0. Segments of a class in `label_ids_to_fuse` (stuff) share one id; `segments_info` lists each id
    once, with its first query's score (transformers repeats the entry for every fused query).

    Returns per image {"segmentation": (H_t, W_t) int32, "segments_info": [{"id", "label_id", "was_fused",
    "score"}]}, ids from 1 in query order.
    """
    _check(method, band_rows)
    fuse = set() if label_ids_to_fuse is None else {int(label) for label in label_ids_to_fuse}
    results = []
    images = _images(class_logits, mask_logits, padded_size, valid_sizes, target_sizes, masks=False)
    for geometry, classes, masks in images:
        scores, labels = classes.softmax(-1).max(-1)  # (Q,)
        keep = (labels != classes.shape[-1] - 1) & (scores > threshold)
        scores, labels, masks = scores[keep], labels[keep], masks[keep]  # M kept queries
        if len(masks):  # NOTE: only the masks read are checked (M maps, not Q)
            finite = _finite(masks, lead=1)
            if not finite.all():
                scores, labels, masks = scores[finite], labels[finite], masks[finite]
        if not len(scores):
            segmentation = torch.zeros(geometry.target, dtype=torch.int32, device=masks.device)
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        share = functools.partial(panoptic_open_share, scores, masks, geometry, mask_threshold)
        if use_bounded("panoptic", method, geometry, maps=len(masks), open_share=share, tiny=_tiny):
            mask_ids, mask_area, original_area = bounded_panoptic(scores, masks, geometry, mask_threshold, band_rows)
        else:
            mask_ids, mask_area, original_area = _panoptic_mask_ids(scores, masks, geometry, mask_threshold, band_rows)
        segment_of = [0] * (len(scores) + 1)  # per kept query, its segment id (0: dropped)
        segments, stuff_memory = [], {}
        for k, (label, score) in enumerate(zip(labels.tolist(), scores.tolist())):
            seen = mask_area[k] > 0 and original_area[k] > 0
            if not seen or mask_area[k] / original_area[k] < overlap_mask_area_threshold:
                continue
            if label in stuff_memory:
                segment_of[k] = stuff_memory[label]
                continue
            segment_of[k] = len(segments) + 1
            segments.append(
                {"id": segment_of[k], "label_id": label, "was_fused": label in fuse, "score": round(score, 6)}
            )
            if label in fuse:
                stuff_memory[label] = segment_of[k]
        results.append({"segmentation": _relabel(mask_ids, segment_of), "segments_info": segments})
    return results


def _panoptic_mask_ids(scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows):
    """The original's `cur_mask_ids` (H_t, W_t) int32, and per query `mask_area` and `original_area` (lists)."""
    mask_ids = torch.empty(geometry.target, dtype=torch.int32, device=logits.device)
    mask_area = torch.zeros(len(scores), dtype=torch.long, device=logits.device)
    original_area = torch.zeros(len(scores), dtype=torch.long, device=logits.device)
    for rows in _bands(geometry, len(logits), band_rows):
        sources = geometry.y.sources(rows)
        masks = geometry.resized(geometry.upsampled(logits, sources), rows, sources).sigmoid()  # (M, rows, W_t)
        band = (scores[:, None, None] * masks).max(0).indices  # NOTE: as argmax(0), faster on CPU
        original_area += (masks >= mask_threshold).sum((1, 2))
        mask_area += torch.bincount(band.flatten(), minlength=len(scores))
        mask_ids[rows[0] : rows[1]] = band
    return mask_ids, mask_area.tolist(), original_area.tolist()


def _relabel(index: Tensor, ids: list[int]) -> Tensor:
    """(H_t, W_t) int32 indices -> ids[index], in place, a band at a time (the int64 index stays small)."""
    lookup = torch.tensor(ids, dtype=torch.int32, device=index.device)
    step = max(1, (1 << 22) // max(index.shape[1], 1))
    for first in range(0, len(index), step):
        band = index[first : first + step]
        band.copy_(take(lookup, band.flatten().long()).view(band.shape))
    return index


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
    upsampled, cropped and resized). Pairs scoring < threshold or with an empty mask are dropped. Each pixel goes
    to the instance with the highest score * sigmoid among those whose binary mask covers it; an instance is kept
    only if its visible area / binary area >= overlap_mask_area_threshold (0 keeps every overlapping mask).
    transformers 5.x ignores mask_threshold and the overlap threshold.

    Returns per image {"segmentation", "segments_info": [{"id", "label_id", "was_fused", "score"}]}.
    """
    _check(method, band_rows)
    results = []
    for geometry, classes, logits in _images(class_logits, mask_logits, padded_size, valid_sizes, target_sizes):
        probs = classes.softmax(-1)[:, :-1]  # (Q, K)
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
        masks = InstanceMasks(logits[candidates], geometry, mask_threshold, band_rows)
        if method == "bounded" or (method == "auto" and geometry.device.type == "cpu"):
            boxed = BoundedInstanceMasks(logits[candidates], geometry, mask_threshold, band_rows)
            if use_bounded(
                "instance", method, geometry, maps=len(candidates), open_share=boxed.open_share, tiny=_tiny
            ):
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
    """The candidates' masks band by band: `inside` (sigmoid > mask_threshold, 1.0 / 0.0) and `covered` (the
    sigmoid inside, 0 outside), (U, rows, W_t) each; kept when one band. `BoundedInstanceMasks` is its accelerator."""

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
            inside = above(masks, self.threshold)
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
        """Per pixel, the covering instance with the highest score * sigmoid (the first on ties), N where none:
        (H_t, W_t) int32, and each instance's visible pixels (N + 1,). scores: (N,), decreasing."""
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
