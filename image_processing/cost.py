"""Which path `method="auto"` takes: the one a cost model predicts faster, on this machine, for these sizes.

A path's time = its fixed cost per image (a tiny image timed once) + its work on values, counted in kinds each at
this machine's speed (`Speeds`, measured once per thread count). The bounded path's work depends on the share the
bounds leave open, asked of the data (a probe) only when the worst and best cases disagree. Off the CPU: dense.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .resampling import BAND_ELEMENTS, Geometry


@dataclass(frozen=True)
class Speeds:
    """Seconds per unit of work on this machine (`measure`)."""

    call: float  # one torch call on a small tensor (dispatch, allocation)
    interp: float  # one value produced by a bilinear F.interpolate
    sigmoid: float  # one sigmoid
    mac: float  # one multiply-add of a large matrix product
    gather: float  # one value copied by index_select of rows
    elem: float  # one value of a binary elementwise operation


def _best_time(function: Callable[[], object], repeats: int = 3) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=8)
def measure(threads: int) -> Speeds:
    """Times each kind of work once (a few ms in all) for `threads` torch threads; cached per thread count."""
    generator = torch.Generator().manual_seed(0)
    small = torch.zeros(8)
    maps = torch.randn(1, 8, 32, 32, generator=generator)  # -> 8 x 128 x 128 = 128 K values
    values = torch.randn(1 << 17, generator=generator)
    rows = torch.randn(1 << 12, 32, generator=generator)
    index = torch.randint(0, 1 << 12, (1 << 12,), generator=generator)
    left, right = torch.randn(64, 256, generator=generator), torch.randn(256, 256, generator=generator)
    calls = 32
    return Speeds(
        call=_best_time(lambda: [small.add(1.0) for _ in range(calls)]) / calls,
        interp=_best_time(lambda: F.interpolate(maps, size=(128, 128), mode="bilinear")) / (8 * 128 * 128),
        sigmoid=_best_time(lambda: values.sigmoid()) / values.numel(),
        mac=_best_time(lambda: torch.mm(left, right)) / (64 * 256 * 256),
        gather=_best_time(lambda: rows.index_select(0, index)) / rows.numel(),
        elem=_best_time(lambda: values * values) / values.numel(),
    )


def speeds() -> Speeds:
    return measure(torch.get_num_threads())


@functools.lru_cache(maxsize=32)
def _fixed(task: str, method: str, threads: int, tiny: Callable[[str, str], object]) -> float:
    return _best_time(lambda: tiny(task, method), repeats=5)


def fixed_seconds(task: str, method: str, tiny: Callable[[str, str], object] | None) -> float:
    """A path's fixed cost per image: `tiny(task, method)` timed once per process and thread count; 0 without it."""
    return 0.0 if tiny is None else _fixed(task, method, torch.get_num_threads(), tiny)


