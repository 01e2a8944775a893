"""Loss terms are declared once: `MaskFormerConfig.loss_weight_fields` (term -> weight field) and
`MaskFormerLoss.terms` (term -> function). The model, the matcher and the conversion stash follow them."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from modeling_maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation
from modeling_maskformer.interop.transformers_weights import (
    STASH_KEY,
    config_from_transformers,
    config_to_transformers,
)
from modeling_maskformer.loss import MaskFormerLoss
from modeling_maskformer.matcher import HungarianMatcher

from builders import random_targets, tiny_config, tiny_model

B, H, W = 2, 64, 96


def test_the_weight_fields_give_the_loss_and_matching_weights(tmp_path):
    config = tiny_config(class_weight=2.0, mask_weight=5.0, dice_weight=0.5)
    expected = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 0.5}
    assert config.loss_weights == expected
    model = MaskFormerForInstanceSegmentation(config)
    assert model.criterion.weight_dict == expected
    assert model.criterion.matcher.cost_weights == expected
    # Derived, not stored: config.json keeps its fields, so older folders load as before.
    assert "loss_weights" not in config.to_dict()
    config.save_pretrained(tmp_path)
    assert MaskFormerConfig.from_pretrained(tmp_path).loss_weights == expected


def test_loss_parts_are_the_weighted_terms():
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(B, 10, 4), torch.randn(B, 10, H // 4, W // 4)
    aux = [(torch.randn(B, 10, 4), torch.randn(B, 10, H // 4, W // 4))]
    mask_labels, class_labels = random_targets(B, H, W)
    parts = {}
    for weights in ((1.0, 1.0, 1.0), (3.0, 0.5, 0.0)):
        weight_dict = dict(zip(("loss_cross_entropy", "loss_mask", "loss_dice"), weights))
        loss = MaskFormerLoss(num_labels=3, matcher=HungarianMatcher(), weight_dict=weight_dict)
        total, parts[weights] = loss(class_logits, mask_logits, class_labels, mask_labels, aux)
        torch.testing.assert_close(total, sum(parts[weights].values()))
    for name, weight in (("loss_cross_entropy", 3.0), ("loss_mask", 0.5), ("loss_dice", 0.0)):
        for part in (name, f"{name}_0"):
            torch.testing.assert_close(parts[3.0, 0.5, 0.0][part], weight * parts[1.0, 1.0, 1.0][part])
    assert parts[1.0, 1.0, 1.0]["loss_dice"] > 0


def test_unknown_loss_terms_are_refused():
    with pytest.raises(ValueError, match=r"unknown loss terms \['loss_focal_typo'\]"):
        MaskFormerLoss(num_labels=3, matcher=HungarianMatcher(), weight_dict={"loss_focal_typo": 1.0})


def test_the_matcher_takes_the_loss_weights():
    # Loss terms without a pairwise cost take no part in matching; all-zero costs cannot match.
    matcher = HungarianMatcher(cost_weights={"loss_cross_entropy": 1.0, "loss_dice": 2.0, "loss_other": 5.0})
    assert matcher.cost_weights == {"loss_cross_entropy": 1.0, "loss_dice": 2.0}
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(4, 4), torch.randn(4, 8, 8)
    classes, masks = torch.tensor([0, 2]), (torch.rand(2, 8, 8) > 0.5).float()
    costs = matcher.pairwise_costs(class_logits, mask_logits, classes, masks)
    expected = costs["loss_cross_entropy"] + 2.0 * costs["loss_dice"]
    torch.testing.assert_close(matcher.cost_matrix(class_logits, mask_logits, classes, masks), expected)
    with pytest.raises(ValueError, match="no cost weight > 0"):
        HungarianMatcher(cost_weights={"loss_cross_entropy": 0.0, "loss_mask": 0.0, "loss_dice": 0.0})


@pytest.fixture
def bce_term(monkeypatch):
    """A new term, `loss_bce` (sigmoid BCE of the matched masks) weighted by a new field `bce_weight`, added
    the way the codebase asks: a function in the loss module's `terms`, and a config field listed in
    `loss_weight_fields`. Nothing else is touched."""

    def bce(loss, matched):
        per_mask = F.binary_cross_entropy_with_logits(matched.mask_logits, matched.mask_targets, reduction="none")
        return per_mask.mean(1).sum() / matched.num_masks

    monkeypatch.setitem(MaskFormerLoss.terms, "loss_bce", bce)
    monkeypatch.setitem(MaskFormerConfig.loss_weight_fields, "loss_bce", "bce_weight")
    # The new `__init__` argument (with its default), as an edit of configuration_maskformer.py would add it.
    original_init = MaskFormerConfig.__init__

    def init(self, *args, bce_weight: float = 0.0, **kwargs):
        self.bce_weight = bce_weight
        original_init(self, *args, **kwargs)

    signature = inspect.signature(original_init)
    *fields, var_kwargs = signature.parameters.values()
    new_field = inspect.Parameter("bce_weight", inspect.Parameter.KEYWORD_ONLY, default=0.0, annotation=float)
    init.__signature__ = signature.replace(parameters=[*fields, new_field, var_kwargs])
    monkeypatch.setattr(MaskFormerConfig, "__init__", init)


def matched_bce(model, outputs, mask_labels, class_labels) -> torch.Tensor:
    """The BCE of the final output's matched masks at the input size, computed here from the matcher's pairs."""
    indices = model.criterion.matcher(
        outputs.class_queries_logits, outputs.masks_queries_logits, class_labels, mask_labels
    )
    total, num_masks = 0.0, sum(len(labels) for labels in class_labels)
    for b, (pred_idx, tgt_idx) in enumerate(indices):
        for q, t in zip(pred_idx.tolist(), tgt_idx.tolist()):
            logits = F.interpolate(outputs.masks_queries_logits[b, q][None, None], size=(H, W), mode="bilinear")[0, 0]
            total = total + F.binary_cross_entropy_with_logits(logits, mask_labels[b][t])
    return total / num_masks


def test_a_new_loss_term_touches_only_the_loss_and_the_config(request, tmp_path):
    torch.manual_seed(0)
    pixel_values = torch.randn(B, 3, H, W)
    mask_labels, class_labels = random_targets(B, H, W)
    settings = dict(dropout=0.0, attention_dropout=0.0, mask_loss_mode="dense")
    with torch.no_grad():
        reference = tiny_model(**settings)(pixel_values, mask_labels=mask_labels, class_labels=class_labels)

    request.getfixturevalue("bce_term")
    model = tiny_model(bce_weight=2.0, **settings)
    assert model.criterion.weight_dict["loss_bce"] == 2.0
    outputs = model(pixel_values, mask_labels=mask_labels, class_labels=class_labels)
    assert set(outputs.loss_dict) == set(reference.loss_dict) | {"loss_bce", "loss_bce_0"}
    for name, value in reference.loss_dict.items():  # matching and the other terms are unchanged
        torch.testing.assert_close(outputs.loss_dict[name], value, rtol=0, atol=0)
    with torch.no_grad():
        expected = 2.0 * matched_bce(model, outputs, mask_labels, class_labels)
    torch.testing.assert_close(outputs.loss_dict["loss_bce"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs.loss, sum(outputs.loss_dict.values()))
    outputs.loss.backward()

    # The field is validated, saved and loaded like the others ...
    with pytest.raises(ValueError, match="bce_weight"):
        tiny_config(bce_weight=-1.0)
    model.config.save_pretrained(tmp_path)
    assert MaskFormerConfig.from_pretrained(tmp_path).loss_weights["loss_bce"] == 2.0
    # ... and survives a round trip through transformers' config (stashed: transformers has no such term).
    tf_config = config_to_transformers(model.config)
    assert getattr(tf_config, STASH_KEY)["bce_weight"] == 2.0
    assert config_from_transformers(tf_config).bce_weight == 2.0
