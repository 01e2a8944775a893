"""Bipartite matching between predicted and ground-truth masks (paper Sec. 3.2, Eq. 1 and 2).

Cost of prediction i for target j: `-w_ce * p_i(c_j) + w_mask * focal(m_i, m_j) + w_dice * dice(m_i, m_j)`, solved
per image with scipy's `linear_sum_assignment`; the weights are those of the loss terms the costs mirror.

Shapes: Q queries, N targets, P points (pixels or sampled points), K classes (+1 "no object").
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .sampling import point_sample

# Finite stand-in for NaN/inf costs: large enough to never be preferred, small enough for scipy.
_COST_LIMIT = 1e8

# The paper's cost weights (Sec. 3.2 and its appendix), by the name of the loss term each cost mirrors.
PAPER_COST_WEIGHTS = {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}


def pairwise_sigmoid_focal(logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Mean over P of the sigmoid focal loss of every prediction against every target: (Q, P), (N, P) -> (Q, N)."""
    prob = logits.sigmoid()
    # NOTE: BCE with logits against all-ones / all-zeros, written through softplus to stay finite.
    positive = (1 - prob) ** gamma * nn.functional.softplus(-logits)
    negative = prob**gamma * nn.functional.softplus(logits)
    if alpha >= 0:
        positive = positive * alpha
        negative = negative * (1 - alpha)
    cost = torch.einsum("qp,np->qn", positive, targets) + torch.einsum("qp,np->qn", negative, 1 - targets)
    return cost / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every prediction against every target: (Q, P), (N, P) -> (Q, N)."""
    prob = logits.sigmoid()
    numerator = 2 * torch.einsum("qp,np->qn", prob, targets)
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """Matches the Q predictions of each image to its N targets at the lowest total cost: densely (targets resized
    to the prediction size, the paper) or, with `num_points`, on uniformly sampled points (Mask2Former)."""

    # The pairwise costs (`pairwise_costs`) by the loss term each mirrors, in summation order.
    cost_terms = tuple(PAPER_COST_WEIGHTS)

    def __init__(
        self,
        *,
        cost_weights: Mapping[str, float] | None = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        num_points: int | None = None,
    ):
        super().__init__()
        weights = PAPER_COST_WEIGHTS if cost_weights is None else cost_weights
        self.cost_weights = {name: weights[name] for name in self.cost_terms if name in weights}
        if not any(self.cost_weights.values()):
            raise ValueError(
                f"HungarianMatcher: no cost weight > 0 among {list(self.cost_terms)}, got {dict(weights)}"
            )
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.num_points = num_points

    def pairwise_costs(
        self, class_logits: Tensor, mask_logits: Tensor, target_classes: Tensor, target_masks: Tensor
    ) -> dict[str, Tensor]:
        """One image, in fp32: each cost (Q, N) by the name of the loss term it mirrors."""
        mask_logits = mask_logits.float()
        target_masks = target_masks.to(mask_logits)
        class_cost = -class_logits.float().softmax(-1)[:, target_classes]  # (Q, N)
        if self.num_points is None:
            if target_masks.shape[-2:] != mask_logits.shape[-2:]:
                target_masks = nn.functional.interpolate(
                    target_masks[:, None], size=mask_logits.shape[-2:], mode="nearest"
                )[:, 0]
            predicted = mask_logits.flatten(1)  # (Q, hw)
            targets = target_masks.flatten(1)  # (N, hw)
        else:
            coords = torch.rand(1, self.num_points, 2, device=mask_logits.device)
            predicted = point_sample(mask_logits[:, None], coords.expand(mask_logits.shape[0], -1, -1))[:, 0]
            targets = point_sample(target_masks[:, None], coords.expand(target_masks.shape[0], -1, -1))[:, 0]
        return {
            "loss_cross_entropy": class_cost,
            "loss_mask": pairwise_sigmoid_focal(predicted, targets, alpha=self.focal_alpha, gamma=self.focal_gamma),
            "loss_dice": pairwise_dice(predicted, targets),
        }

    @torch.no_grad()
    def cost_matrix(
        self, class_logits: Tensor, mask_logits: Tensor, target_classes: Tensor, target_masks: Tensor
    ) -> Tensor:
        """One image: class_logits (Q, K+1), mask_logits (Q, h, w), target_classes (N,), target_masks (N, H, W)
        -> finite cost (Q, N), in fp32."""
        costs = self.pairwise_costs(class_logits, mask_logits, target_classes, target_masks)
        cost = sum(weight * costs[name] for name, weight in self.cost_weights.items())
        # NOTE: NaN/inf (diverged logits) would make scipy raise "cost matrix is infeasible".
        return torch.nan_to_num(cost, nan=_COST_LIMIT, posinf=_COST_LIMIT, neginf=-_COST_LIMIT)

    @torch.no_grad()
    def forward(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        class_labels: list[Tensor],
        mask_labels: list[Tensor],
    ) -> list[tuple[Tensor, Tensor]]:
        """class_logits (B, Q, K+1), mask_logits (B, Q, h, w), per image class_labels (N_b,) and mask_labels
        (N_b, H, W) -> per image (prediction indices, target indices), each (min(Q, N_b),)."""
        indices = []
        # NOTE: costs in fp32 outside autocast, so fp16 training never overflows the focal/dice terms.
        with torch.autocast(device_type=mask_logits.device.type, enabled=False):
            for b, (classes, masks) in enumerate(zip(class_labels, mask_labels)):
                cost = self.cost_matrix(class_logits[b], mask_logits[b], classes, masks) if classes.numel() else None
                rows, cols = ([], []) if cost is None else linear_sum_assignment(cost.cpu().numpy())
                indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
