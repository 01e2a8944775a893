"""The resampling geometry of MaskFormer's inference, band by band.

The authors' inference (with detectron2's `sem_seg_postprocess`) resamples the stride-4 mask logits bilinearly
(align_corners=False) up to the padded input (U), then, cropped, to the output size (R). Both are separable: an
output coordinate blends two of the cropped input (`Axis.sources`), each a blend of two low-res ones (`Axis.taps`),
so a band of output rows reads a band of logit rows. Shapes: C maps, (h, w) low res, (H_t, W_t) the output.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Size = tuple[int, int]
Rows = tuple[int, int]  # [first, last) along an axis
BAND_ELEMENTS = 1 << 23  # values per band tensor by default (32 MB of float32)


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
    """One axis of torch's bilinear resize (align_corners=False): per output coordinate, the two inputs it blends
    and the second's weight, in float32 as torch."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    source = ((torch.arange(n_out, dtype=torch.float32, device=device) + 0.5) * scale - 0.5).clamp_(min=0)
    first = source.floor().long().clamp_(max=n_in - 1)
    weight = (source - first).clamp_(0, 1)
    return first, (first + 1).clamp_(max=n_in - 1), weight


@dataclass(frozen=True)
class Axis:
    """One axis of an image: `low` logits -> `padded` input (first `valid` kept) -> `target` output."""

    low: int
    padded: int
    valid: int
    target: int
    tap0: Tensor  # (valid,) the two low-res coordinates each kept padded coordinate blends (U)
    tap1: Tensor
    tap_weight: Tensor  # (valid,) float32 weight of tap1
    src0: Tensor  # (target,) the two valid coordinates each output coordinate blends (R)
    src1: Tensor
    src_weight: Tensor  # (target,) weight of src1

    @classmethod
    def build(cls, low: int, padded: int, valid: int, target: int, device: torch.device) -> Axis:
        tap0, tap1, tap_weight = (t[:valid] for t in linear_taps(low, padded, device))
        if valid == target:  # NOTE: torch's resize to the same size is the identity (weight 0)
            src0 = src1 = torch.arange(target, device=device)
            src_weight = torch.zeros(target, device=device)
        else:
            src0, src1, src_weight = linear_taps(valid, target, device)
        return cls(low, padded, valid, target, tap0, tap1, tap_weight, src0, src1, src_weight)

    @property
    def identity(self) -> bool:
        return self.valid == self.target

    @functools.cached_property
    def _host(self) -> tuple[list[int], list[int], list[int], list[int]]:
        return self.src0.tolist(), self.src1.tolist(), self.tap0.tolist(), self.tap1.tolist()

    def sources(self, rows: Rows) -> Rows:
        """The valid coordinates [a, b) that output coordinates rows[0]..rows[1]-1 blend (R)."""
        src0, src1, _, _ = self._host
        return src0[rows[0]], src1[rows[1] - 1] + 1

    def taps(self, sources: Rows) -> Rows:
        """The low-res coordinates [c, d) that valid coordinates sources[0]..sources[1]-1 blend (U)."""
        _, _, tap0, tap1 = self._host
        return tap0[sources[0]], tap1[sources[1] - 1] + 1


