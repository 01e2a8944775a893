"""Exact bilinear resampling of many low-resolution maps, decided window by window.

The paper's post-processing upsamples probabilities bilinearly to the padded input, crops the padding and
resizes to the target size. Those two passes compose into one linear map in which every output pixel is a
convex blend of a small window (3x3 at stride 4) of low-resolution values (`_Resampler`). Window maxima and
minima decide most pixels at low resolution (which map wins, whether a map passes a threshold); only the
pixels of undecided windows, along boundaries, are evaluated, over the few maps still in contention.
Used by `post_processing.py`; see its docstring for the conventions.

Shapes: N maps, (h, w) low resolution, (H, W) padded input, (H_t, W_t) target.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Size = tuple[int, int]
# Relative slack on window bounds: a float bilinear blend can exceed its inputs by a few ulps.
_BOUND_SLACK = 1e-5
# Windows start every 2 low-res samples: 4x fewer windows to decide at low resolution, for larger
# blocks to evaluate along boundaries. Measured on ADE20K-like outputs: 1.3-1.6x faster than 1; 3 is
# no better overall.
_WINDOW_STRIDE = 2


# ----------------------------------------------------------------------------------------------------
# Sizes and resampling
# ----------------------------------------------------------------------------------------------------
def _image_sizes(
    batch_size: int,
    padded_size: Sequence[int],
    valid_sizes: Sequence[Sequence[int]] | None,
    target_sizes: Sequence[Sequence[int]] | None,
) -> list[tuple[Size, Size]]:
    """Per image, the (valid, target) sizes as int pairs, checked against the batch and padded size."""
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
    return list(zip(valid, target))


def _resample_dense(x: torch.Tensor, padded_size: Size, valid_size: Size, target_size: Size) -> torch.Tensor:
    """(N, h, w) -> (N, H_t, W_t): upsample to the padded input, crop the padding, resize to the target."""
    if not len(x):
        return x.new_zeros(0, *target_size)
    x = F.interpolate(x[None], size=tuple(padded_size), mode="bilinear", align_corners=False)
    x = x[..., : valid_size[0], : valid_size[1]]
    if tuple(target_size) != tuple(valid_size):
        x = F.interpolate(x, size=tuple(target_size), mode="bilinear", align_corners=False)
    return x[0]


def _sliding(x: torch.Tensor, op, size: tuple[int, int], stride: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """`op`-reduce (torch.maximum / torch.minimum) x (..., h, w) over size[0] x size[1] windows whose
    corners are `stride` apart."""
    for dim, width, step in ((x.ndim - 2, size[0], stride[0]), (x.ndim - 1, size[1], stride[1])):
        n = (x.shape[dim] - width) // step + 1
        out = _strided(x, dim, 0, n, step)
        for i in range(1, width):
            out = op(out, _strided(x, dim, i, n, step))
        x = out
    return x


def _strided(x: torch.Tensor, dim: int, first: int, count: int, step: int) -> torch.Tensor:
    """x[..., first : first + count * step : step, ...] along `dim` (a view)."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(first, first + (count - 1) * step + 1, step)
    return x[tuple(index)]


