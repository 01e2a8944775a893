"""MaskFormer inference: semantic, instance and panoptic maps from the class and mask predictions.

Pure tensor functions (no processor state); `MaskFormerImageProcessor.post_process_*` call them.

Each follows the authors' order of operations (facebookresearch/MaskFormer `mask_former_model.py`; instance
inference from Mask2Former): the mask *logits* are upsampled bilinearly to the padded input, the padding is
cropped and the result resized bilinearly to the output size; the sigmoid comes
- for semantic inference, after the upsampling and before the resize: per-class scores
  sum_q p_q(k) * sigmoid(upsampled logits of q) are resized, then the argmax is taken;
- for panoptic and instance inference, after both resamplings.

Two evaluations, chosen by one `method` argument shared by the three tasks:
- "dense" is the specification: the original's computation, written as plainly as the authors' (every query
  resampled at every pixel with torch's resizes). The default off the CPU;
- "bounded" gives the same maps (up to float rounding on exact ties) without resampling every query at every pixel
  (`resampling.py`: each output pixel depends on a 2x2 to 3x3 window of logits, and both resamplings are convex
  blends, so a window's extrema bound its pixels). Semantic: bounds on score *differences* (the winning class
  against each other one, query by query) decide blocks of cells, then cells; the rest is scored exactly over the
  classes still in contention. Panoptic: each tile's winning query and its threshold counts come from the bounds
  where they are certain. Instance: each candidate query is evaluated over the bounding box of the output pixels
  whose windows hold a logit that can reach the mask threshold. It syncs with the host and loops in Python, a CPU
  design;
- "auto" (default): dense off the CPU, and on the CPU for inputs below a measured size (`DENSE_LIMITS`).

Deliberate differences from the original, all documented in the README: the padding is cropped before any
resize (also for panoptic, where the original's outputs are at the padded size when not resized); instance
inference honours `threshold`, `mask_threshold` and `overlap_mask_area_threshold` and paints non-overlapping
maps; queries with non-finite logits are ignored with a warning.

Output conventions (mirroring `transformers.MaskFormerImageProcessor` where it is correct):
- maps come at the target size, by default the valid (unpadded) input size.
- semantic: (H_t, W_t) int64 class ids.
- instance: `segmentation` (H_t, W_t) int32 segment ids 0..N-1, -1 where no instance, or with
  `return_binary_maps` an (N, H_t, W_t) bool stack of each kept instance's full binary mask (overlaps allowed);
  `segments_info` sorted by descending score.
- panoptic: `segmentation` (H_t, W_t) int32 segment ids from 1, 0 where no segment.

Shape legend: B batch, Q queries, K classes (+1 "no object", the last class logit), (h, w) the mask logits at
stride 4 of the padded input (H, W), (h_v, w_v) one image's unpadded content, (H_t, W_t) the output size,
T tiles (output pixels grouped by the window they depend on), n pixels evaluated exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .resampling import CellPixels, Geometry, Pixels, image_sizes, mix, take

logger = logging.getLogger(__name__)

Method = Literal["auto", "dense", "bounded"]
# NOTE: "auto" is dense off the CPU (the dense path's few large kernels beat the bounded path's many small ones and
# host syncs there), and on the CPU while maps x (valid + output pixels), the pixels resampled, stays at or below
# the task's limit: maps are all queries for semantic, the kept queries for panoptic, the candidate queries for
# instance. Crossovers measured on 2 cores (Xeon with AVX-512, torch 2.14, 1 thread, one trained model's outputs
# at 32-576 px): semantic dense faster up to ~1e6, bounded 1.7-3x faster from 3e6; instance even at 2.6e5, box
# path 1.3-2.3x faster above; panoptic dense faster up to 2.4e6 (no resize), bounded faster from ~4e6 (3x at the
# crafted ADE-like 1.4e7).
DENSE_LIMITS = {"semantic": 1 << 21, "instance": 1 << 18, "panoptic": 1 << 22}
# Decisions from bounds need a margin above float rounding, relative to the scores' magnitude: the float32
# sums of the original itself differ from exact arithmetic by ~1e-7 of it.
_SLACK = 1e-6
_BLOCK = 4  # cells per side of a block in the first round of semantic decisions (measured: 4 beats 8)


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
    return class_logits, mask_logits, padded, sizes, queries


def _warn_non_finite(dropped: list[int], total: int) -> None:
    if any(dropped):
        logger.warning(
            "Ignoring queries with non-finite (NaN or inf) logits: %s of %d per image.", dropped, total
        )


def _finite_maps(logits: Tensor) -> Tensor:
    """(M, h, w) -> (M,) bool: which maps are finite everywhere (warns about the others)."""
    finite = torch.isfinite(logits.sum((-2, -1)))
    if not finite.all():
        finite = torch.isfinite(logits).flatten(1).all(1)
        _warn_non_finite([int((~finite).sum())], len(logits))
    return finite


def _check_method(method: Method) -> None:
    if method not in ("auto", "dense", "bounded"):
        raise ValueError(f"method must be 'auto', 'dense' or 'bounded', got {method!r}")


def _use_dense(task: str, method: Method, maps: int, geometry: Geometry) -> bool:
    """The one rule of the three tasks: dense when asked, or for "auto" off the CPU or for small inputs."""
    if method != "auto":
        return method == "dense"
    pixels = geometry.y.valid * geometry.x.valid + geometry.target[0] * geometry.target[1]
    return geometry.device.type != "cpu" or maps * pixels <= DENSE_LIMITS[task]


# ----------------------------------------------------------------------------------------------------
# Semantic segmentation (paper Sec. 3.4, "semantic inference")
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
) -> list[Tensor]:
    """Per-pixel class maps: argmax_k of R(sum_q p_q(k) * sigmoid(U(m_q))), one (H_t, W_t) int64 map per image.

    U upsamples the mask logits to the padded input, the padding is cropped, R resizes to the target size
    (the original's `semantic_inference` then `sem_seg_postprocess`). Unlike transformers 5.x, the sigmoid
    comes after the upsampling and the padding is cropped before resizing, so it never leaks into the map.
    `method`: "dense" (the original's computation), "bounded" (the same maps from bounds, for large inputs on
    CPU) or "auto" (`_use_dense`).
    """
    _check_method(method)
    class_logits, mask_logits, padded, sizes, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes
    )
    results = []
    for b, (valid, target) in enumerate(sizes):
        probs = class_logits[b, queries[b]].softmax(-1)[:, :-1]  # (Q, K)
        logits = mask_logits[b, queries[b]]  # (Q, h, w)
        geometry = Geometry.of(tuple(logits.shape[-2:]), padded, valid, target, logits.device)
        if _use_dense("semantic", method, len(logits), geometry):
            results.append(_semantic_dense(probs, logits, geometry))
        else:
            results.append(_semantic_bounded(probs, logits, geometry))
    return results


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

    `semantic_segmentation` gives their argmax without computing them all; test-time augmentation averages them.
    """
    class_logits, mask_logits, padded, sizes, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes
    )
    results = []
    for b, (valid, target) in enumerate(sizes):
        probs = class_logits[b, queries[b]].softmax(-1)[:, :-1]  # (Q, K)
        geometry = Geometry.of(tuple(mask_logits.shape[-2:]), padded, valid, target, mask_logits.device)
        first, last = rows if rows is not None else (0, target[0])
        if not 0 <= first < last <= target[0]:
            raise ValueError(f"rows {rows} are not a range of the {target[0]} output rows")
        results.append(_score_rows(probs, mask_logits[b, queries[b]], geometry, first, last))
    return results


