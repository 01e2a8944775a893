"""Helpers shared by the benchmarks: synthetic model outputs and map agreement."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def smooth_noise(shape: tuple[int, ...], cell: int, generator: torch.Generator) -> torch.Tensor:
    """Roughly unit-variance noise varying over `cell` pixels (coarse Gaussian noise, upsampled bilinearly)."""
    *lead, h, w = shape
    coarse = torch.randn(math.prod(lead), 1, h // cell + 2, w // cell + 2, generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bilinear").view(shape)


def agreement(ours: torch.Tensor, other: torch.Tensor) -> float:
    """Share of pixels with the same value (0 when the shapes differ)."""
    if ours.shape != other.shape:
        return 0.0
    return (ours.to(torch.int64) == other.to(torch.int64)).double().mean().item()


def random_outputs(
    kind: str = "confident",
    *,
    batch_size: int = 1,
    num_queries: int = 100,
    num_classes: int = 150,
    mask_size: tuple[int, int] = (128, 128),
    num_objects: int = 15,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic (class_logits (B, Q, K+1), mask_logits (B, Q, h, w)) of a model.

    "confident": `num_objects` queries with a confident class own the cells of a random (Voronoi) partition
    with sharp, smooth mask logits; the other queries say "no object" with smooth low masks (what a trained
    model gives). "noisy": confident blobs on i.i.d. per-pixel mask noise (a stress case).
    """
    g = torch.Generator().manual_seed(seed)
    (h, w), K = mask_size, num_classes
    class_logits = torch.randn(batch_size, num_queries, K + 1, generator=g)
    class_logits[..., K] += 6.0  # "no object" by default
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    if kind == "confident":
        mask_logits = smooth_noise((batch_size, num_queries, h, w), 16, g) * 2 - 3
    else:
        mask_logits = torch.randn(batch_size, num_queries, h, w, generator=g) * 0.5 - 4
    for b in range(batch_size):
        objects = torch.randperm(num_queries, generator=g)[:num_objects]
        labels = torch.randint(0, K, (num_objects,), generator=g)
        centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([h, w])
        distance = ((ys - centres[:, :1, None]) ** 2 + (xs - centres[:, 1:, None]) ** 2).sqrt()  # (n, h, w)
        class_logits[b, objects, K] -= 12.0
        class_logits[b, objects, labels] += 10.0
        if kind == "confident":  # Voronoi cells: positive inside, sloping down across the boundary
            far = torch.full((1, h, w), float(h + w))  # so that a lone object still has a boundary
            nearest_other = torch.stack(
                [torch.cat([distance[:i], distance[i + 1 :], far]).amin(0) for i in range(num_objects)]
            )
            logits = 0.5 * (nearest_other - distance) + smooth_noise((num_objects, h, w), 8, g) * 0.5
        else:  # blobs on i.i.d. noise
            radius = (torch.rand(num_objects, 1, 1, generator=g) * 0.2 + 0.05) * h
            logits = 0.4 * (radius - distance) + torch.randn(num_objects, h, w, generator=g) * 0.3
        mask_logits[b, objects] = logits
    return class_logits, mask_logits