@dataclass
class _Axis:
    """The two-pass resampling along one axis, as windows of `span` consecutive low-res samples.

    The low-res axis is extended by repeated edge samples, `head` before it and the rest of `length`
    after it (`_Resampler.extend`), so that a window may hang over the border; window j covers
    extended samples j * stride .. j * stride + span - 1. Output i lies in window start[i], chosen around the output's centre, so
    the outputs sharing a window, its block, are about as many everywhere (consecutive outputs:
    block_start, block_len per window). block_weights (windows, longest block, span) are the blend
    weights, zero past a block's end; block_weight_sums (windows, span) sum them over the block.
    """

    span: int
    stride: int
    head: int
    length: int
    start: torch.Tensor
    block_start: torch.Tensor
    block_len: torch.Tensor
    block_weights: torch.Tensor
    block_weight_sums: torch.Tensor

    @classmethod
    @functools.lru_cache(maxsize=64)  # eval loops meet the same few sizes again and again
    def build(
        cls, low: int, padded: int, valid: int, target: int, stride: int, device: torch.device
    ) -> _Axis:
        # Resample the identity: column i of the (target, low) operator is the response to sample i.
        # float32 like the maps themselves, so exactly the same taps are zero.
        eye = torch.eye(low, device=device)[None]  # (1, low, low)
        operator = F.interpolate(eye, size=padded, mode="linear", align_corners=False)[..., :valid]
        if target != valid:
            operator = F.interpolate(operator, size=target, mode="linear", align_corners=False)
        operator = operator[0].T  # (target, low)
        taps = (operator != 0).to(torch.uint8)
        first, last = taps.argmax(1), low - 1 - taps.flip(1).argmax(1)
        size = int((last - first).max()) + 1  # taps of one output, at most
        centre = operator @ torch.arange(low, device=device, dtype=operator.dtype)
        tap_start = torch.minimum(
            torch.maximum((centre - (size - 1) / 2).round().long(), last - size + 1), first
        )
        tap_start += size - 1  # on the extended axis, whose head repeats the first sample size - 1 times
        start = tap_start // stride
        num_windows = (low + size - 2) // stride + 1
        span, length = size + stride - 1, (num_windows - 1) * stride + size + stride - 1
        extended = F.pad(operator, (size - 1, length - low - size + 1))  # (target, length)
        weights = extended.gather(1, (start * stride)[:, None] + torch.arange(span, device=device))

        block_len = torch.bincount(start, minlength=num_windows)
        block_start = block_len.cumsum(0) - block_len
        offsets = torch.arange(int(block_len.max()), device=device)
        rows = (block_start[:, None] + offsets).clamp(max=target - 1)  # (windows, longest)
        block_weights = weights[rows] * (offsets < block_len[:, None])[..., None]
        return cls(
            span, stride, size - 1, length, start, block_start, block_len, block_weights, block_weights.sum(1)
        )