def _score_rows(probs: Tensor, logits: Tensor, geometry: Geometry, first: int, last: int) -> Tensor:
    """Semantic scores of output rows first..last-1, (K, rows, W_t): the padded rows these outputs blend,
    upsampled (U) along each axis, sigmoid, classes, then resized (R) along each axis."""
    ay, ax = geometry.y, geometry.x
    outputs = torch.arange(first, last, device=logits.device)
    above, below = ay.src0[outputs], ay.src1[outputs]
    # NOTE: only the source rows the outputs use (about two per output row when shrinking a large view).
    sources, where = torch.unique(torch.cat([above, below]), return_inverse=True)
    upsampled = mix(  # (Q, source rows, w), then (Q, source rows, w_v)
        logits.index_select(1, ay.tap0[sources]),
        logits.index_select(1, ay.tap1[sources]),
        ay.tap_weight[sources, None],
    )
    columns = torch.arange(ax.valid, device=logits.device)
    upsampled = mix(
        upsampled.index_select(2, ax.tap0[columns]),
        upsampled.index_select(2, ax.tap1[columns]),
        ax.tap_weight,
    ).sigmoid_()
    scores = torch.einsum("qk,qhw->khw", probs, upsampled)  # (K, source rows, w_v)
    count = len(outputs)
    scores = mix(
        scores.index_select(1, where[:count]),
        scores.index_select(1, where[count:]),
        ay.src_weight[outputs, None],
    )
    return mix(scores.index_select(2, ax.src0), scores.index_select(2, ax.src1), ax.src_weight)


