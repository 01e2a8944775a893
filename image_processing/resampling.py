"""The resampling geometry of MaskFormer's inference, bounded tile by tile and evaluated at chosen pixels.

The authors' inference (facebookresearch/MaskFormer `mask_former_model.py` with detectron2's
`sem_seg_postprocess`) resamples the stride-4 mask logits twice, bilinearly with align_corners=False: up to
the padded input size (U), then, once the padding is cropped, to the output size (R). Along one axis every
output coordinate blends two padded coordinates (R), each a blend of two low-resolution ones (U), so an output
pixel depends on a window of 2x2 to 3x3 low-resolution logits. Output pixels are grouped into *tiles* by their
window; the post-processing uses two facts:

- both resamplings are convex blends and the sigmoid is monotone, so the minimum and maximum of a query's
  logits over a tile's window bound the query at every pixel of the tile (`Geometry.window_extrema`);
- at a list of output pixels the original computation can be carried out exactly: logits interpolated to the
  pixels' source pixels (U), then blended to the output pixels (R), with the sigmoid between the two
  (semantic inference) or after both (panoptic, instance) as in the original (`Pixels`).

Shapes: C maps (queries or classes), (h, w) low resolution, (H, W) padded input, (h_v, w_v) its unpadded
content, (H_t, W_t) the output, (T_y, T_x) the grid of tiles (T = T_y * T_x), n pixels, n_s their distinct
source pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Size = tuple[int, int]


def image_sizes(
    batch_size: int,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None,
    target_sizes: Sequence[Sequence[int]] | None,
) -> list[tuple[Size, Size]]:
    """Per image, the (valid, target) sizes as int pairs, checked against the batch and the padded size."""
    padded = (int(padded_size[0]), int(padded_size[1]))
    valid = [padded] * batch_size if valid_sizes is None else [(int(h), int(w)) for h, w in valid_sizes]
    if len(valid) != batch_size:
        raise ValueError(f"valid_sizes has {len(valid)} entries for a batch of {batch_size}")
    for h, w in valid:
        if not (0 < h <= padded[0] and 0 < w <= padded[1]):
            raise ValueError(f"valid size {(h, w)} does not fit inside padded_size {padded}")
    target = valid if target_sizes is None else [(int(h), int(w)) for h, w in target_sizes]
    if len(target) != batch_size:
        raise ValueError(f"target_sizes has {len(target)} entries for a batch of {batch_size}")
    if any(h <= 0 or w <= 0 for h, w in target):
        raise ValueError(f"target sizes must be positive, got {target}")
    return list(zip(valid, target))


def linear_taps(n_in: int, n_out: int, device: torch.device | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One axis of torch's bilinear resize (align_corners=False): for each output coordinate, the two input
    coordinates it blends and the weight of the second, computed in float32 as torch does."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    source = ((torch.arange(n_out, dtype=torch.float32, device=device) + 0.5) * scale - 0.5).clamp_(min=0)
    first = source.floor().long().clamp_(max=n_in - 1)
    weight = (source - first).clamp_(0, 1)
    return first, (first + 1).clamp_(max=n_in - 1), weight


@dataclass(frozen=True)
class Axis:
    """One axis of an image: `low` logits -> `padded` input (first `valid` kept) -> `target` output.

    The support of an output coordinate (the low-res coordinates it depends on with a non-zero weight) starts
    at `window` and spans 2 coordinates, or 3 where its two sources straddle two low-res cells. Output
    coordinates are grouped by key = 2 * window + (span == 3); the keys that occur are this axis's tiles.
    """

    low: int
    valid: int
    target: int
    tap0: Tensor  # (valid,) the two low-res coordinates each kept padded coordinate blends (U)
    tap1: Tensor
    tap_weight: Tensor  # (valid,) float32 weight of tap1
    src0: Tensor  # (target,) the two padded coordinates each output coordinate blends (R)
    src1: Tensor
    src_weight: Tensor  # (target,) weight of src1
    window: Tensor  # (target,) first low-res coordinate of the support
    composite: Tensor  # (target, 3) weights of window, window + 1, window + 2 in R after U (both linear)
    composite_taps: Tensor  # (target, 3) those coordinates, clamped to the last one (where the weight is 0)
    support_end: Tensor  # (target,) the last low-res coordinate of each output coordinate's support
    keys: Tensor  # (T_axis,) the keys that occur, increasing
    tile: Tensor  # (target,) index of each output coordinate's key in `keys` (non-decreasing)
    start: Tensor  # (T_axis,) first output coordinate of each tile
    count: Tensor  # (T_axis,) output coordinates per tile

    @classmethod
    def build(cls, low: int, padded: int, valid: int, target: int, device: torch.device) -> Axis:
        tap0, tap1, tap_weight = (t[:valid] for t in linear_taps(low, padded, device))
        if valid == target:  # NOTE: torch's resize to the same size is the identity (weight 0)
            src0 = src1 = torch.arange(target, device=device)
            src_weight = torch.zeros(target, device=device)
        else:
            src0, src1, src_weight = linear_taps(valid, target, device)
        window = tap0[src0]
        composite = torch.zeros(target, 3, device=device)
        for source, source_weight in ((src0, 1 - src_weight), (src1, src_weight)):
            for tap, weight in ((tap0, 1 - tap_weight), (tap1, tap_weight)):
                composite.scatter_add_(
                    1, (tap[source] - window)[:, None], (source_weight * weight[source])[:, None]
                )
        taps = (window[:, None] + torch.arange(3, device=device)).clamp_(max=low - 1)
        wide = (composite[:, 2] > 0).long()  # the support spans 3 coordinates
        keys, tile, count = torch.unique_consecutive(
            2 * window + wide, return_inverse=True, return_counts=True
        )
        return cls(
            low, valid, target, tap0, tap1, tap_weight, src0, src1, src_weight, window, composite, taps,
            window + 1 + wide, keys, tile, torch.cumsum(count, 0) - count, count,
        )  # fmt: skip

    def reach(self, first: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """The output coordinates whose support meets low-res coordinates first..last (inclusive), as
        [start, end) per entry: `first`, `last` (N,) int64 -> start, end (N,) (start == end: none)."""
        start = torch.searchsorted(self.support_end, first)
        end = torch.searchsorted(self.window, last, right=True)
        return start, torch.maximum(start, end)

    @property
    def identity(self) -> bool:
        return self.valid == self.target

    def reduce(self, values: Tensor, dim: int, op) -> Tensor:
        """op-reduce `values` (..., low, ...) along `dim` over each tile's window -> (..., T_axis, ...)."""
        n = values.shape[dim]
        pair = values.narrow(dim, 0, n - 1) if n > 1 else values
        pair = (
            torch.cat([op(pair, values.narrow(dim, 1, n - 1)), values.narrow(dim, n - 1, 1)], dim)
            if n > 1
            else values
        )
        starts = self.keys // 2
        if not bool((self.keys % 2).any()):  # every support spans two coordinates
            return pair.index_select(dim, starts)
        triple = (
            torch.cat(
                [op(pair.narrow(dim, 0, n - 2), values.narrow(dim, 2, n - 2)), pair.narrow(dim, n - 2, 2)],
                dim,
            )
            if n > 2
            else pair
        )
        return torch.cat([pair, triple], dim).index_select(dim, starts + n * (self.keys % 2))