class _Resampler:
    """`_resample_dense` for one image, evaluated window by window (see the module docstring).

    Maps are first `extend`ed (edges repeated). Windows are indexed on an (R, C) grid, or by their
    flat index a * C + b.
    """

    def __init__(
        self, low_size: Size, padded_size: Size, valid_size: Size, target_size: Size, device, stride: int = 1
    ):
        self.target_size = tuple(target_size)
        device = torch.device(device)
        self.y = _Axis.build(int(low_size[0]), padded_size[0], valid_size[0], target_size[0], stride, device)
        self.x = _Axis.build(int(low_size[1]), padded_size[1], valid_size[1], target_size[1], stride, device)
        self.window, self.stride = (self.y.span, self.x.span), (stride, stride)
        self.grid = (len(self.y.block_len), len(self.x.block_len))  # (R, C)
        self.extended_size = (self.y.length, self.x.length)
        self.block_sizes = self.y.block_len[:, None] * self.x.block_len[None, :]  # (R, C) pixels per window
        w = self.extended_size[1]
        rows, cols = torch.arange(self.grid[0], device=device), torch.arange(self.grid[1], device=device)
        self._corner = (rows[:, None] * stride * w + cols * stride).flatten()
        self._taps = (
            torch.arange(self.y.span, device=device)[:, None] * w + torch.arange(self.x.span, device=device)
        ).flatten()
        by, bx = self.y.block_weights.shape[1], self.x.block_weights.shape[1]
        self._block_offsets = (
            torch.arange(by, device=device)[:, None] * target_size[1] + torch.arange(bx, device=device)
        ).flatten()

    def extend(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h, w) -> (N, extended_size), edge samples repeated."""
        (h, w), rows, cols = x.shape[-2:], self.y, self.x
        pad = (cols.head, cols.length - w - cols.head, rows.head, rows.length - h - rows.head)
        return F.pad(x[:, None], pad, mode="replicate")[:, 0]

    def window_extrema(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Extended maps (N, ., .) -> max and min over every window, each (N, R, C)."""
        return (
            _sliding(x, torch.maximum, self.window, self.stride),
            _sliding(x, torch.minimum, self.window, self.stride),
        )

    def block_sums(self, x: torch.Tensor) -> torch.Tensor:
        """Extended maps (N, ., .) -> (N, R, C): sum of the resampled values over each window's block."""
        (R, C), (ky, kx), (sy, sx) = self.grid, self.window, self.stride
        rows = sum(self.y.block_weight_sums[:, i, None] * _strided(x, 1, i, R, sy) for i in range(ky))
        return sum(self.x.block_weight_sums[:, j] * _strided(rows, 2, j, C, sx) for j in range(kx))

    def block_values(self, x: torch.Tensor, channels: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Exact resampled values of `channels` (n, T) of extended maps x on the blocks of `windows` (n,).

        Returns (n, by * bx, T) for the longest blocks (by, bx); entries past a block's end are 0.
        """
        h, w = self.extended_size
        a, b = windows // self.grid[1], windows % self.grid[1]
        index = (
            channels[..., None] * (h * w) + self._corner[windows, None, None] + self._taps
        )  # (n, T, ky*kx)
        patches = x.reshape(-1)[index].unflatten(-1, self.window)  # (n, T, ky, kx)
        values = torch.einsum("nyi,ntij,nxj->nyxt", self.y.block_weights[a], patches, self.x.block_weights[b])
        return values.flatten(1, 2).contiguous()  # contiguous: torch's argmax is slow on strided dims

    def block_pixels(self, windows: torch.Tensor) -> torch.Tensor:
        """Flat target-pixel indices (n, by * bx) of the windows' blocks; H_t * W_t past a block's end."""
        a, b = windows // self.grid[1], windows % self.grid[1]
        flat = (self.y.block_start[a] * self.target_size[1] + self.x.block_start[b])[
            :, None
        ] + self._block_offsets
        by, bx = self.y.block_weights.shape[1], self.x.block_weights.shape[1]
        inside = (torch.arange(by, device=windows.device) < self.y.block_len[a, None])[:, :, None] & (
            torch.arange(bx, device=windows.device) < self.x.block_len[b, None]
        )[:, None, :]
        return flat.masked_fill_(~inside.flatten(1), self.target_size[0] * self.target_size[1])

    def paint(self, per_window: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(R, C) per-window values -> (H_t, W_t), each pixel taking its window's value."""
        columns = per_window.index_select(1, self.x.start)  # (R, W_t); rows last, as whole-row copies
        return torch.index_select(columns, 0, self.y.start, out=out)


@dataclass
class _WinnerMap:
    """Per-pixel argmax over N maps, kept at window resolution plus the pixels of undecided windows."""

    resampler: _Resampler
    decided: torch.Tensor  # (R, C) winning map of each decided window
    is_decided: torch.Tensor  # (R, C) bool
    pixels: torch.Tensor  # (P,) flat target indices inside undecided windows (H_t * W_t: none)
    labels: torch.Tensor  # (P,) their winning map

    def counts(self, num: int) -> torch.Tensor:
        """(num,) pixels won by each map."""
        sizes = (self.resampler.block_sizes * self.is_decided).flatten()
        in_decided = torch.bincount(self.decided.flatten(), weights=sizes, minlength=num).long()
        num_pixels = self.resampler.target_size[0] * self.resampler.target_size[1]
        in_undecided = torch.bincount(self.labels[self.pixels < num_pixels], minlength=num)
        return in_decided + in_undecided

    def render(self, lut: torch.Tensor) -> torch.Tensor:
        """(H_t, W_t) map of lut[winning map]."""
        height, width = self.resampler.target_size
        flat = lut.new_empty(height * width + 1)  # + a slot for the pixels past a block's end
        out = self.resampler.paint(lut[self.decided], out=flat[:-1].view(height, width))
        flat[self.pixels] = lut[self.labels]
        return out


def _argmax_last(values: torch.Tensor) -> torch.Tensor:
    """values.argmax(-1), ties to the lowest index; by comparisons when the last dim is short (faster)."""
    if values.shape[-1] > 4:
        return values.argmax(-1)
    best, index = values[..., 0], torch.zeros(values.shape[:-1], dtype=torch.long, device=values.device)
    for t in range(1, values.shape[-1]):
        better = values[..., t] > best
        index.masked_fill_(better, t)
        if t + 1 < values.shape[-1]:
            best = torch.where(better, values[..., t], best)
    return index


def _bucketed(counts: torch.Tensor, limit: int, min_size: int = 64):
    """Group positions of `counts` by the power of two (capped at `limit`) that holds each count.

    Groups smaller than `min_size` join the next wider one: fewer, larger tensor operations.
    """
    widths = (2 ** torch.ceil(torch.log2(counts.double()))).long().clamp(max=limit)
    unique = torch.unique(widths).tolist()
    carried = widths.new_zeros(0)
    for i, width in enumerate(unique):
        members = torch.cat([carried, (widths == width).nonzero().squeeze(1)])
        if len(members) < min_size and i + 1 < len(unique):
            carried = members
            continue
        carried = widths.new_zeros(0)
        yield width, members


def _argmax_map(
    resampler: _Resampler,
    x: torch.Tensor,
    transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extrema: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> _WinnerMap:
    """Per target pixel, which of the N resampled maps is largest (ties: lowest index).

    x holds the N maps, extended (`_Resampler.extend`).
    `transform(values, map_index)` maps resampled values per map and must be non-decreasing (score
    weighting, thresholding). A map can win inside a window only if its window max reaches the
    largest window min; windows with a single such map are decided at low resolution, the others
    are evaluated over their candidates only. `extrema`: x's window extrema, when already known.
    """
    num = len(x)
    index = torch.arange(num, device=x.device).view(-1, 1, 1)
    window_max, window_min = resampler.window_extrema(x) if extrema is None else extrema
    if transform is not None:
        window_max, window_min = transform(window_max, index), transform(window_min, index)
    floor = window_min.amax(0)  # (R, C): no map ends below this anywhere in the window
    can_win = window_max >= floor - _BOUND_SLACK * floor.abs()  # (N, R, C)
    counts = can_win.view(torch.uint8).sum(0, dtype=torch.int32)
    # Where a single map can win, it is the only one flagged: its index is the largest flagged index.
    rank_dtype = torch.uint8 if num <= 256 else torch.int16 if num <= 2**15 else torch.int32
    decided = (can_win.to(rank_dtype) * index.to(rank_dtype)).amax(0).long()

    is_decided = (counts <= 1) | (resampler.block_sizes == 0)
    undecided = (~is_decided).flatten().nonzero().squeeze(1)
    pixels, labels = (
        [torch.zeros(0, dtype=torch.long, device=x.device)],
        [torch.zeros(0, dtype=torch.long, device=x.device)],
    )
    if len(undecided):
        flagged = can_win.flatten(1)[:, undecided].T  # (n, N)
        bound = window_max.flatten(1)[:, undecided].T.masked_fill(~flagged, -torch.inf)
        for width, which in _bucketed(counts.flatten()[undecided], limit=num):
            windows = undecided[which]
            # Every candidate, in increasing map order so that the argmax breaks ties to the lowest.
            candidates = bound[which].topk(width, dim=1).indices.sort(dim=1).values  # (n, T)
            values = resampler.block_values(x, candidates, windows)  # (n, by*bx, T)
            if transform is not None:
                values = transform(values, candidates[:, None, :])
            labels.append(candidates.gather(1, _argmax_last(values)).flatten())  # (n * by * bx,)
            pixels.append(resampler.block_pixels(windows).flatten())
    return _WinnerMap(resampler, decided, is_decided, torch.cat(pixels), torch.cat(labels))


def _threshold_stats(
    resampler: _Resampler,
    x: torch.Tensor,
    threshold: float,
    *,
    strict: bool,
    with_sums: bool = False,
    extrema: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per map of the extended maps x: how many resampled pixels are >= threshold (> if strict), and
    their sum.

    Windows entirely above or below the threshold are counted at low resolution; only windows that
    straddle it are evaluated. Returns counts (N,) int64 and sums (N,) float64 (None unless asked).
    """
    window_max, window_min = resampler.window_extrema(x) if extrema is None else extrema
    slack = _BOUND_SLACK * max(abs(threshold), 1e-6)
    above = window_min > threshold + slack  # (N, R, C)
    below = window_max < threshold - slack
    # Counting by a matrix-vector product: exact in float32 while the counts stay below 2**24.
    dtype = torch.float32 if resampler.target_size[0] * resampler.target_size[1] < 2**24 else torch.float64
    above_ = above.flatten(1).to(dtype)  # (N, R*C)
    counts = (above_ @ resampler.block_sizes.flatten().to(dtype)).round().long()
    sums = (above_ * resampler.block_sums(x).flatten(1)).sum(1, dtype=torch.float64) if with_sums else None

    straddle = (~above & ~below & (resampler.block_sizes > 0)).flatten(1).nonzero()  # (n, 2): map, window
    if len(straddle):
        maps, windows = straddle[:, 0], straddle[:, 1]
        values = resampler.block_values(x, maps[:, None], windows)[..., 0]  # (n, by*bx), 0 past a block
        hit = (values > threshold) if strict else (values >= threshold)
        hits = hit.sum(1)
        if (0 > threshold) if strict else (0 >= threshold):  # the zeros past a block's end hit too
            hits -= values.shape[1] - resampler.block_sizes.flatten()[windows]
        counts.index_add_(0, maps, hits)
        if with_sums:
            sums.index_add_(0, maps, (values * hit).sum(1, dtype=torch.float64))
    return counts, sums
