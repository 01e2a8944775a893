"""MaskFormer's set-prediction loss (paper Sec. 3.2, Eq. 1): after Hungarian matching, cross-entropy over all queries
("no object" down-weighted) plus sigmoid focal and dice losses on the matched masks, normalised by the number of
target masks over all processes; with deep supervision, every intermediate decoder output gets its own.

Shapes: B batch, Q queries, K classes (+1 "no object"), N targets, h×w prediction, H×W target size, P points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from .matcher import HungarianMatcher
from .sampling import point_sample, uncertain_point_coords


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Sum over masks of 1 - (2|X∩Y| + 1) / (|X| + |Y| + 1), divided by num_masks. (N, P), (N, P) -> scalar."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def focal_loss(logits: Tensor, targets: Tensor, num_masks: float, *, alpha: float, gamma: float) -> Tensor:
    """Sigmoid focal loss, mean over points, summed over masks, divided by num_masks. (N, P) -> scalar."""
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    return loss.mean(1).sum() / num_masks


def mean_over_processes(value: Tensor) -> Tensor:
    value = value.detach().float().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def global_num_masks(class_labels: list[Tensor], device: torch.device) -> float:
    """Average number of target masks per process, all-reduced when running distributed, at least 1."""
    num_masks = torch.tensor(float(sum(len(labels) for labels in class_labels)), device=device)
    return max(mean_over_processes(num_masks).item(), 1.0)


@dataclass
class MatchedOutputs:
    """One output (final or deep-supervision layer) paired with the targets by the matcher: what each term reads."""

    class_logits: Tensor  # (B, Q, K+1), float32
    class_targets: Tensor  # (B, Q): the matched target's class, K ("no object") for unmatched queries
    mask_logits: Tensor  # (N, P): matched predictions at the compared positions (pixels or sampled points)
    mask_targets: Tensor  # (N, P): their targets, 0/1
    num_masks: float  # target masks per process, averaged over processes, at least 1


class MaskFormerLoss(nn.Module):
    """Matching + weighted loss terms (CE, focal, dice), dense (the paper) or point-sampled (Mask2Former);
    `weight_dict` maps each term's name (a key of `terms`) to its weight, as Mask2Former's criterion."""

    def __init__(
        self,
        *,
        num_labels: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float],
        no_object_weight: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        num_points: int | None = None,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ):
        super().__init__()
        if unknown := sorted(set(weight_dict) - set(self.terms)):
            raise ValueError(
                f"MaskFormerLoss: unknown loss terms {unknown} in weight_dict (known: {sorted(self.terms)})"
            )
        self.num_labels = num_labels
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.no_object_weight = no_object_weight

    def class_weights(self, device: torch.device) -> Tensor:
        """CE weights (K+1,): 1 for every class, `no_object_weight` for "no object".

        NOTE: built on the fly, not kept as a buffer: `from_pretrained` leaves non-persistent buffers
        uninitialised (transformers 5 builds models on the meta device).
        """
        weights = torch.ones(self.num_labels + 1, device=device)
        weights[-1] = self.no_object_weight
        return weights

    def cross_entropy(self, matched: MatchedOutputs) -> Tensor:
        """CE over all B·Q queries, "no object" weighted by `no_object_weight`."""
        weights = self.class_weights(matched.class_logits.device)
        targets = matched.class_targets
        loss = F.cross_entropy(matched.class_logits.transpose(1, 2), targets, weight=weights, reduction="sum")
        # NOTE: a weighted mean whose denominator (the summed weights) is averaged over processes, so the
        # loss of a batch split over N processes equals the loss of the whole batch on one.
        return loss / mean_over_processes(weights[targets].sum()).clamp(min=1e-6)

    def focal(self, matched: MatchedOutputs) -> Tensor:
        alpha, gamma = self.focal_alpha, self.focal_gamma
        return focal_loss(matched.mask_logits, matched.mask_targets, matched.num_masks, alpha=alpha, gamma=gamma)

    def dice(self, matched: MatchedOutputs) -> Tensor:
        return dice_loss(matched.mask_logits, matched.mask_targets, matched.num_masks)

    # Every loss term by name. A new term: a function here and its weight's field in
    # `MaskFormerConfig.loss_weight_fields`; nothing else changes.
    terms: dict[str, Callable[[MaskFormerLoss, MatchedOutputs], Tensor]] = {
        "loss_cross_entropy": cross_entropy,
        "loss_mask": focal,
        "loss_dice": dice,
    }

    def output_losses(self, class_logits, mask_logits, class_labels, mask_labels, num_masks) -> dict[str, Tensor]:
        """The unweighted terms of one output, after matching it to the targets."""
        indices = self.matcher(class_logits, mask_logits, class_labels, mask_labels)
        batch_size, num_queries = class_logits.shape[:2]
        class_targets = torch.full(
            (batch_size, num_queries), self.num_labels, dtype=torch.int64, device=class_logits.device
        )  # (B, Q)
        for b, (pred_idx, tgt_idx) in enumerate(indices):
            matched_classes = class_labels[b][tgt_idx.to(class_labels[b].device)]
            class_targets[b, pred_idx.to(class_targets.device)] = matched_classes.to(class_targets)
        mask_logits, mask_targets = self.matched_masks(mask_logits, mask_labels, indices)
        matched = MatchedOutputs(class_logits.float(), class_targets, mask_logits, mask_targets, num_masks)
        return {name: self.terms[name](self, matched) for name in self.weight_dict}

    def matched_masks(self, mask_logits: Tensor, mask_labels: list[Tensor], indices) -> tuple[Tensor, Tensor]:
        """Matched predictions (B, Q, h, w) and targets (N_b, H, W) per image -> (N, P) logits and targets,
        compared at the target size (dense) or at `num_points` sampled points."""
        predicted = torch.cat(
            [mask_logits[b][pred_idx.to(mask_logits.device)] for b, (pred_idx, _) in enumerate(indices)]
        )
        if predicted.shape[0] == 0:
            # NOTE: no targets anywhere: empty pairs, whose losses are zeros that still reach every mask
            # parameter (DDP needs it).
            empty = mask_logits.float().flatten(0, 1)[:0].flatten(1)  # (0, hw)
            return empty, torch.zeros_like(empty)
        targets = torch.cat(
            [mask_labels[b][tgt_idx.to(mask_labels[b].device)] for b, (_, tgt_idx) in enumerate(indices)]
        ).to(device=mask_logits.device, dtype=torch.float32)  # (N, H, W)
        predicted = predicted.float()[:, None]  # (N, 1, h, w)
        if self.num_points is None:
            # The paper: predictions upsampled to the target (padded input) size.
            predicted = F.interpolate(predicted, size=targets.shape[-2:], mode="bilinear", align_corners=False)
            return predicted.flatten(1), targets.flatten(1)  # (N, HW)
        with torch.no_grad():
            coords = uncertain_point_coords(
                predicted,
                num_points=self.num_points,
                oversample_ratio=self.oversample_ratio,
                importance_sample_ratio=self.importance_sample_ratio,
            )  # (N, P, 2)
            targets = point_sample(targets[:, None], coords)[:, 0]  # (N, P)
        return point_sample(predicted, coords)[:, 0], targets  # (N, P)

    def forward(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        class_labels: list[Tensor],
        mask_labels: list[Tensor],
        auxiliary_outputs: list[tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns the weighted total loss and its weighted parts; auxiliary parts carry a `_{layer}` suffix."""
        self._check_targets(class_logits, class_labels, mask_labels)
        num_masks = global_num_masks(class_labels, class_logits.device)
        with torch.autocast(device_type=class_logits.device.type, enabled=False):
            weighted = {}
            for layer, (logits, masks) in enumerate([(class_logits, mask_logits), *(auxiliary_outputs or [])]):
                suffix = "" if layer == 0 else f"_{layer - 1}"
                losses = self.output_losses(logits, masks, class_labels, mask_labels, num_masks)
                weighted.update({name + suffix: value * self.weight_dict[name] for name, value in losses.items()})
        return sum(weighted.values()), weighted

    def _check_targets(self, class_logits: Tensor, class_labels: list[Tensor], mask_labels: list[Tensor]) -> None:
        batch_size = class_logits.shape[0]
        if not isinstance(class_labels, (list, tuple)) or not isinstance(mask_labels, (list, tuple)):
            raise TypeError("class_labels and mask_labels must be lists with one tensor per image")
        if len(class_labels) != batch_size or len(mask_labels) != batch_size:
            raise ValueError(
                f"got {len(class_labels)} class_labels and {len(mask_labels)} mask_labels for a batch of {batch_size}"
            )
        for b, (classes, masks) in enumerate(zip(class_labels, mask_labels)):
            if classes.ndim != 1 or masks.ndim != 3 or classes.shape[0] != masks.shape[0]:
                raise ValueError(
                    f"image {b}: class_labels must be (N,) and mask_labels (N, H, W) with the same N, got "
                    f"{tuple(classes.shape)} and {tuple(masks.shape)}"
                )
            if classes.numel() and (classes.min() < 0 or classes.max() >= self.num_labels):
                raise ValueError(
                    f"image {b}: class_labels must be in [0, {self.num_labels}), got {classes.unique().tolist()}"
                )
