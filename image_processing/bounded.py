"""The bounded evaluation: the maps of `post_processing.py` on the CPU, deciding most pixels from bounds.

Each output pixel of the authors' resampling depends on a 2x2 to 3x3 window of stride-4 logits, and both
resamplings are convex blends, so a window's minimum and maximum bound every pixel that reads it (`tiles.py`).
Pixels that share a window form a *tile*. Only the pixels that the bounds leave open are evaluated exactly, as the
original does, so on a trained model's confident outputs most of the output is painted tile by tile. Everything
runs in bands of tile rows, so that memory follows the band and the output map, whatever the bounds decide.

- Semantic: bounds on score *differences* (the winning class against each other one, query by query) decide
  blocks of cells, then cells; open tiles get exact scores at their source pixels over the classes still in
  contention, and each output pixel takes its class from its four sources when they agree, else from the blend
  of the classes that lead at them (`_blended_argmax`).
- Panoptic: each tile's winning query and its threshold counts come from the bounds where they are certain.
- Instance: each candidate query is evaluated over the bounding box of the output pixels whose windows hold a
  logit that can reach the mask threshold.

It syncs with the host and loops in Python: a CPU design. `cost.py` decides when it pays.

Shape legend as in `post_processing.py`; (h, w) also counts cells (the 2x2 windows of logits, one per low-res
sample), T tiles, n pixels evaluated exactly, n_s their source pixels, K_c the classes in contention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .resampling import BAND_ELEMENTS, Geometry, Rows, take
from .tiles import Pixels, Tiles, blend

# Decisions from bounds need a margin above float rounding, relative to the scores' magnitude: the float32
# sums of the original itself differ from exact arithmetic by ~1e-7 of it.
_SLACK = 1e-6
_BLOCK = 4  # cells per side of a block in the first round of semantic decisions (measured: 4 beats 8)
_CHUNK = 1 << 14  # regions per chunk in `_dominance` (bounds its (R, Q) temporaries)


def probability_at_least(threshold: float) -> float:
    """The logit at which sigmoid reaches `threshold` (-inf / inf outside (0, 1))."""
    if threshold <= 0:
        return -math.inf
    if threshold >= 1:
        return math.inf
    return math.log(threshold / (1 - threshold))


def _pixels_per_band(geometry: Geometry, band_rows: int | None, per_pixel: float) -> int:
    """Output pixels per band: `band_rows` whole rows, or about BAND_ELEMENTS / `per_pixel` values."""
    if band_rows is not None:
        return band_rows * geometry.target[1]
    return max(geometry.target[1], int(BAND_ELEMENTS / per_pixel))


def _tile_ids(tiles: Tiles, band: Rows) -> Rows:
    return band[0] * tiles.grid[1], band[1] * tiles.grid[1]


# ----------------------------------------------------------------------------------------------------
# Semantic
# ----------------------------------------------------------------------------------------------------
def semantic(probs: Tensor, logits: Tensor, geometry: Geometry, band_rows: int | None) -> Tensor:
    """`post_processing.semantic_segmentation`'s map of one image, (H_t, W_t) int64.

    Cells are the 2x2 windows of logits (all the padded pixels between four low-res samples): bounds over a
    cell are tight. Blocks of 4x4 cells (overlapping by one cell, so that every tile's window lies in one
    block's) decide whole regions and give the classes the finer steps still need. A tile's window is one
    cell, or two or four adjacent ones where its pixels' sources straddle cells; it is decided when its cells
    are, with the same class (an output pixel blends source pixels that all rank that class first).
    """
    tiles = Tiles.of(geometry)
    low, high = (bound.sigmoid_() for bound in _cell_extrema(logits))  # (Q, h, w) each
    slack = _SLACK * float(probs.sum(0).max())
    cell_label, cell_decided, cell_block, block_decided, block_classes, classes = _decide_cells(
        probs, low, high, slack
    )
    del low, high
    ay, ax, (h, w) = tiles.y, tiles.x, geometry.low
    # Tiles from their cells: first (window) and last cell along each axis.
    first_y, first_x = ay.keys // 2, ax.keys // 2
    last_y, last_x = (first_y + ay.keys % 2).clamp_(max=h - 1), (first_x + ax.keys % 2).clamp_(max=w - 1)
    corners = [(r[:, None] * w + c[None, :]).flatten() for r in (first_y, last_y) for c in (first_x, last_x)]
    per_tile = take(cell_label, corners[0])
    tile_decided = take(block_decided, take(cell_block, corners[0]))  # inside a decided block's window
    agreeing = take(cell_decided, corners[0])
    for corner in corners[1:]:
        agreeing &= take(cell_decided, corner) & (take(cell_label, corner) == per_tile)
    tile_decided |= agreeing
    if bool((ay.keys % 2).any() or (ax.keys % 2).any()):
        # NOTE: a tile straddling cells decided for different classes may be won by a third class; only the
        # block's test covers its whole window, so all the block contenders stay in.
        classes = block_classes
    probs = probs[:, classes]  # (Q, K_c)
    segmentation = torch.empty(geometry.target, dtype=torch.long, device=logits.device)
    sources_per_pixel = min(
        1.0, (geometry.valid[0] * geometry.valid[1]) / (geometry.target[0] * geometry.target[1])
    )
    per_pixel = 40 + (len(logits) + len(classes)) * 2 * sources_per_pixel
    for band in tiles.bands(_pixels_per_band(geometry, band_rows, per_pixel)):
        (first, last), (tile_first, tile_last) = tiles.output_rows(band), _tile_ids(tiles, band)
        segmentation[first:last] = tiles.paint(per_tile[tile_first:tile_last], band)
        open_tiles = (~tile_decided[tile_first:tile_last]).nonzero().squeeze(1) + tile_first
        if not len(open_tiles):
            continue
        rows, cols, _ = tiles.pixels_of(open_tiles)
        pixels = Pixels.of(geometry, rows, cols)
        masks = pixels.sources(logits).sigmoid_()  # (n_s, Q)
        scores = torch.mm(masks, probs)  # (n_s, K_c)
        del masks
        segmentation.view(-1)[rows * geometry.target[1] + cols] = take(
            classes, _blended_argmax(scores, pixels, slack)
        )
    return segmentation


def _decide_cells(probs: Tensor, low: Tensor, high: Tensor, slack: float):
    """Blocks, then the cells of undecided blocks: per cell (h * w,) its guessed class, whether it is certain,
    and its block; per block whether it is certain; the classes that may win in an undecided block, and in an
    undecided cell (K_b,), (K_c,) class ids."""
    block_low, block_high = _blocks(low, torch.amin), _blocks(high, torch.amax)
    decided, guess, contenders = _dominance(probs, block_low.flatten(1).t(), block_high.flatten(1).t(), slack)
    block_classes = contenders.nonzero().squeeze(1)
    (h, w), blocks = low.shape[1:], block_low.shape[1:]
    rows, cols = torch.arange(h, device=probs.device), torch.arange(w, device=probs.device)
    cell_block = (
        (rows // _BLOCK)[:, None] * blocks[1] + cols // _BLOCK
    ).flatten()  # (h * w,) block of each cell
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
    return cell_label, cell_decided, cell_block, decided, block_classes, classes


def _blended_argmax(scores: Tensor, pixels: Pixels, slack: float) -> Tensor:
    """The argmax over K_c classes of R's blend of the sources' scores at each output pixel, (n,) int64.

    scores (n_s, K_c). R blends four sources with weights >= 0 summing to one, so where the four agree on their
    best class with a margin, it wins the blend too. Elsewhere, any class that is no source's best is below each
    source's second best, so below the blend of the second bests: when the best blend of the four sources' best
    classes beats that, it is the argmax; only the remaining pixels are blended over every class.
    """
    geometry, position = pixels.geometry, pixels.position
    if geometry.y.identity and geometry.x.identity:  # each pixel is its own source
        return scores.index_select(0, position[0]).max(1).indices
    if scores.shape[1] == 1:
        return torch.zeros(position.shape[1], dtype=torch.long, device=scores.device)
    top_values, top_classes = scores.topk(2, dim=1)  # (n_s, 2) each
    best = take(top_classes[:, 0], position.flatten()).view(position.shape)  # (4, n)
    gap = take(top_values[:, 0] - top_values[:, 1], position.flatten()).view(position.shape).amin(0)
    label = best[0].clone()
    rest = (~((best == best[0]).all(0) & (gap > slack))).nonzero().squeeze(1)
    if not len(rest):
        return label
    corners, slots = position[:, rest], best[:, rest]  # (4, m) each
    weight_y, weight_x = take(pixels.weight_y, rest), take(pixels.weight_x, rest)
    flat = scores.reshape(-1)
    classes = scores.shape[1]
    blends = torch.stack(
        [blend(flat, corners * classes + slot, weight_y, weight_x) for slot in slots]
    )  # (4, m): each corner's best class, blended
    second = blend(top_values[:, 1], corners, weight_y, weight_x)
    best_blend, slot = blends.max(0)
    sure = best_blend > second + slack
    label[rest] = slots.gather(0, slot[None])[0]
    unsure = rest[~sure]
    if len(unsure):
        full = blend(
            scores, position[:, unsure], pixels.weight_y[unsure, None], pixels.weight_x[unsure, None]
        )
        label[unsure] = full.max(1).indices
    return label


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
    undecided region, (K,) bool. Regions go in chunks, so that the temporaries stay small.
    """
    decided = torch.zeros(len(low), dtype=torch.bool, device=probs.device)
    guess = torch.zeros(len(low), dtype=torch.long, device=probs.device)
    contenders = torch.zeros(probs.shape[1], dtype=torch.bool, device=probs.device)
    for first in range(0, len(low), _CHUNK):
        chunk = slice(first, first + _CHUNK)
        at_low = torch.mm(low[chunk], probs)  # (R, K) scores at the lower bounds
        guess[chunk] = at_low.max(1).indices  # NOTE: as argmax(1), faster on CPU
        spread = high[chunk] - low[chunk]  # (R, Q)
        chunk_guess, chunk_decided = guess[chunk], decided[chunk]
        for label in torch.unique(chunk_guess).tolist():
            members = (chunk_guess == label).nonzero().squeeze(1)
            scores = at_low[members]
            margin = (scores[:, label : label + 1] - scores).sub_(
                torch.mm(spread[members], (probs - probs[:, label : label + 1]).clamp_(min=0))
            )  # (R_label, K) lower bounds
            margin[:, label] = math.inf
            beaten = margin > slack
            won = beaten.all(1)
            chunk_decided[members] = won
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
# Panoptic
# ----------------------------------------------------------------------------------------------------
def panoptic(
    scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows: int | None
):
    """`post_processing._panoptic_winners` deciding tiles from bounds: a tile's winner is certain when one query's
    least weighted probability over the tile's window beats every other query's greatest, and its pixels count
    towards a query's own area without evaluation when the window is entirely above (or below) the threshold
    logit. Only the other tiles' pixels are evaluated."""
    tiles, count, device = Tiles.of(geometry), len(scores), logits.device
    cut = probability_at_least(mask_threshold)
    margin = _SLACK * (1 + abs(cut)) if math.isfinite(cut) else 0.0
    winner = torch.empty(geometry.target, dtype=torch.int32, device=device)
    visible = torch.zeros(count, dtype=torch.float64, device=device)
    own_area = torch.zeros(count, dtype=torch.float64, device=device)
    for band in tiles.bands(_pixels_per_band(geometry, band_rows, 40 + 3 * count)):
        low, high = (bound.flatten(1) for bound in tiles.window_extrema(logits, band))  # (M, T_band) logits
        least = low.sigmoid().mul_(scores[:, None])
        most = high.sigmoid().mul_(scores[:, None])
        best_value, best = least.max(0)
        most.scatter_(0, best[None], -math.inf)
        decided = best_value > most.max(0).values * (1 + _SLACK) + _SLACK
        del least, most
        if math.isfinite(cut):
            inside, outside = low > cut + margin, high < cut - margin
        else:  # thresholds at 0 or 1: the sigmoid's rounding decides, evaluate everything
            inside = outside = torch.zeros_like(low, dtype=torch.bool)
        del low, high
        tile_pixels = tiles.tile_pixels(band).double()
        own_area += torch.mv(inside.double(), tile_pixels)
        visible += torch.bincount(best[decided], weights=tile_pixels[decided], minlength=count)
        first, last = tiles.output_rows(band)
        winner[first:last] = tiles.paint(best, band)
        unsure = ~(inside | outside)  # (M, T_band)
        exact = ~decided | unsure.any(0)
        if not bool(exact.any()):
            continue
        open_tiles = exact.nonzero().squeeze(1)
        rows, cols, owner = tiles.pixels_of(open_tiles + _tile_ids(tiles, band)[0])
        pixels = Pixels.of(geometry, rows, cols)
        masks = pixels.blend(pixels.sources(logits)).sigmoid_().t()  # (M, n)
        counted = unsure.index_select(1, open_tiles).index_select(1, owner)  # (M, n) not counted by tiles
        own_area += ((masks >= mask_threshold) & counted).sum(1)
        undecided = (
            take(~decided, open_tiles).index_select(0, owner).nonzero().squeeze(1)
        )  # winner still open
        pixel_winner = (masks.index_select(1, undecided) * scores[:, None]).max(0).indices
        visible += torch.bincount(pixel_winner, minlength=count)
        winner.view(-1)[take(rows * geometry.target[1] + cols, undecided)] = pixel_winner.int()
    return winner, visible.long().tolist(), own_area.long().tolist()


# ----------------------------------------------------------------------------------------------------
# Instance
# ----------------------------------------------------------------------------------------------------
def _above(values: Tensor, threshold: float) -> Tensor:
    """values > threshold as 1.0 / 0.0. NOTE: a comparison written to a float tensor, then float products and sums,
    is several times faster on CPU than bool masks in arithmetic (measured with torch 2.x)."""
    return torch.gt(values, threshold, out=torch.empty_like(values))


class InstanceMasks:
    """`post_processing.InstanceMasks`, evaluating each candidate only over its box: the output pixels whose
    windows hold a logit that can reach the mask threshold (outside it, sigmoid <= mask_threshold for certain,
    as every output pixel blends the logits of its window convexly)."""

    def __init__(
        self, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows: int | None
    ) -> None:
        self.logits, self.geometry, self.threshold = logits, geometry, mask_threshold
        self.tiles = Tiles.of(geometry)
        cut = probability_at_least(mask_threshold)
        margin = _SLACK * (1 + abs(cut)) if math.isfinite(cut) else 0.0
        self.boxes = self._boxes(logits >= cut - margin)
        self.rows = band_rows or max(1, BAND_ELEMENTS // geometry.target[1])

    def _boxes(self, reached: Tensor) -> list[tuple[Rows, Rows] | None]:
        """Per map, the output box (rows, cols) of the pixels whose window holds a reached low-res sample, or None.
        reached: (U, h, w) bool."""
        tiles = self.tiles
        used = [int(axis.support_end[-1]) + 1 for axis in (tiles.y, tiles.x)]
        reached = reached[
            :, : used[0], : used[1]
        ]  # NOTE: samples past the crop (padding) reach no output pixel
        spans = []
        for dim, axis in ((2, tiles.y), (1, tiles.x)):
            hit = reached.any(dim).int()  # (U, h) or (U, w)
            count = hit.shape[1]
            first, last = hit.argmax(1), count - 1 - hit.flip(1).argmax(1)
            spans.append(torch.stack(axis.reach(first, last), 1).tolist())
        any_hit = (
            reached.flatten(1).any(1).tolist()
        )  # a map with no sample reached: first 0, last count - 1 above
        return [
            (tuple(rows), tuple(cols)) if ok and rows[0] < rows[1] and cols[0] < cols[1] else None
            for ok, rows, cols in zip(any_hit, *spans)
        ]

    def _regions(self, queries: list[int], band: Rows):
        """Per query (index n in `queries`) whose box meets the band of output rows: (n, the region's rows and
        cols, its sigmoid)."""
        for n, u in enumerate(queries):
            box = self.boxes[u]
            if box is None:
                continue
            rows = (max(box[0][0], band[0]), min(box[0][1], band[1]))
            if rows[0] < rows[1]:
                yield n, rows, box[1], self.tiles.region(self.logits[u], rows, box[1]).sigmoid_()

    def measure(self) -> tuple[Tensor, Tensor]:
        """Per candidate, its binary mask's area (int64) and the sum of its sigmoid there, (U,) each."""
        area, total = [0] * len(self.logits), [0.0] * len(self.logits)
        everything = list(range(len(self.logits)))
        for band in self.geometry.bands(self.rows):
            for u, _, _, probabilities in self._regions(everything, band):
                inside = _above(probabilities, self.threshold)
                area[u] += int(inside.sum())
                total[u] += float((probabilities * inside).sum())
        device = self.logits.device
        return torch.tensor(area, device=device), torch.tensor(total, device=device)

    def winners(self, instance_query: list[int], scores: Tensor) -> tuple[Tensor, list[int]]:
        """As `post_processing.InstanceMasks.winners`: instance after instance, each pixel of its box goes to it
        where its weighted probability beats the best so far (the first one on ties)."""
        count, (height, width) = len(instance_query), self.geometry.target
        winner = torch.full((height, width), count, dtype=torch.int32, device=scores.device)
        visible = torch.zeros(count + 1, dtype=torch.long, device=scores.device)
        values = scores.tolist()
        for band in self.geometry.bands(self.rows):
            best = torch.full((band[1] - band[0], width), -1.0, device=scores.device)
            for n, (top, bottom), (left, right), probabilities in self._regions(instance_query, band):
                weighted = torch.where(probabilities > self.threshold, probabilities * values[n], -1.0)
                region_best = best[top - band[0] : bottom - band[0], left:right]
                winner[top:bottom, left:right].masked_fill_(weighted > region_best, n)
                torch.maximum(region_best, weighted, out=region_best)
            visible += torch.bincount(winner[band[0] : band[1]].flatten(), minlength=count + 1)
        return winner, visible.tolist()

    def binary(self, queries: list[int]) -> Tensor:
        """(len(queries), H_t, W_t) bool: each query's binary mask."""
        maps = torch.zeros(len(queries), *self.geometry.target, dtype=torch.bool, device=self.logits.device)
        for band in self.geometry.bands(self.rows):
            for n, (top, bottom), (left, right), probabilities in self._regions(queries, band):
                maps[n, top:bottom, left:right] = probabilities > self.threshold
        return maps
