"""The CPU accelerator of panoptic and instance inference: `post_processing.py`'s maps, from bounds.

Panoptic: each tile's winner and area counts come from the bounds over its window (`tiles.py`); only open tiles'
pixels are evaluated. Instance: each candidate is evaluated over the box where its mask can pass the threshold.
Shapes: M kept queries, U candidates, T_band tiles of a band, n open pixels.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .resampling import BAND_ELEMENTS, Geometry, Rows, above, mix, take
from .tiles import SLACK, Pixels, Tiles

_PROBE = 8  # one row of tiles in _PROBE tells the share the bounds leave open (`panoptic_open_share`)
_PANOPTIC_SLOTS = 4  # queries evaluated per pixel of an open panoptic tile that needs few


def threshold_logit(mask_threshold: float) -> tuple[float, float]:
    """The logit at which the sigmoid reaches `mask_threshold` (-inf / inf outside (0, 1)), and the margin above
    float rounding that a bound must clear to decide on which side of it a pixel lies."""
    if not 0 < mask_threshold < 1:
        return (-math.inf if mask_threshold <= 0 else math.inf), 0.0
    cut = math.log(mask_threshold / (1 - mask_threshold))
    return cut, SLACK * (1 + abs(cut))


def pixels_per_band(geometry: Geometry, band_rows: int | None, per_pixel: float) -> int:
    """Output pixels per band (or per chunk of a band's open tiles): `band_rows` whole rows, or as many as hold
    about BAND_ELEMENTS values at `per_pixel` values each."""
    if band_rows is not None:
        return band_rows * geometry.target[1]
    return max(geometry.target[1], int(BAND_ELEMENTS / per_pixel))


def panoptic(scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows: int | None):
    """`post_processing._panoptic_mask_ids` from bounds: a tile's winner is certain when one query's least weighted
    probability over its window beats every other's greatest; its original-area count when the window is wholly
    above or below the threshold logit. Only other tiles' pixels are evaluated."""
    tiles, count, device = Tiles.of(geometry), len(scores), logits.device
    mask_ids = torch.empty(geometry.target, dtype=torch.int32, device=device)
    mask_area = torch.zeros(count, dtype=torch.float64, device=device)
    original_area = torch.zeros(count, dtype=torch.float64, device=device)
    # NOTE: a band holds ~8 values per query and tile; an open pixel its indices (~40 values) and 3 per query.
    chunk = pixels_per_band(geometry, band_rows, 40 + 3 * count)
    pixels_per_tile = geometry.target[0] * geometry.target[1] / (tiles.grid[0] * tiles.grid[1])
    for band in tiles.bands(pixels_per_band(geometry, band_rows, 8 * count / pixels_per_tile)):
        best, decided, contender, inside, unsure = _panoptic_tiles(scores, logits, tiles, band, mask_threshold)
        tile_pixels = tiles.tile_pixels(band).double()
        original_area += torch.mv(inside.double(), tile_pixels)
        mask_area += torch.bincount(best[decided], weights=tile_pixels[decided], minlength=count)
        first, last = tiles.output_rows(band)
        mask_ids[first:last] = tiles.paint(best, band)
        # The queries an open tile needs: those that may win it, where its winner is open, and those whose original
        # area it may count.
        relevant = (contender & ~decided) | unsure
        exact = relevant.any(0)
        if not bool(exact.any()):
            continue
        tile_first = band[0] * tiles.grid[1]
        band_state = (relevant, contender, unsure, decided, tile_first)
        for part in tiles.chunks(exact.nonzero().squeeze(1) + tile_first, chunk):
            original, won = _panoptic_exact(scores, logits, tiles, part, band_state, mask_threshold, mask_ids)
            original_area += original
            mask_area += won
    return mask_ids, mask_area.long().tolist(), original_area.long().tolist()


def _panoptic_tiles(scores, logits, tiles, band, mask_threshold):
    """Per tile of a band: best query by least weighted probability, whether it wins for certain (T_band,); which
    queries may win, count all its pixels in their original area, or may count some, (M, T_band) each."""
    low, high = (bound.flatten(1) for bound in tiles.window_extrema(logits, band))  # (M, T_band) logits
    cut, margin = threshold_logit(mask_threshold)
    least = low.sigmoid().mul_(scores[:, None])
    most = high.sigmoid().mul_(scores[:, None])
    best_value, best = least.max(0)
    contender = most >= best_value * (1 - SLACK) - SLACK
    most.scatter_(0, best[None], -math.inf)
    decided = best_value > most.max(0).values * (1 + SLACK) + SLACK
    if math.isfinite(cut):
        inside, outside = low > cut + margin, high < cut - margin
    else:  # thresholds at 0 or 1: the sigmoid's rounding decides, evaluate everything
        inside = outside = torch.zeros_like(low, dtype=torch.bool)
    return best, decided, contender, inside, ~(inside | outside)


def panoptic_open_share(scores: Tensor, logits: Tensor, geometry: Geometry, mask_threshold: float) -> float:
    """The share of output pixels in tiles the bounds leave open, judged on one tile row in `_PROBE`: four bands
    spread over the image."""
    tiles = Tiles.of(geometry)
    open_pixels = total = 0.0
    rows = max(1, tiles.grid[0] // (4 * _PROBE))
    for first in sorted({int(i * (tiles.grid[0] - rows) / 3) for i in range(4)}):
        band = (first, first + rows)
        _, decided, contender, _, unsure = _panoptic_tiles(scores, logits, tiles, band, mask_threshold)
        pixels = tiles.tile_pixels(band).double()
        open_pixels += float(pixels[((contender & ~decided) | unsure).any(0)].sum())
        total += float(pixels.sum())
    return open_pixels / total


def _panoptic_exact(scores, logits, tiles, part, band_state, mask_threshold, mask_ids):
    """The open tiles `part` evaluated exactly into `mask_ids`; returns the original- and mask-area counts, (M,).

    NOTE: most open tiles need 1-3 queries. Gathering one value per such query and source pays while the sources'
    table stays in cache (magnifying) or when it skips most queries; elsewhere whole rows are gathered.
    """
    relevant, contender, unsure, decided, tile_first = band_state
    geometry, count, device = tiles.geometry, len(scores), logits.device
    rows, cols, owner = tiles.pixels_of(part)
    pixels = Pixels(geometry, rows, cols)
    sources = pixels.sources(logits)  # (n_s, M)
    needed = relevant.index_select(1, part - tile_first)  # (M, tiles)
    per_tile = needed.sum(0)
    tile_of = take(part - tile_first, owner)  # (n,) each pixel's tile in the band
    undecided = take(~decided, tile_of)  # (n,) pixels whose winner is still open
    if 5 * _PANOPTIC_SLOTS < count or 4 * len(sources) <= len(owner):
        few = take(per_tile <= _PANOPTIC_SLOTS, owner)
    else:
        few = torch.zeros_like(undecided)
    # Every query at the pixels of tiles that need many: (M, m) probabilities.
    many = (~few).nonzero().squeeze(1) if bool(few.any()) else None
    masks = pixels.blend(sources, many).t().sigmoid_()
    tile_many = tile_of if many is None else take(tile_of, many)
    original_area = ((masks >= mask_threshold) & unsure.index_select(1, tile_many)).sum(1)
    open_many = (undecided if many is None else take(undecided, many)).nonzero().squeeze(1)
    pixel_winner = torch.empty(len(owner), dtype=torch.long, device=device)
    target = open_many if many is None else take(many, open_many)
    pixel_winner[target] = (masks.index_select(1, open_many) * scores[:, None]).max(0).indices
    # Each pixel's tile's relevant queries elsewhere: (R, m), padded (`valid` marks the real ones). NOTE: a stable
    # sort keeps them in query order, so that the first maximum is the original's.
    selected = few.nonzero().squeeze(1)
    if len(selected):
        tile = take(owner, selected)
        slots = int(take(per_tile, tile).max())
        query = needed.int().argsort(dim=0, descending=True, stable=True)[:slots].index_select(1, tile)
        valid = (torch.arange(slots, device=device)[:, None] < per_tile[None]).index_select(1, tile)
        # (4, R, m): the four sources of each pixel for each of its queries; then R's blend of them
        position = pixels.position[:, selected]
        corner = take(sources.reshape(-1), (position[:, None] * count + query[None]).flatten())
        corner = corner.view(4, *query.shape)
        weight_y, weight_x = take(pixels.weight_y, selected), take(pixels.weight_x, selected)
        masks = mix(mix(corner[0], corner[1], weight_x), mix(corner[2], corner[3], weight_x), weight_y).sigmoid_()
        at = (query * len(decided) + take(tile_of, selected)[None]).flatten()  # each slot's (query, tile)
        counted = valid & take(unsure.flatten(), at).view(query.shape)
        original_area += torch.bincount(query[counted & (masks >= mask_threshold)], minlength=count)
        may_win = valid & take(contender.flatten(), at).view(query.shape)
        weighted = (masks * take(scores, query.flatten()).view(query.shape)).masked_fill_(~may_win, -math.inf)
        open_few = take(undecided, selected).nonzero().squeeze(1)
        slot = weighted.index_select(1, open_few).max(0).indices
        pixel_winner[take(selected, open_few)] = query.index_select(1, open_few).gather(0, slot[None])[0]
    open_winner = undecided.nonzero().squeeze(1)
    pixel_winner = take(pixel_winner, open_winner)
    mask_ids.view(-1)[take(rows * geometry.target[1] + cols, open_winner)] = pixel_winner.int()
    return original_area, torch.bincount(pixel_winner, minlength=count)


# ----------------------------------------------------------------------------------------------------
# Instance
# ----------------------------------------------------------------------------------------------------
class InstanceMasks:
    """`post_processing.InstanceMasks`, evaluating each candidate only over its box (`boxes`): outside it, every
    output pixel blends logits under the threshold logit convexly, so its sigmoid stays under the threshold."""

    def __init__(self, logits: Tensor, geometry: Geometry, mask_threshold: float, band_rows: int | None) -> None:
        self.logits, self.geometry, self.threshold = logits, geometry, mask_threshold
        self.tiles = Tiles.of(geometry)
        # NOTE: a band holds each region's ~5 temporaries and the best value so far: 1/6 of BAND_ELEMENTS pixels.
        self.rows = band_rows or max(1, BAND_ELEMENTS // (6 * geometry.target[1]))
        self.kept, self.kept_values = {}, 0

    @functools.cached_property
    def boxes(self) -> list[tuple[Rows, Rows] | None]:
        """Per candidate, the output box (rows, cols) of the pixels whose window holds a logit that can reach the
        mask threshold, or None."""
        cut, margin = threshold_logit(self.threshold)
        tiles = self.tiles
        used = [int(axis.support_end[-1]) + 1 for axis in (tiles.y, tiles.x)]
        # NOTE: samples past the crop (padding) reach no output pixel
        reached = (self.logits >= cut - margin)[:, : used[0], : used[1]]  # (U, h, w)
        spans = []
        for dim, axis in ((2, tiles.y), (1, tiles.x)):
            hit = reached.any(dim).int()  # (U, h) or (U, w)
            count = hit.shape[1]
            first, last = hit.argmax(1), count - 1 - hit.flip(1).argmax(1)
            spans.append(torch.stack(axis.reach(first, last), 1).tolist())
        any_hit = reached.flatten(1).any(1).tolist()  # a map with no sample reached: first 0, last count - 1 above
        return [
            (tuple(rows), tuple(cols)) if ok and rows[0] < rows[1] and cols[0] < cols[1] else None
            for ok, rows, cols in zip(any_hit, *spans)
        ]

    def open_share(self) -> float:
        """The boxes' pixels over U x the output's: the share of the dense path's work this one does."""
        pixels = sum((rows[1] - rows[0]) * (cols[1] - cols[0]) for rows, cols in filter(None, self.boxes))
        return pixels / max(1, len(self.logits) * self.geometry.target[0] * self.geometry.target[1])

    def _regions(self, queries: list[int], band: Rows):
        """Per query (index n in `queries`) whose box meets the band of output rows: (n, the region's rows and
        cols, its sigmoid). Regions are kept from the first pass while they hold at most BAND_ELEMENTS values."""
        for n, u in enumerate(queries):
            box = self.boxes[u]
            if box is None:
                continue
            rows = (max(box[0][0], band[0]), min(box[0][1], band[1]))
            if rows[0] >= rows[1]:
                continue
            probabilities = self.kept.get((u, rows))
            if probabilities is None:
                probabilities = self.tiles.region(self.logits[u], rows, box[1]).sigmoid_()
                if self.kept_values + probabilities.numel() <= BAND_ELEMENTS:
                    self.kept[(u, rows)] = probabilities
                    self.kept_values += probabilities.numel()
            yield n, rows, box[1], probabilities

    def measure(self) -> tuple[Tensor, Tensor]:
        """Per candidate, its binary mask's area (int64) and the sum of its sigmoid there, (U,) each."""
        area, total = [0] * len(self.logits), [0.0] * len(self.logits)
        everything = list(range(len(self.logits)))
        for band in self.geometry.bands(self.rows):
            for u, _, _, probabilities in self._regions(everything, band):
                inside = above(probabilities, self.threshold)
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