def _bands(geometry: Geometry, maps: int) -> int:
    return -(-geometry.target[0] // geometry.band_rows(maps))


def dense_seconds(task: str, geometry: Geometry, maps: int, classes: int, s: Speeds) -> float:
    """The dense path's work on values, and its calls beyond a tiny image's."""
    (h_v, w_v), (h_t, w_t) = geometry.valid, geometry.target
    n_v, n_t = h_v * w_v, h_t * w_t
    resize = 0 if (h_v, w_v) == (h_t, w_t) else 1
    if task == "semantic":
        bands = _bands(geometry, max(maps, classes))
        return (
            maps * n_v * (s.interp + s.sigmoid)
            + maps * classes * n_v * s.mac
            + classes * n_t * (resize * (s.interp + s.elem) + s.elem)
            + 8 * (bands - 1) * s.call
        )
    bands = _bands(geometry, 3 * maps)
    # instance: the masks' areas, then the map (one band: kept)
    passes = 2 if task == "instance" and bands > 1 else 1
    # NOTE: instance over several bands makes, per pass, new band-sized tensors (BAND_ELEMENTS values, out of cache)
    # for the resize, sigmoid, comparison, gather and product: ~20 in-cache elementwise passes' worth per value, as
    # the bounded model counts for its regions (4 undercounted it by half against the time measured at 12 MP).
    elementwise = 20 if passes == 2 else 4
    per_pixel = maps * (s.interp * resize + s.sigmoid + elementwise * s.elem)
    return passes * (maps * n_v * s.interp + n_t * per_pixel) + 12 * (bands - 1) * passes * s.call


def bounded_seconds(task: str, geometry: Geometry, maps: int, classes: int, s: Speeds, open_share: float) -> float:
    """The bounded path's work when the bounds leave `open_share` of the image open, and its extra calls."""
    (h, w), (h_v, w_v), (h_t, w_t) = geometry.low, geometry.valid, geometry.target
    n_v, n_t, cells = h_v * w_v, h_t * w_t, h * w
    identity = (h_v, w_v) == (h_t, w_t)
    if task == "semantic":
        bounds = maps * cells * (12 * s.elem + 2 * s.sigmoid) + cells * maps * classes * 4 * s.mac
        exact = open_share * n_v * (maps * (s.sigmoid + 4 * s.mac + 2 * s.elem) + maps * classes * s.mac)
        labels = n_v * 6 * s.elem + (0 if identity else n_t * (6 * s.elem + 2 * s.gather))
        rest = 0 if identity else open_share * n_t * 0.3 * (16 * s.gather + 24 * s.elem)
        bands = n_t * 4 // BAND_ELEMENTS
        chunks = open_share * n_v * maps // (1 << 20)
        guesses = max(0, min(classes, 64) - 4)  # the bounds' tests loop over the classes guessed (~24 calls each)
        return bounds + exact + labels + rest + (30 * bands + 20 * chunks + 24 * guesses) * s.call
    tiles = max(1.0, min(n_t, 4 * cells * max(1.0, n_t / max(n_v, 1)) / 16))
    if task == "panoptic":
        bounds = maps * (cells * 8 + tiles * 14) * s.elem
        # an open pixel: its indices, and its queries' four sources gathered, blended, compared (all at worst);
        # NOTE: ~40 passes over (M, n) values, out of cache, as measured against the dense path on 12-MP noise
        exact = open_share * n_t * (40 * s.elem + maps * (4 * s.gather + s.sigmoid + 40 * s.elem))
        bands = maps * tiles * 8 // BAND_ELEMENTS
        return bounds + exact + n_t * 2 * s.gather + 40 * bands * s.call
    # instance: each candidate over its box (`open_share`: the boxes' pixels over maps x the output), twice
    evaluated = open_share * maps * n_t
    extra_calls = 2 * 14 * max(0, maps - 8)  # per candidate and pass, beyond the tiny image's 8
    return 2 * evaluated * (20 * s.elem + s.sigmoid) + maps * cells * 4 * s.elem + extra_calls * s.call


def use_bounded(
    task: str,
    method: str,
    geometry: Geometry,
    *,
    maps: int,
    classes: int = 0,
    open_share: float | Callable[[], float] | None = None,
    tiny: Callable[[str, str], object] | None = None,
) -> bool:
    """Whether `method` means the bounded path: "bounded", or "auto" on the CPU where predicted faster, even with
    everything open; else, if faster with nothing open (plus the probe), with `open_share` (a probe asked only
    then). `tiny(task, method)` runs one tiny image through a path (`fixed_seconds`)."""
    if method != "auto" or geometry.device.type != "cpu":
        return method == "bounded"
    s = speeds()
    dense = fixed_seconds(task, "dense", tiny) + dense_seconds(task, geometry, maps, classes, s)
    fixed = fixed_seconds(task, "bounded", tiny)
    if fixed + bounded_seconds(task, geometry, maps, classes, s, 1.0) < dense:
        return True
    # what asking the data costs, calls dominating (instance: the boxes are needed anyway)
    probe = (30 + 20 * geometry.low[0] / 32 if task == "semantic" else 100) * s.call
    probe = probe if callable(open_share) and task != "instance" else 0.0
    if open_share is None or fixed + bounded_seconds(task, geometry, maps, classes, s, 0.0) + probe >= dense:
        return False
    share = open_share() if callable(open_share) else open_share
    return fixed + bounded_seconds(task, geometry, maps, classes, s, share) < dense