def _semantic_dense(probs: Tensor, logits: Tensor, geometry: Geometry) -> Tensor:
    """The original's `semantic_inference` and `sem_seg_postprocess`, with torch's resizes: (H_t, W_t) int64."""
    masks = geometry.upsampled(logits).sigmoid()  # (Q, h_v, w_v)
    scores = torch.einsum("qk,qhw->khw", probs, masks)  # (K, h_v, w_v)
    # NOTE: max(0).indices, not argmax(0): the same first index on ties, and 3x faster on CPU (torch 2.x).
    return geometry.resized(scores).max(0).indices


def _semantic_bounded(probs: Tensor, logits: Tensor, geometry: Geometry) -> Tensor:
    """Decisions from the coarse to the fine, then exact scores where none decides.

    Cells are the 2x2 windows of logits (all the padded pixels between four low-res samples): bounds over a
    cell are tight. Blocks of 4x4 cells (overlapping by one cell, so that every tile's window lies in one
    block's) decide whole regions and give the classes the finer steps still need. A tile's window is one
    cell, or two or four adjacent ones where its pixels' sources straddle cells; it is decided when its cells
    are, with the same class (an output pixel blends source pixels that all rank that class first). The
    remaining tiles get exact scores over the classes still in contention.
    """
    low, high = (bound.sigmoid_() for bound in _cell_extrema(logits))  # (Q, h, w) each
    slack = _SLACK * float(probs.sum(0).max())
    block_low, block_high = _blocks(low, torch.amin), _blocks(high, torch.amax)
    decided, guess, contenders = _dominance(probs, block_low.flatten(1).t(), block_high.flatten(1).t(), slack)
    block_classes = contenders.nonzero().squeeze(1)
    (h, w), blocks = geometry.low, block_low.shape[1:]
    cell_block = (torch.arange(h, device=probs.device) // _BLOCK)[:, None] * blocks[1] + torch.arange(
        w, device=probs.device
    ) // _BLOCK  # (h, w) block id of each cell
    cell_block = cell_block.flatten()
    cell_label, cell_decided = take(guess, cell_block), take(decided, cell_block)
    open_cells = (~cell_decided).nonzero().squeeze(1)
    classes = block_classes[:0]
    if len(open_cells):
        cell_decided[open_cells], cell_guess, contenders = _dominance(
            probs[:, block_classes],
            low.flatten(1).index_select(1, open_cells).t(),
            high.flatten(1).index_select(1, open_cells).t(),
            slack,
        )
        cell_label[open_cells] = block_classes[cell_guess]
        classes = block_classes[contenders]
    # Tiles from their cells: first (window) and last cell along each axis.
    ay, ax = geometry.y, geometry.x
    first_y, first_x = ay.keys // 2, ax.keys // 2
    last_y, last_x = (first_y + ay.keys % 2).clamp_(max=h - 1), (first_x + ax.keys % 2).clamp_(max=w - 1)
    corners = [(r[:, None] * w + c[None, :]).flatten() for r in (first_y, last_y) for c in (first_x, last_x)]
    per_tile = take(cell_label, corners[0])
    tile_decided = take(decided, take(cell_block, corners[0]))  # inside a decided block's window
    agreeing = take(cell_decided, corners[0])
    for corner in corners[1:]:
        agreeing &= take(cell_decided, corner) & (take(cell_label, corner) == per_tile)
    tile_decided |= agreeing
    open_tiles = (~tile_decided).nonzero().squeeze(1)
    if bool((ay.keys % 2).any() or (ax.keys % 2).any()):
        # NOTE: a tile straddling cells decided for different classes may be won by a third class; only the
        # block's test covers its whole window, so all the block contenders stay in.
        classes = block_classes
    segmentation = geometry.paint(per_tile)
    if len(open_tiles):
        rows, cols, _ = geometry.pixels_of(open_tiles)
        if CellPixels.applies(geometry):  # the upsampling cell by cell
            pixels = CellPixels(geometry, rows, cols)
            masks = pixels.cell_logits(logits).sigmoid_()  # (16 * n_cells, Q)
        else:
            pixels = Pixels(geometry, rows, cols)
            masks = pixels.source_logits(logits).sigmoid_()  # (n_s, Q)
        scores = pixels.blend(torch.mm(masks, probs[:, classes]))  # (n, K_c)
        segmentation.view(-1)[geometry.flat_index(rows, cols)] = take(classes, scores.max(1).indices)
    return segmentation


