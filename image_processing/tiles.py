"""The accelerator's view of the resampling: windows, tiles, and exact evaluation at chosen pixels.

An output pixel of the authors' resampling (U then R, `resampling.py`) reads a window of 2x2 to 3x3 logits; output
pixels with the same window form a tile, bounded by the extrema over its window (`Tiles.window_extrema`). Where the
bounds decide nothing, the original computation runs exactly at the pixels left (`Tiles.region`). Shapes: C maps,
(h, w) low resolution, (h_v, w_v) the cropped input, (H_t, W_t) the output, (T_y, T_x) the tile grid, n pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .resampling import Axis, Geometry, mix, take

# Decisions from bounds need a margin above float rounding, relative to the values' magnitude: the float32 sums of
# the original itself differ from exact arithmetic by ~1e-7 of it.
SLACK = 1e-6
# Output coordinates per block of `_composite`, along rows and along columns (measured: rows 32-128 alike; columns
# fewer calls, on the few low-res rows a region reads).
_COMPOSITE_CHUNK = (64, 512)


@dataclass(frozen=True)
class TileAxis:
    """The tiles of one axis. Output coordinates are grouped by key = 2 * window + (span == 3); the keys that
    occur, increasing, are this axis's tiles."""

    axis: Axis
    window: Tensor  # (target,) first low-res coordinate of the support
    composite: Tensor  # (target, 3) weights of window, window + 1, window + 2 in R after U (both linear)
    composite_taps: Tensor  # (target, 3) those coordinates, clamped to the last one (where the weight is 0)
    support_end: Tensor  # (target,) the last low-res coordinate of each output coordinate's support
    keys: Tensor  # (T_axis,) the keys that occur, increasing
    tile: Tensor  # (target,) index of each output coordinate's key in `keys` (non-decreasing)
    start: Tensor  # (T_axis,) first output coordinate of each tile
    count: Tensor  # (T_axis,) output coordinates per tile

    @classmethod
    def build(cls, axis: Axis) -> TileAxis:
        device = axis.tap0.device
        window = axis.tap0[axis.src0]
        composite = torch.zeros(axis.target, 3, device=device)
        for source, source_weight in ((axis.src0, 1 - axis.src_weight), (axis.src1, axis.src_weight)):
            for tap, weight in ((axis.tap0, 1 - axis.tap_weight), (axis.tap1, axis.tap_weight)):
                composite.scatter_add_(1, (tap[source] - window)[:, None], (source_weight * weight[source])[:, None])
        taps = (window[:, None] + torch.arange(3, device=device)).clamp_(max=axis.low - 1)
        wide = (composite[:, 2] > 0).long()  # the support spans 3 coordinates
        keys, tile, count = torch.unique_consecutive(2 * window + wide, return_inverse=True, return_counts=True)
        start = torch.cumsum(count, 0) - count
        return cls(axis, window, composite, taps, window + 1 + wide, keys, tile, start, count)

    @functools.cached_property
    def matrix(self) -> Tensor:
        """(target, low) the composite weights as a dense matrix (R after U is matrix @ values), made when a region is
        first resampled (`_composite`)."""
        matrix = torch.zeros(self.axis.target, self.axis.low, device=self.window.device)
        return matrix.scatter_add_(1, self.composite_taps, self.composite)

    def reach(self, first: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """The output coordinates whose support meets low-res coordinates first..last (inclusive), as
        [start, end) per entry: `first`, `last` (N,) int64 -> start, end (N,) (start == end: none)."""
        start = torch.searchsorted(self.support_end, first)
        end = torch.searchsorted(self.window, last, right=True)
        return start, torch.maximum(start, end)

    def reduce(self, values: Tensor, dim: int, op, tiles: tuple[int, int]) -> Tensor:
        """op-reduce `values` (..., low, ...) along `dim` over the windows of tiles[0]..tiles[1]-1 -> (..., tiles, ...);
        `values` holds the low-res coordinates from the first tile's window on."""
        keys = self.keys[tiles[0] : tiles[1]]
        starts = keys // 2 - int(keys[0]) // 2
        n = values.shape[dim]
        pair = values  # op over coordinates i, i + 1 (the last alone)
        if n > 1:
            pair = torch.cat(
                [op(values.narrow(dim, 0, n - 1), values.narrow(dim, 1, n - 1)), values.narrow(dim, n - 1, 1)], dim
            )
        if not bool((keys % 2).any()):  # every support spans two coordinates
            return pair.index_select(dim, starts)
        triple = pair  # op over i, i + 1, i + 2
        if n > 2:
            triple = torch.cat(
                [op(pair.narrow(dim, 0, n - 2), values.narrow(dim, 2, n - 2)), pair.narrow(dim, n - 2, 2)], dim
            )
        return torch.cat([pair, triple], dim).index_select(dim, starts + n * (keys % 2))


class Tiles:
    """The tiles of an image's geometry, and evaluation at chosen output pixels."""

    def __init__(self, geometry: Geometry) -> None:
        self.geometry, self.device = geometry, geometry.device
        self.y, self.x = TileAxis.build(geometry.y), TileAxis.build(geometry.x)
        self.grid = (len(self.y.keys), len(self.x.keys))
        self._y_start, self._y_count = self.y.start.tolist(), self.y.count.tolist()
        self._y_window = (self.y.keys // 2).tolist()

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(geometry: Geometry) -> Tiles:
        return Tiles(geometry)

    def bands(self, pixels: int) -> Iterator[tuple[int, int]]:
        """Tile rows [first, last) in bands of about `pixels` output pixels (at least one tile row)."""
        width, first = self.geometry.target[1], 0
        while first < self.grid[0]:
            last, rows = first, 0
            while last < self.grid[0] and (last == first or (rows + self._y_count[last]) * width <= pixels):
                rows += self._y_count[last]
                last += 1
            yield first, last
            first = last

    def chunks(self, tiles: Tensor, pixels: int) -> list[Tensor]:
        """The tile ids `tiles` in consecutive chunks of at most about `pixels` output pixels (one tile at least)."""
        sizes = take(self.y.count, tiles // self.grid[1]) * take(self.x.count, tiles % self.grid[1])
        ends = torch.cumsum(sizes, 0)
        if int(ends[-1]) <= pixels:
            return [tiles]
        cuts = torch.searchsorted(ends, torch.arange(pixels, int(ends[-1]), pixels, device=self.device), right=True)
        cuts = sorted({int(c) for c in cuts.clamp_(min=1).tolist()} - {len(tiles)})
        return list(torch.tensor_split(tiles, cuts))

    def output_rows(self, tiles: tuple[int, int]) -> tuple[int, int]:
        """The output rows [first, last) of tile rows tiles[0]..tiles[1]-1."""
        return self._y_start[tiles[0]], self._y_start[tiles[1] - 1] + self._y_count[tiles[1] - 1]

    def window_extrema(self, logits: Tensor, tiles: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(C, h, w) -> the minimum and maximum over the windows of tile rows tiles[0]..tiles[1]-1, (C, rows, T_x)."""
        first, last = self._y_window[tiles[0]], min(self._y_window[tiles[1] - 1] + 3, self.geometry.low[0])
        band = logits[:, first:last]
        everything = (0, self.grid[1])
        return tuple(
            self.x.reduce(self.y.reduce(band, 1, op, tiles), 2, op, everything)
            for op in (torch.minimum, torch.maximum)
        )

    def tile_pixels(self, tiles: tuple[int, int]) -> Tensor:
        """(rows * T_x,) output pixels per tile of tile rows tiles[0]..tiles[1]-1."""
        return (self.y.count[tiles[0] : tiles[1], None] * self.x.count[None, :]).flatten()

    def paint(self, per_tile: Tensor, tiles: tuple[int, int]) -> Tensor:
        """(rows * T_x,) values of tile rows tiles[0]..tiles[1]-1 -> their output rows (rows_t, W_t)."""
        # NOTE: columns first: widening the few tile rows, then copying whole rows, is ~3x faster than the reverse.
        first, last = self.output_rows(tiles)
        return (
            per_tile.view(-1, self.grid[1])
            .index_select(1, self.x.tile)
            .index_select(0, self.y.tile[first:last] - tiles[0])
        )

    def pixels_of(self, tiles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Output pixels of the given tile ids, tile by tile: rows, cols and the position of their tile in
        `tiles`, each (n,)."""
        tile_y, tile_x = tiles // self.grid[1], tiles % self.grid[1]
        widths = take(self.x.count, tile_x)
        sizes = take(self.y.count, tile_y) * widths
        owner = torch.repeat_interleave(torch.arange(len(tiles), device=self.device), sizes)
        local = torch.arange(int(sizes.sum()), device=self.device) - take(torch.cumsum(sizes, 0) - sizes, owner)
        width = take(widths, owner)
        rows = take(take(self.y.start, tile_y), owner) + local // width
        return rows, take(take(self.x.start, tile_x), owner) + local % width, owner

    def region(self, logits: Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        """R(U(logits)) of one (h, w) map over output `rows` x `cols`: U and R composed per axis, or at stride 4
        without a resize, torch's upsampling (the same blends, faster)."""
        geometry = self.geometry
        if geometry.y.identity and geometry.x.identity and geometry.stride_4:
            # NOTE: a block's upsampling equals the whole map's at the block's rows and columns except within two
            # pixels of a cut edge, where torch clamps to the block; the region starts >= 2 pixels after its
            # first low-res row (its window) and ends before its last one's reach, so it never reads those.
            (top, bottom), (left, right) = (
                (int(axis.tap0[first]), int(axis.tap1[last - 1]) + 1)
                for axis, (first, last) in ((geometry.y, rows), (geometry.x, cols))
            )
            block = logits[None, None, top:bottom, left:right]
            up = F.interpolate(
                block, size=(4 * (bottom - top), 4 * (right - left)), mode="bilinear", align_corners=False
            )
            return up[0, 0, rows[0] - 4 * top : rows[1] - 4 * top, cols[0] - 4 * left : cols[1] - 4 * left]
        top = int(self.y.window[rows[0]])
        bottom = min(int(self.y.window[rows[1] - 1]) + 3, geometry.low[0])
        band = _composite(logits[top:bottom], 1, self.x, cols, 0)  # (low-res rows, cols)
        return _composite(band, 0, self.y, rows, top)


def _composite(values: Tensor, dim: int, axis: TileAxis, part: tuple[int, int], offset: int) -> Tensor:
    """`values` (low-res coordinates from `offset` along `dim`) resampled to `axis`'s output coordinates `part`.

    NOTE: products with blocks of the dense weight matrix, `_COMPOSITE_CHUNK[dim]` outputs at a time; a gather of
    the 3 taps and their blend is several times slower on CPU."""
    first, last = part
    shape = list(values.shape)
    shape[dim] = last - first
    out = values.new_empty(shape)
    chunk = _COMPOSITE_CHUNK[dim]
    starts = range(first, last, chunk)
    ends = [min(start + chunk, last) for start in starts]
    windows = zip(axis.window[first:last:chunk].tolist(), axis.window[[end - 1 for end in ends]].tolist())
    for start, end, (low, high) in zip(starts, ends, windows):
        high = min(high + 3, offset + values.shape[dim])  # the last output's support ends within window + 2
        weights = axis.matrix[start:end, low:high]  # (outputs, low-res coordinates)
        if dim == 0:
            torch.mm(weights, values[low - offset : high - offset], out=out[start - first : end - first])
        else:
            out[:, start - first : end - first] = values[:, low - offset : high - offset] @ weights.t()
    return out


class Pixels:
    """Output pixels and their sources: `sources(logits)` is U at the distinct sources (n_s, C); `position` (4, n)
    indexes each pixel's four sources; `blend(values)` takes (n_s, C) values to the pixels (R), (n, C)."""

    def __init__(self, geometry: Geometry, rows: Tensor, cols: Tensor) -> None:
        self.geometry = geometry
        ay, ax = geometry.y, geometry.x
        self.identity = ay.identity and ax.identity
        self.weight_y, self.weight_x = take(ay.src_weight, rows), take(ax.src_weight, cols)
        if self.identity:  # each pixel is its own (only) source, in the pixels' order
            self.position = torch.arange(len(rows), device=rows.device).expand(4, -1)
            self.source_rows, self.source_cols = rows, cols
            return
        width = ax.valid
        corners = [(ay.src0, ax.src0), (ay.src0, ax.src1), (ay.src1, ax.src0), (ay.src1, ax.src1)]
        flat = torch.stack([take(sy, rows) * width + take(sx, cols) for sy, sx in corners])  # (4, n) source ids
        self.position, sources = _renumber(flat, ay.valid * width)  # (4, n) into the sources (n_s,), sorted
        self.source_rows, self.source_cols = sources // width, sources % width

    def sources(self, logits: Tensor) -> Tensor:
        """(C, h, w) logits -> (n_s, C) their bilinear upsampling (U) at the source pixels."""
        # NOTE: pixel-major, so that each gather copies one contiguous row of C values.
        table = logits.reshape(len(logits), -1).t().contiguous()  # (h * w, C)
        return upsampled_at(table, self.geometry, self.source_rows, self.source_cols)

    def blend(self, values: Tensor, selected: Tensor | None = None) -> Tensor:
        """(n_s, C) values at the sources -> (n, C) at the output pixels (R); or at the pixels `selected` only."""
        position = self.position if selected is None else self.position[:, selected]
        if self.identity:  # each pixel is its first source (the others are the same, with weight 0)
            return values.index_select(0, position[0])
        weight_y, weight_x = (
            (self.weight_y, self.weight_x)
            if selected is None
            else (take(self.weight_y, selected), take(self.weight_x, selected))
        )
        return blend(values, position, weight_y[:, None], weight_x[:, None])


def upsampled_at(table: Tensor, geometry: Geometry, rows: Tensor, cols: Tensor) -> Tensor:
    """U at source pixels (rows, cols) (n,) each of the cropped input: (h * w, C) pixel-major logits -> (n, C)."""
    ay, ax, w = geometry.y, geometry.x, geometry.low[1]
    wy, wx = take(ay.tap_weight, rows)[:, None], take(ax.tap_weight, cols)[:, None]
    left, right = take(ax.tap0, cols), take(ax.tap1, cols)

    def row(tap: Tensor) -> Tensor:  # one tap row, blended along x
        base = take(tap, rows) * w
        return mix(table.index_select(0, base + left), table.index_select(0, base + right), wx)

    return mix(row(ay.tap0), row(ay.tap1), wy)


def _renumber(ids: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """ids in range(count) -> (index among the distinct ids, the distinct ids sorted). NOTE: a scatter into a
    table of `count`, faster than torch.unique's sort."""
    needed = torch.zeros(count, dtype=torch.bool, device=ids.device)
    needed[ids.flatten()] = True
    distinct = needed.nonzero().squeeze(1)
    index = torch.empty(count, dtype=torch.long, device=ids.device)
    index[distinct] = torch.arange(len(distinct), device=ids.device)
    return take(index, ids.flatten()).view(ids.shape), distinct


def blend(values: Tensor, position: Tensor, weight_y: Tensor, weight_x: Tensor) -> Tensor:
    """(n_s, C) values at the sources -> (n, C) at the output pixels: R's bilinear blend of each pixel's four
    sources (`position` (4, n)), with weights (n, 1) (or broadcastable)."""
    corner = [values.index_select(0, p) for p in position]
    top = mix(corner[0], corner[1], weight_x)
    return mix(top, mix(corner[2], corner[3], weight_x), weight_y)
