"""Exact comparison of post-processing results with the authors' algorithm (tests/reference_inference.py), up to
an explicit mask of float ties.

A pixel is a tie when the reference's two best competitors there are within `TIE` of each other (relative to the
largest value compared): two evaluations that add the same float32 terms in another order may then rank them
differently, and neither is wrong. For instance maps, a pixel whose sigmoid is that close to the mask threshold
(`THRESHOLD_TIE`) for some candidate is a tie too (its membership in that binary mask is a rounding decision). Everywhere else the
maps must be equal, and the segments (ids, labels, fusing) identical, scores to 1e-5 (float32 sums in another
order, then rounded to 6 digits). The tie masks are built from the reference's own intermediate tensors, and
each check asserts they stay rare, so a comparison cannot pass by masking everything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import reference_inference as reference

TIE = 1e-5
THRESHOLD_TIE = 1e-6  # a sigmoid this close to the mask threshold (float32 sigmoids near 0.5 are ~6e-8 apart)
MAX_TIES = 0.01  # share of pixels a tie mask may cover


def _close_top_two(values: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (H, W) bool: the two largest values are within TIE (relative to the largest magnitude)."""
    if len(values) < 2:
        return torch.zeros(values.shape[1:], dtype=torch.bool)
    top = values.topk(2, dim=0).values
    return top[0] - top[1] <= TIE * max(1.0, float(values.abs().max()))


def _sizes(class_logits, sizes):
    valid = sizes.get("valid_sizes") or [tuple(sizes["padded_size"])] * len(class_logits)
    return list(zip(valid, sizes.get("target_sizes") or valid))


def _check_ties(ties: torch.Tensor, what: str) -> None:
    assert ties.double().mean() <= MAX_TIES, f"{what}: {ties.double().mean():.2%} of pixels are ties"


def _by_name(results) -> dict:
    return results if isinstance(results, dict) else {"": results}


def check_semantic(results, class_logits, mask_logits, sizes: dict) -> None:
    """Our class maps (a list per image, or {name: list}) equal the original's argmax wherever it is not a tie; at
    ties, ours is a tied class."""
    upsampled = reference.upsampled(mask_logits, sizes["padded_size"])
    for b, (valid, target) in enumerate(_sizes(class_logits, sizes)):
        probs = F.softmax(class_logits[b].float(), dim=-1)[..., :-1]
        scores = reference.sem_seg_postprocess(
            torch.einsum("qc,qhw->chw", probs, upsampled[b].sigmoid()), valid, target
        )
        for what, ours in _by_name(results).items():
            check_argmax(ours[b], scores, f"semantic {what}")


def check_argmax(mine: torch.Tensor, scores: torch.Tensor, what: str = "") -> None:
    """A class map (H, W) int64 equals the argmax of the reference scores (C, H, W) wherever the two best are not
    tied; at ties, it is a tied class."""
    expected, ties = scores.argmax(0), _close_top_two(scores)
    _check_ties(ties, what)
    mine = mine.cpu()
    assert mine.shape == expected.shape and mine.dtype == torch.int64, what
    assert torch.equal(mine[~ties], expected[~ties]), f"{what}: {(mine != expected)[~ties].sum()} pixels"
    chosen = scores.gather(0, mine[None])[0]
    assert bool((scores.max(0).values - chosen <= TIE * max(1.0, float(scores.abs().max()))).all()), what


def same_segments(ours: list[dict], expected: list[dict], what: str = "") -> None:
    def key(segments):
        return [(s["id"], s["label_id"], s.get("was_fused", False)) for s in segments]

    assert key(ours) == key(expected), what
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(ours, expected)), what


def _equal_outside(ours: torch.Tensor, expected: torch.Tensor, ties: torch.Tensor, what: str) -> None:
    _check_ties(ties, what)
    mine = ours.cpu()
    assert mine.shape == expected.shape and mine.dtype == expected.dtype, what
    assert torch.equal(mine[~ties], expected[~ties]), f"{what}: {(mine != expected)[~ties].sum()} pixels differ"


def check_panoptic(results, class_logits, mask_logits, sizes: dict, **options) -> None:
    """Same segments as the original's panoptic inference; same maps outside the pixels where the two best
    score x sigmoid values are tied."""
    expected = reference.panoptic(class_logits, mask_logits, **sizes, **options)
    threshold = options.get("threshold", 0.5)
    upsampled = reference.upsampled(mask_logits, sizes["padded_size"])
    num_classes = class_logits.shape[-1] - 1
    for b, (valid, target) in enumerate(_sizes(class_logits, sizes)):
        scores, labels = F.softmax(class_logits[b].float(), dim=-1).max(-1)
        keep = labels.ne(num_classes) & (scores > threshold)
        masks = reference.sem_seg_postprocess(upsampled[b], valid, target).sigmoid()[keep]
        ties = _close_top_two(scores[keep].view(-1, 1, 1) * masks)
        for what, ours in _by_name(results).items():
            same_segments(ours[b]["segments_info"], expected[b]["segments_info"], f"panoptic {what}")
            _equal_outside(ours[b]["segmentation"], expected[b]["segmentation"], ties, f"panoptic {what}")


def check_instance(results, class_logits, mask_logits, sizes: dict, **options) -> None:
    """Same instances as the reference (Mask2Former's scoring plus our documented additions); same maps outside the
    pixels where the two best covering score x sigmoid values are tied or a sigmoid is at the mask threshold."""
    expected = reference.instance(class_logits, mask_logits, **sizes, **options)
    mask_threshold = options.get("mask_threshold", 0.5)
    upsampled = reference.upsampled(mask_logits, sizes["padded_size"])
    for b, (valid, target) in enumerate(_sizes(class_logits, sizes)):
        mask_pred = reference.sem_seg_postprocess(upsampled[b], valid, target)
        scores, _, binary, probs = reference.instance_candidates(
            class_logits[b], mask_pred, class_logits.shape[1], mask_threshold
        )
        kept = (scores >= options.get("threshold", 0.5)) & binary.flatten(1).any(1)  # the reference's instances
        weighted = torch.where(binary[kept], scores[kept].view(-1, 1, 1) * probs[kept], torch.tensor(-1.0))
        ties = (
            _close_top_two(weighted) & (weighted.amax(0) >= 0)
            if len(weighted)
            else torch.zeros(tuple(target), dtype=torch.bool)
        )
        ties |= ((probs - mask_threshold).abs() <= THRESHOLD_TIE).any(0)  # every candidate: its area sets its score
        for what, ours in _by_name(results).items():
            same_segments(ours[b]["segments_info"], expected[b]["segments_info"], f"instance {what}")
            _equal_outside(ours[b]["segmentation"], expected[b]["segmentation"], ties, f"instance {what}")
