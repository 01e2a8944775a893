"""Point sampling for the memory-light mask loss (Mask2Former, Cheng et al. 2022, Sec. 3.2; PointRend).

Shapes: N masks, P points; coordinates are (x, y) in [0, 1] over the mask, as in PointRend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of inputs (N, C, H, W) at coords (N, P, 2) in [0, 1] -> (N, C, P)."""
    # grid_sample wants [-1, 1] and a (N, P, 1, 2) grid.
    return F.grid_sample(inputs, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)


def uncertain_point_coords(
    mask_logits: Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """(N, P, 2) points: of `num_points * oversample_ratio` random candidates, the `importance_sample_ratio` share
    where mask_logits (N, 1, H, W) are most uncertain (|logit| smallest), the rest uniformly at random."""
    num_masks = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_sampled, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, candidates).abs()[:, 0]  # (N, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # (N, num_uncertain)
    coords = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat((coords, torch.rand(num_masks, num_random, 2, device=mask_logits.device)), dim=1)
    return coords