def _cell_extrema(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(C, h, w) -> minimum and maximum over each 2x2 window logits[:, i : i + 2, j : j + 2] (cut at the edges)."""

    def reduce(values: Tensor, op) -> Tensor:
        for dim in (1, 2):
            n = values.shape[dim]
            out = values.clone()
            if n > 1:
                head = out.narrow(dim, 0, n - 1)
                head.copy_(op(head, values.narrow(dim, 1, n - 1)))
            values = out
        return values

    return reduce(logits, torch.minimum), reduce(logits, torch.maximum)


def _dominance(probs: Tensor, low: Tensor, high: Tensor, slack: float) -> tuple[Tensor, Tensor, Tensor]:
    """Which class wins in each region, from per-query bounds of the sigmoid there.

    probs (Q, K); low, high (R, Q) bounds of each query's sigmoid over each of R regions. The guess is the class
    with the best score at the lower bounds; then, for every class k, a lower bound on score(guess) - score(k):
    query q adds d_q * sigmoid with d_q = p_q(guess) - p_q(k), least at the lower bound where d_q > 0 and at
    the upper one where d_q < 0, i.e. low @ d - (high - low) @ max(-d, 0). Returns per region whether the guess
    wins for certain (every bound > slack) and the guess, (R,) each, and the classes that may win in an
    undecided region, (K,) bool.
    """
    at_low = torch.mm(low, probs)  # (R, K) scores at the lower bounds
    guess = at_low.max(1).indices  # (R,) NOTE: as argmax(1), faster on CPU
    spread = high - low  # (R, Q)
    decided = torch.zeros(len(guess), dtype=torch.bool, device=probs.device)
    contenders = torch.zeros(probs.shape[1], dtype=torch.bool, device=probs.device)
    for label in torch.unique(guess).tolist():
        members = (guess == label).nonzero().squeeze(1)
        scores = at_low[members]
        margin = (scores[:, label : label + 1] - scores).sub_(
            torch.mm(spread[members], (probs - probs[:, label : label + 1]).clamp_(min=0))
        )  # (R_label, K) lower bounds
        margin[:, label] = math.inf
        beaten = margin > slack
        won = beaten.all(1)
        decided[members] = won
        if not bool(won.all()):
            contenders |= (~beaten[~won]).any(0)
            contenders[label] = True
    return decided, guess, contenders


def _blocks(values: Tensor, reduce) -> Tensor:
    """(C, h, w) cell bounds -> (C, B_y, B_x) block bounds: `reduce` (torch.amin / amax) over cells
    _BLOCK * b .. _BLOCK * (b + 1) inclusive along each axis (one cell of overlap with the next block; cut at the
    edges)."""
    for dim in (1, 2):
        n = values.shape[dim]
        count = -(-n // _BLOCK)
        extra = count * _BLOCK + 1 - n  # repeat the last cell: it is inside the last block already
        last = values.narrow(dim, n - 1, 1)
        padded = torch.cat(
            [values, last.expand(*[extra if d == dim else -1 for d in range(values.ndim)])], dim
        )
        main = padded.narrow(dim, 0, count * _BLOCK)
        shape = list(main.shape)
        shape[dim : dim + 1] = [count, _BLOCK]
        reduced = reduce(main.reshape(shape), dim=dim + 1)
        overlap = padded.narrow(dim, _BLOCK, count * _BLOCK - _BLOCK + 1)[
            tuple(slice(None, None, _BLOCK) if d == dim else slice(None) for d in range(values.ndim))
        ]
        values = reduce(torch.stack([reduced, overlap]), dim=0)
    return values


# ----------------------------------------------------------------------------------------------------
# Panoptic segmentation (paper Sec. 3.4 / the original `panoptic_inference`)
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
) -> list[dict]:
    """Non-overlapping segments: the original's panoptic inference at the target size.

    Queries whose most likely class is not "no object" and whose probability p exceeds `threshold` compete
    per pixel by p * sigmoid(m) (m: the logits upsampled, cropped and resized to the target). A segment is
    dropped when its visible area is empty or < overlap_mask_area_threshold * its own area (pixels with
    sigmoid(m) >= mask_threshold); its pixels stay 0. Segments of a class in `label_ids_to_fuse` (stuff) share
    one id; `segments_info` lists each id once, with the score of its first query (transformers repeats the
    entry for every fused query).

    Returns per image {"segmentation": (H_t, W_t) int32, "segments_info": [{"id", "label_id", "was_fused",
    "score"}]}, ids from 1 in query order and 0 where no segment. `method` as for `semantic_segmentation`.
    """
    _check_method(method)
    fuse = set() if label_ids_to_fuse is None else {int(label) for label in label_ids_to_fuse}
    class_logits, mask_logits, padded, sizes, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes, masks=False
    )
    num_classes = class_logits.shape[-1] - 1
    results = []
    for b, (valid, target) in enumerate(sizes):
        scores, labels = class_logits[b, queries[b]].softmax(-1).max(-1)  # (Q,)
        keep = (labels != num_classes) & (scores > threshold)
        scores, labels, logits = scores[keep], labels[keep], mask_logits[b, queries[b][keep]]  # M kept
        if len(logits):
            finite = _finite_maps(logits)
            if not finite.all():
                scores, labels, logits = scores[finite], labels[finite], logits[finite]
        if not len(scores):
            segmentation = torch.zeros(target, dtype=torch.int32, device=class_logits.device)
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        geometry = Geometry.of(tuple(logits.shape[-2:]), padded, valid, target, logits.device)
        if _use_dense("panoptic", method, len(logits), geometry):
            winner, visible, own_area = _panoptic_dense(scores, logits, geometry, mask_threshold)
        else:
            winner, visible, own_area = _panoptic_bounded(scores, logits, geometry, mask_threshold)
        segment_of = [0] * len(scores)  # per kept query, its segment id (0: dropped)
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
        lookup = torch.tensor(segment_of, dtype=torch.int32, device=winner.device)
        results.append(
            {"segmentation": take(lookup, winner.flatten()).view(target), "segments_info": segments}
        )
    return results


def _probability_at_least(threshold: float) -> float:
    """The logit at which sigmoid reaches `threshold` (-inf / inf outside (0, 1))."""
    if threshold <= 0:
        return -math.inf
    if threshold >= 1:
        return math.inf
    return math.log(threshold / (1 - threshold))


def _panoptic_dense(scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float):
    """The original's `panoptic_inference` maps: (winner query per pixel (H_t, W_t), visible pixels per query,
    own area per query: pixels with sigmoid >= mask_threshold), the counts as lists."""
    masks = geometry.full(logits).sigmoid()  # (M, H_t, W_t)
    winner = (scores[:, None, None] * masks).max(0).indices  # NOTE: as argmax(0), faster on CPU
    own_area = (masks >= mask_threshold).sum((1, 2))
    visible = torch.bincount(winner.flatten(), minlength=len(scores))
    return winner, visible.tolist(), own_area.tolist()


def _panoptic_bounded(scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float):
    """As `_panoptic_dense`, deciding tiles from bounds: a tile's winner is certain when one query's least
    weighted probability over the tile's window beats every other query's greatest, and its pixels count
    towards a query's own area without evaluation when the window is entirely above (or below) the threshold
    logit. Only the other tiles' pixels are evaluated."""
    count = len(scores)
    low, high = (bound.flatten(1) for bound in geometry.window_extrema(logits))  # (M, T) logits
    least = low.sigmoid().mul_(scores[:, None])
    most = high.sigmoid().mul_(scores[:, None])
    best_value, best = least.max(0)
    most.scatter_(0, best[None], -math.inf)
    decided = best_value > most.max(0).values * (1 + _SLACK) + _SLACK
    cut = _probability_at_least(mask_threshold)
    if math.isfinite(cut):
        margin = _SLACK * (1 + abs(cut))
        inside, outside = low > cut + margin, high < cut - margin
    else:  # thresholds at 0 or 1: the sigmoid's rounding decides, evaluate everything
        inside = outside = torch.zeros_like(low, dtype=torch.bool)
    tile_pixels = geometry.tile_pixels
    own_area = torch.mv(inside.double(), tile_pixels.double()).long()
    visible = torch.bincount(best[decided], weights=tile_pixels[decided].double(), minlength=count).long()
    winner = geometry.paint(best)
    unsure = ~(inside | outside)  # (M, T)
    exact = ~decided | unsure.any(0)
    if bool(exact.any()):
        open_tiles = exact.nonzero().squeeze(1)
        rows, cols, owner = geometry.pixels_of(open_tiles)
        pixels = Pixels(geometry, rows, cols)
        masks = pixels.blend(pixels.source_logits(logits)).sigmoid_().t()  # (M, n)
        counted = unsure.index_select(1, open_tiles).index_select(1, owner)  # (M, n) not counted by tiles
        own_area += ((masks >= mask_threshold) & counted).sum(1)
        undecided = (
            take(~decided, open_tiles).index_select(0, owner).nonzero().squeeze(1)
        )  # winner still open
        pixel_winner = (masks.index_select(1, undecided) * scores[:, None]).max(0).indices
        visible += torch.bincount(pixel_winner, minlength=count)
        winner.view(-1)[take(geometry.flat_index(rows, cols), undecided)] = pixel_winner
    return winner, visible.tolist(), own_area.tolist()


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
) -> list[dict]:
    """Instances from the top-Q (query, class) pairs, scored like Mask2Former at the target size.

    score = p_q(k) * mean of sigmoid(m_q) over the binary mask sigmoid(m_q) > mask_threshold (m: the logits
    upsampled, cropped and resized to the target). Pairs scoring < threshold or with an empty mask are dropped.
    Each pixel goes to the instance with the highest score * sigmoid among those whose binary mask covers it;
    an instance is kept only if its visible area / binary area >= overlap_mask_area_threshold (0 keeps every
    overlapping mask). transformers 5.x ignores mask_threshold and the overlap threshold.

    Returns per image {"segmentation", "segments_info": [{"id", "label_id", "was_fused", "score"}]}; see the
    module docstring for the segmentation formats. `method` as for `semantic_segmentation` ("bounded": each
    candidate evaluated over the bounding box its logits can reach the mask threshold from).
    """
    _check_method(method)
    class_logits, mask_logits, padded, sizes, queries = _prepared(
        class_logits, mask_logits, padded_size, valid_sizes, target_sizes
    )
    results = []
    for b, (valid, target) in enumerate(sizes):
        probs = class_logits[b, queries[b]].softmax(-1)[:, :-1]  # (Q, K)
        num_classes = probs.shape[1]
        class_scores, pairs = probs.flatten().topk(min(len(probs), probs.numel()))  # best first
        # The mask factor is <= 1, so a pair whose class probability misses the threshold cannot pass.
        passing = class_scores >= threshold
        class_scores, pairs = class_scores[passing], pairs[passing]
        candidates, query_of = torch.unique(pairs // num_classes, return_inverse=True)  # U queries
        if not len(candidates):
            segmentation = (
                torch.zeros(0, *target, dtype=torch.bool, device=probs.device)
                if return_binary_maps
                else torch.full(target, -1, dtype=torch.int32, device=probs.device)
            )
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        geometry = Geometry.of(tuple(mask_logits.shape[-2:]), padded, valid, target, mask_logits.device)
        logits = mask_logits[b, queries[b][candidates]]  # (U, h, w)
        if _use_dense("instance", method, len(logits), geometry):
            masks = _InstanceMasks.dense(logits, geometry, mask_threshold)
        else:
            masks = _InstanceMasks.boxed(logits, geometry, mask_threshold)
        scores = class_scores * (masks.total / (masks.area + 1e-6))[query_of]  # Mask2Former's mean mask score
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[(scores[order] >= threshold) & (masks.area[query_of[order]] > 0)]
        instance_query, scores = query_of[order].tolist(), scores[order]  # N instances, best first
        labels, area = (pairs[order] % num_classes).tolist(), masks.area[query_of[order]].tolist()
        winner = masks.winners(instance_query, scores)  # (H_t, W_t), N where no instance
        visible = torch.bincount(winner.flatten(), minlength=len(order) + 1).tolist()
        kept = [visible[n] / area[n] >= overlap_mask_area_threshold for n in range(len(order))]
        segment_of, segments = [-1] * (len(order) + 1), []
        for n, (label, score) in enumerate(zip(labels, scores.tolist())):
            if kept[n]:
                segment_of[n] = len(segments)
                segments.append(
                    {"id": len(segments), "label_id": label, "was_fused": False, "score": round(score, 6)}
                )
        segment_of = torch.tensor(segment_of, dtype=torch.int32, device=probs.device)
        if return_binary_maps:
            segmentation = masks.binary([u for u, keep in zip(instance_query, kept) if keep])
        else:
            segmentation = take(segment_of, winner.flatten()).view(target)
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


def _boxes(reached: Tensor, geometry: Geometry) -> list[tuple[tuple[int, int], tuple[int, int]] | None]:
    """Per map, the output box (rows, cols) of the pixels whose support holds a reached low-res sample, or None:
    the bounding box outside which the map is below the threshold for certain. reached: (U, h, w) bool."""
    used = [int(axis.support_end[-1]) + 1 for axis in (geometry.y, geometry.x)]
    reached = reached[:, : used[0], : used[1]]  # NOTE: samples past the crop (padding) reach no output pixel
    spans = []
    for dim, axis in ((2, geometry.y), (1, geometry.x)):
        hit = reached.any(dim).int()  # (U, h) or (U, w)
        count = hit.shape[1]
        first, last = hit.argmax(1), count - 1 - hit.flip(1).argmax(1)
        spans.append(torch.stack(axis.reach(first, last), 1).tolist())
    any_hit = (
        reached.flatten(1).any(1).tolist()
    )  # a map with no sample reached gives first 0, last count - 1 above
    return [
        (tuple(rows), tuple(cols)) if ok and rows[0] < rows[1] and cols[0] < cols[1] else None
        for ok, rows, cols in zip(any_hit, *spans)
    ]


def _above(values: Tensor, threshold: float) -> Tensor:
    """values > threshold as 1.0 / 0.0. NOTE: a comparison written to a float tensor, then float products and sums,
    is several times faster on CPU than bool masks in arithmetic (measured with torch 2.x)."""
    return torch.gt(values, threshold, out=torch.empty_like(values))


class _InstanceMasks:
    """The candidate queries' masks at the output size. Per candidate u: its box (rows, cols) in the output (None:
    an empty mask), over the box its binary mask `inside[u]` (1.0 where sigmoid > mask_threshold) and `covered[u]` (the
    sigmoid inside the binary mask, 0 outside), and the binary mask's `area` and sum of sigmoid `total`, (U,) each.
    `dense` evaluates every candidate everywhere (Mask2Former's `instance_inference`); `boxed` only over the box of
    the pixels whose windows hold a logit that can reach the threshold (outside it, sigmoid <= mask_threshold for
    certain)."""

    def __init__(
        self,
        geometry: Geometry,
        threshold: float,
        boxes: list,
        inside: list,
        covered: list,
        area: Tensor,
        total: Tensor,
    ) -> None:
        self.geometry, self.threshold, self.boxes, self.inside, self.covered, self.area, self.total = (
            geometry,
            threshold,
            boxes,
            inside,
            covered,
            area,
            total,
        )
        self.stacked: Tensor | None = None  # `covered` as one (U, H_t, W_t) tensor, from `dense`

    @classmethod
    def dense(cls, logits: Tensor, geometry: Geometry, mask_threshold: float) -> _InstanceMasks:
        probabilities = geometry.full(logits).sigmoid()  # (U, H_t, W_t)
        inside = _above(probabilities, mask_threshold)
        covered = probabilities * inside
        # NOTE: a float32 sum of 0/1 values is exact below 2^24 (its partial sums are integers), 10x faster than float64.
        exact = torch.float32 if inside[0].numel() < 1 << 24 else torch.float64
        area, total = inside.sum((1, 2), dtype=exact).long(), covered.sum((1, 2))
        whole = ((0, geometry.target[0]), (0, geometry.target[1]))
        masks = cls(geometry, mask_threshold, [whole] * len(logits), list(inside), list(covered), area, total)
        masks.stacked = covered
        return masks

    @classmethod
    def boxed(cls, logits: Tensor, geometry: Geometry, mask_threshold: float) -> _InstanceMasks:
        cut = _probability_at_least(mask_threshold)
        margin = _SLACK * (1 + abs(cut)) if math.isfinite(cut) else 0.0
        # NOTE: every output pixel blends the logits of its support (convexly), so outside the box of the pixels
        # whose support holds a sample >= the cut, sigmoid <= mask_threshold.
        boxes, inside, covered, area, total = _boxes(logits >= cut - margin, geometry), [], [], [], []
        for u, box in enumerate(boxes):
            if box is None:
                inside.append(None)
                covered.append(None)
                area.append(0)
                total.append(0.0)
                continue
            probabilities = geometry.region(logits[u], *box).sigmoid()
            inside.append(_above(probabilities, mask_threshold))
            covered.append(probabilities * inside[-1])
            area.append(int(inside[-1].sum()))
            total.append(float(covered[-1].sum()))
        device = logits.device
        return cls(
            geometry,
            mask_threshold,
            boxes,
            inside,
            covered,
            torch.tensor(area, device=device),
            torch.tensor(total, device=device),
        )

    def winners(self, instance_query: list[int], scores: Tensor) -> Tensor:
        """Per pixel, the instance whose binary mask covers it with the highest score * sigmoid (the first one
        on ties), or N where none does: (H_t, W_t) int64. scores: (N,) in decreasing order."""
        count = len(instance_query)
        # NOTE: with every score * sigmoid inside a binary mask > 0 (scores and mask threshold not ~0), the maximum
        # of score * covered (0 outside the masks) is the covering instance's: one maximum over the stack.
        positive = count and float(scores[-1]) > 1e-15 and self.threshold > 1e-15
        if self.stacked is not None and positive:
            index = torch.tensor(instance_query, device=scores.device)
            best, winner = (self.stacked.index_select(0, index) * scores[:, None, None]).max(0)
            return winner.masked_fill_(best == 0, count)
        best = torch.full(self.geometry.target, -1.0, device=scores.device)
        winner = torch.full(self.geometry.target, count, dtype=torch.long, device=scores.device)
        for n, (u, score) in enumerate(zip(instance_query, scores.tolist())):
            (top, bottom), (left, right) = self.boxes[u]
            weighted = torch.where(self.inside[u] > 0, self.covered[u] * score, -1.0)
            region_best, region_winner = best[top:bottom, left:right], winner[top:bottom, left:right]
            region_winner.masked_fill_(weighted > region_best, n)
            torch.maximum(region_best, weighted, out=region_best)
        return winner

    def binary(self, queries: list[int]) -> Tensor:
        """(len(queries), H_t, W_t) bool: each query's binary mask."""
        maps = torch.zeros(len(queries), *self.geometry.target, dtype=torch.bool, device=self.area.device)
        for n, u in enumerate(queries):
            (top, bottom), (left, right) = self.boxes[u]
            maps[n, top:bottom, left:right] = self.inside[u] > 0
        return maps