class Geometry:
    """An image's resampling: mask logits (h, w) -> padded input (H, W), cropped to (h_v, w_v) -> (H_t, W_t)."""

    def __init__(self, low: Size, padded: Size, valid: Size, target: Size, device: torch.device) -> None:
        if padded[0] < low[0] or padded[1] < low[1]:
            raise ValueError(f"padded size {padded} is smaller than the mask logits {low}")
        self.low, self.padded, self.valid, self.target, self.device = low, padded, valid, target, device
        self.y = Axis.build(low[0], padded[0], valid[0], target[0], device)
        self.x = Axis.build(low[1], padded[1], valid[1], target[1], device)
        # The padded input is exactly four times the logits (a stride-4 model's outputs, as the processor pads).
        self.stride_4 = padded == (4 * low[0], 4 * low[1])

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(low: Size, padded: Size, valid: Size, target: Size, device: torch.device) -> Geometry:
        """The geometry for these sizes, cached: images of a batch, and successive batches, often share it."""
        return Geometry(low, padded, valid, target, device)

    def bands(self, rows: int) -> Iterator[Rows]:
        """The output rows in bands of `rows`: [first, last) pairs."""
        for first in range(0, self.target[0], rows):
            yield first, min(first + rows, self.target[0])

    def band_rows(self, maps: int, elements: int = BAND_ELEMENTS) -> int:
        """Output rows per band so that `maps` maps over a band, at the output and the input, hold ~`elements`."""
        (h_v, w_v), (h_t, w_t) = self.valid, self.target
        per_row = maps * (w_t + w_v * (h_v / h_t)) + 1
        return max(1, min(h_t, int(elements / per_row) - 2))

    def upsampled(self, logits: Tensor, sources: Rows | None = None) -> Tensor:
        """U and the crop: (C, h, w) logits -> (C, rows, w_v) over the valid rows `sources` (default: all)."""
        first, last = sources or (0, self.y.valid)
        if self.stride_4:
            # NOTE: torch's upsampling of a band of logit rows, one row of margin on each side, equals the whole
            # map's on the rows the band reads without its margin (the clamping at a cut edge reaches two pixels
            # in); so does the band of columns the crop keeps, plus one.
            low_first, low_last = self.y.taps((first, last))
            low_first, low_last = max(low_first - 1, 0), min(low_last + 1, self.low[0])
            cols = min(self.low[1], -(-self.x.valid // 4) + 1)
            block = logits[None, :, low_first:low_last, :cols]
            up = F.interpolate(
                block, size=(4 * (low_last - low_first), 4 * cols), mode="bilinear", align_corners=False
            )
            offset = first - 4 * low_first
            return up[0, :, offset : offset + last - first, : self.x.valid]
        # Any other padding: the rows blended with the taps of torch's coordinates, then the columns by torch.
        tap0, tap1, weight = (t[first:last] for t in (self.y.tap0, self.y.tap1, self.y.tap_weight))
        rows = mix(logits.index_select(1, tap0), logits.index_select(1, tap1), weight[:, None])  # (C, rows, w)
        up = F.interpolate(rows[None], size=(last - first, self.padded[1]), mode="bilinear", align_corners=False)
        return up[0, :, :, : self.x.valid]

    def resized(self, maps: Tensor, rows: Rows | None = None, sources: Rows | None = None) -> Tensor:
        """R: maps over the valid rows `sources` (= `self.y.sources(rows)`) -> (C, rows, W_t) (default: all)."""
        rows = rows or (0, self.y.target)
        first = (sources or (0, self.y.valid))[0]
        if not self.y.identity:
            src0, src1, weight = (t[rows[0] : rows[1]] for t in (self.y.src0, self.y.src1, self.y.src_weight))
            maps = mix(maps.index_select(1, src0 - first), maps.index_select(1, src1 - first), weight[:, None])
        elif first != rows[0] or maps.shape[1] != rows[1] - rows[0]:
            maps = maps[:, rows[0] - first : rows[1] - first]
        if self.x.identity:
            return maps
        return F.interpolate(maps[None], size=(maps.shape[1], self.x.target), mode="bilinear", align_corners=False)[0]

    def full(self, logits: Tensor) -> Tensor:
        """R(U(logits)) of (C, h, w) maps over the whole output, (C, H_t, W_t)."""
        return self.resized(self.upsampled(logits))


def mix(first: Tensor, second: Tensor, weight: Tensor) -> Tensor:
    """(1 - weight) * first + weight * second, rounded as torch's bilinear kernel rounds it (a new tensor)."""
    return first * (1 - weight) + second * weight


def take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] along dim 0. NOTE: index_select is many times faster than advanced indexing on CPU."""
    return values.index_select(0, index)


def above(values: Tensor, threshold: float) -> Tensor:
    """values > threshold as 1.0 / 0.0. NOTE: a comparison written to a float tensor, then float products and sums,
    is several times faster on CPU than bool masks in arithmetic (measured with torch 2.x)."""
    return torch.gt(values, threshold, out=torch.empty_like(values))