class Geometry:
    """An image's resampling: mask logits (h, w) -> padded input (H, W), cropped to (h_v, w_v) -> (H_t, W_t)."""

    def __init__(self, low: Size, padded: Size, valid: Size, target: Size, device: torch.device) -> None:
        if padded[0] < low[0] or padded[1] < low[1]:
            raise ValueError(f"padded size {padded} is smaller than the mask logits {low}")
        self.low, self.padded, self.target, self.device = low, padded, target, device
        self.y = Axis.build(low[0], padded[0], valid[0], target[0], device)
        self.x = Axis.build(low[1], padded[1], valid[1], target[1], device)
        self.grid = (len(self.y.keys), len(self.x.keys))
        # The padded input is exactly four times the logits (a stride-4 model's outputs, as the processor pads).
        self.stride_4 = padded == (4 * low[0], 4 * low[1])
        self.tile_pixels = (self.y.count[:, None] * self.x.count[None, :]).flatten()  # (T,)

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(low: Size, padded: Size, valid: Size, target: Size, device: torch.device) -> Geometry:
        """The geometry for these sizes, cached: images of a batch, and successive batches, often share it."""
        return Geometry(low, padded, valid, target, device)

    def window_extrema(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """(C, h, w) -> the minimum and maximum of each tile's window, each (C, T_y, T_x)."""
        return tuple(
            self.x.reduce(self.y.reduce(logits, 1, op), 2, op) for op in (torch.minimum, torch.maximum)
        )

    def paint(self, per_tile: Tensor) -> Tensor:
        """(T,) values -> (H_t, W_t): every pixel gets its tile's value."""
        # NOTE: columns first: widening the few tile rows, then copying whole rows, is ~3x faster than the reverse.
        return per_tile.view(self.grid).index_select(1, self.x.tile).index_select(0, self.y.tile)

    def pixels_of(self, tiles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Output pixels of the given tile ids, tile by tile: rows, cols and the position of their tile in
        `tiles`, each (n,)."""
        tile_y, tile_x = tiles // self.grid[1], tiles % self.grid[1]
        widths = take(self.x.count, tile_x)
        sizes = take(self.y.count, tile_y) * widths
        owner = torch.repeat_interleave(torch.arange(len(tiles), device=self.device), sizes)
        local = torch.arange(int(sizes.sum()), device=self.device) - take(
            torch.cumsum(sizes, 0) - sizes, owner
        )
        width = take(widths, owner)
        rows = take(take(self.y.start, tile_y), owner) + local // width
        return rows, take(take(self.x.start, tile_x), owner) + local % width, owner

    def flat_index(self, rows: Tensor, cols: Tensor) -> Tensor:
        return rows * self.target[1] + cols

    def upsampled(self, logits: Tensor) -> Tensor:
        """U and the crop with torch's bilinear resize (the original's operation): (C, h, w) -> (C, h_v, w_v)."""
        (h, w), size = self.low, self.padded
        if self.stride_4:
            # NOTE: only the samples the valid region reads: a stride-4 upsampling of them gives the same values
            # there (the clamping at the cut edge reaches 2 pixels past it; one extra sample keeps it outside).
            h, w = min(h, -(-self.y.valid // 4) + 1), min(w, -(-self.x.valid // 4) + 1)
            size = (4 * h, 4 * w)
        up = F.interpolate(logits[None, :, :h, :w], size=size, mode="bilinear", align_corners=False)[0]
        return up[:, : self.y.valid, : self.x.valid]

    def resized(self, maps: Tensor) -> Tensor:
        """R with torch's bilinear resize: (C, h_v, w_v) -> (C, H_t, W_t); the identity at the same size."""
        if tuple(maps.shape[-2:]) == tuple(self.target):
            return maps
        return F.interpolate(maps[None], size=self.target, mode="bilinear", align_corners=False)[0]

    def full(self, logits: Tensor) -> Tensor:
        """R(U(logits)) of (C, h, w) maps over the whole output, (C, H_t, W_t)."""
        return self.resized(self.upsampled(logits))

    def region(self, logits: Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        """R(U(logits)) of one (h, w) map over output rows first..last-1 and cols first..last-1.

        The two linear resamplings compose into one per axis (`Axis.composite`), so the logits are resampled
        straight to the output, without the padded-size intermediate, and only where asked. Where the output is
        the cropped padded input itself at four times the logits (no second resize), torch's upsampling of the
        logits the region reads is used instead: it computes the same blends, faster.
        """
        if self.y.identity and self.x.identity and self.stride_4:
            # NOTE: a block's upsampling equals the whole map's at the block's rows and columns except within two
            # pixels of a cut edge, where torch clamps to the block; the region starts >= 2 pixels after its
            # first low-res row (its window) and ends before its last one's reach, so it never reads those.
            (top, bottom), (left, right) = (
                (int(axis.tap0[first]), int(axis.tap1[last - 1]) + 1)
                for axis, (first, last) in ((self.y, rows), (self.x, cols))
            )
            block = logits[None, None, top:bottom, left:right]
            up = F.interpolate(
                block, size=(4 * (bottom - top), 4 * (right - left)), mode="bilinear", align_corners=False
            )
            return up[0, 0, rows[0] - 4 * top : rows[1] - 4 * top, cols[0] - 4 * left : cols[1] - 4 * left]
        top = int(self.y.window[rows[0]])
        bottom = min(int(self.y.window[rows[1] - 1]) + 3, self.low[0])
        band = _composite(logits[top:bottom], 1, self.x, cols, 0)  # (low-res rows, cols)
        return _composite(band, 0, self.y, rows, top)


def _composite(values: Tensor, dim: int, axis: Axis, part: tuple[int, int], offset: int) -> Tensor:
    """Resample a 2-D `values` along `dim` (holding low-res coordinates offset, offset + 1, ...) to the output
    coordinates part[0]..part[1]-1 of `axis`, with its composite weights."""
    first, last = part
    taps = values.index_select(dim, (axis.composite_taps[first:last] - offset).flatten())
    weights = axis.composite[first:last]
    if dim == 0:  # (3n, cols) -> (n, cols)
        taps, weights = taps.view(last - first, 3, -1), weights[:, :, None]
        out = taps[:, 0] * weights[:, 0]
        for tap in (1, 2):
            out.addcmul_(taps[:, tap], weights[:, tap])
        return out
    taps = taps.view(-1, last - first, 3)  # (rows, 3n) -> (rows, n)
    out = taps[..., 0] * weights[:, 0]
    for tap in (1, 2):
        out.addcmul_(taps[..., tap], weights[:, tap])
    return out


class Pixels:
    """Output pixels of one image and their source pixels in the padded input, pixel-major.

    `source_logits(logits)` gives the logits upsampled to the distinct source pixels (U), (n_s, C);
    `blend(values)` takes per-source values (n_s, C) to the output pixels (R), (n, C). Pixels of an axis
    resized to its own size are their own source along it.
    """

    def __init__(self, geometry: Geometry, rows: Tensor, cols: Tensor) -> None:
        self.geometry = geometry
        ay, ax = geometry.y, geometry.x
        if ay.identity and ax.identity:
            self.source_rows, self.source_cols, self.position = rows, cols, None
            return
        width = ax.valid
        corners = [(ay.src0, ax.src0), (ay.src0, ax.src1), (ay.src1, ax.src0), (ay.src1, ax.src1)]
        flat = torch.stack(
            [take(sy, rows) * width + take(sx, cols) for sy, sx in corners]
        )  # (4, n) source ids
        self.weight_y, self.weight_x = take(ay.src_weight, rows)[:, None], take(ax.src_weight, cols)[:, None]
        needed = torch.zeros(ay.valid * width, dtype=torch.bool, device=geometry.device)
        needed[flat.flatten()] = True
        sources = needed.nonzero().squeeze(1)  # (n_s,) sorted
        index = torch.empty(ay.valid * width, dtype=torch.long, device=geometry.device)
        index[sources] = torch.arange(len(sources), device=geometry.device)
        self.position = take(index, flat.flatten()).view(flat.shape)  # (4, n) into the sources
        self.source_rows, self.source_cols = sources // width, sources % width

    def source_logits(self, logits: Tensor) -> Tensor:
        """(C, h, w) logits -> (n_s, C) their bilinear upsampling (U) at the source pixels."""
        ay, ax, (_, w) = self.geometry.y, self.geometry.x, self.geometry.low
        py, px = self.source_rows, self.source_cols
        # NOTE: pixel-major, so that each gather copies one contiguous row of C values.
        table = logits.reshape(len(logits), -1).t().contiguous()  # (h * w, C)
        wy, wx = take(ay.tap_weight, py)[:, None], take(ax.tap_weight, px)[:, None]
        left, right = take(ax.tap0, px), take(ax.tap1, px)

        def row(tap: Tensor) -> Tensor:  # one tap row, blended along x
            base = take(tap, py) * w
            return mix(table.index_select(0, base + left), table.index_select(0, base + right), wx)

        return mix(row(ay.tap0), row(ay.tap1), wy)

    def blend(self, values: Tensor) -> Tensor:
        """(n_s, C) values at the sources -> (n, C) at the output pixels (R)."""
        if self.position is None:
            return values
        corner = [values.index_select(0, position) for position in self.position]
        top = mix(corner[0], corner[1], self.weight_x)
        return mix(top, mix(corner[2], corner[3], self.weight_x), self.weight_y)


class CellPixels:
    """Output pixels of one image evaluated through whole cells of the padded input, when it is exactly four times
    the logits (a stride-4 model's outputs, as the processor pads them): channel-major, pixel-major.

    With the logits padded by one sample on each side (torch clamps at the borders, which equals repeating the
    edge), cell (i, j) holds the 4x4 padded pixels between samples i-1, i (rows) and j-1, j (columns), at the
    fixed fractions 1/8, 3/8, 5/8, 7/8: its pixels are one 16x4 matrix times its four corner logits, so the
    upsampling (U) costs four gathers per cell instead of four per pixel. `cell_logits(logits)` gives the
    upsampled logits of the cells the pixels' sources lie in, (16 * n_cells, C); `blend(values)` takes such
    per-source values to the output pixels (R), (n, C).
    """

    def __init__(self, geometry: Geometry, rows: Tensor, cols: Tensor) -> None:
        self.geometry = geometry
        ay, ax, (h, w) = geometry.y, geometry.x, geometry.low
        device, width = geometry.device, w + 1  # cells per row
        sources_y = [take(ay.src0, rows) + 2, take(ay.src1, rows) + 2]  # shifted: cell = // 4, offset = % 4
        sources_x = [take(ax.src0, cols) + 2, take(ax.src1, cols) + 2]
        cell = torch.stack([(sy // 4) * width + sx // 4 for sy in sources_y for sx in sources_x])  # (4, n)
        offset = torch.stack([(sy % 4) * 4 + sx % 4 for sy in sources_y for sx in sources_x])  # (4, n)
        needed = torch.zeros((h + 1) * width, dtype=torch.bool, device=device)
        needed[cell.flatten()] = True
        self.cells = needed.nonzero().squeeze(1)  # (n_cells,)
        index = torch.empty((h + 1) * width, dtype=torch.long, device=device)
        index[self.cells] = torch.arange(len(self.cells), device=device)
        self.position = offset * len(self.cells) + take(index, cell.flatten()).view(cell.shape)  # (4, n)
        self.weight_y, self.weight_x = take(ay.src_weight, rows), take(ax.src_weight, cols)
        fractions = torch.arange(4, device=device) * 0.25 + 0.125
        wy, wx = fractions.repeat_interleave(4), fractions.repeat(4)  # (16,) per pixel of a cell
        self.weights = torch.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], 1)  # (16, 4)

    @staticmethod
    def applies(geometry: Geometry) -> bool:
        return geometry.stride_4

    def cell_logits(self, logits: Tensor) -> Tensor:
        """(C, h, w) logits -> (16 * n_cells, C) upsampled (U) over the needed cells, offset-major rows."""
        channels, w = len(logits), self.geometry.low[1]
        table = F.pad(logits[None], (1, 1, 1, 1), mode="replicate")[0].reshape(channels, -1).t().contiguous()
        cell_y, cell_x = self.cells // (w + 1), self.cells % (w + 1)
        top_left = cell_y * (w + 2) + cell_x  # in the padded logits
        corners = table.index_select(
            0, torch.cat([top_left, top_left + 1, top_left + w + 2, top_left + w + 3])
        )
        return torch.mm(self.weights, corners.view(4, -1)).view(16 * len(self.cells), channels)

    def blend(self, values: Tensor) -> Tensor:
        """(16 * n_cells, C) values at the sources' cells -> (n, C) at the output pixels (R)."""
        if self.geometry.y.identity and self.geometry.x.identity:  # each pixel is its own (first) source
            return values.index_select(0, self.position[0])
        corner = [values.index_select(0, position) for position in self.position]
        top = mix(corner[0], corner[1], self.weight_x[:, None])
        return mix(top, mix(corner[2], corner[3], self.weight_x[:, None]), self.weight_y[:, None])


def mix(first: Tensor, second: Tensor, weight: Tensor) -> Tensor:
    """(1 - weight) * first + weight * second, rounded as torch's bilinear kernel rounds it (a new tensor)."""
    return first * (1 - weight) + second * weight


def take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] along dim 0. NOTE: index_select is many times faster than advanced indexing on CPU."""
    return values.index_select(0, index)
