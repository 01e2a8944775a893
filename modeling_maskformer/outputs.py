"""The models' outputs: transformers' MaskFormer output classes (same fields, same order, so `return_dict=False`
gives its tuple) with our fields at the end.

Shapes: B batch, Q queries, K classes (+1 "no object"), C channels, H×W the padded input size, L decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from transformers.models.maskformer import modeling_maskformer as transformers_maskformer


@dataclass
class MaskFormerModelOutput(transformers_maskformer.MaskFormerModelOutput):
    """Outputs of `MaskFormerModel`, as transformers' (the `*_hidden_states` with `output_hidden_states`;
    `attentions` never filled: `output_attentions=True` raises, docs/api.md).

    Shapes: `encoder_last_hidden_state` (B, C_5, H/32, W/32) res5; `pixel_decoder_last_hidden_state`
    (B, C_mask, H/4, W/4); `transformer_decoder_last_hidden_state` (B, Q, C); `encoder_hidden_states` res2..res5;
    `pixel_decoder_hidden_states` the FPN maps, coarse to fine; `transformer_decoder_hidden_states` L+1 × (B, Q, C),
    each layer's input then the final queries; `hidden_states` the three concatenated. Ours only:
    `transformer_decoder_intermediate_states`, L-1 × (B, Q, C), the normalised outputs for deep supervision
    (`return_intermediate=True`).
    """

    transformer_decoder_intermediate_states: tuple[Tensor, ...] | None = None


@dataclass
class MaskFormerForInstanceSegmentationOutput(transformers_maskformer.MaskFormerForInstanceSegmentationOutput):
    """Outputs of `MaskFormerForInstanceSegmentation`: transformers' fields (`loss` the sum of `loss_dict`;
    `class_queries_logits` (B, Q, K+1), the last class "no object"; `masks_queries_logits` (B, Q, H/4, W/4);
    `auxiliary_logits` per deep-supervision layer both logits by name; the hidden states as in
    `MaskFormerModelOutput`), then ours, which the tuple leaves out: `loss_dict`, the weighted loss terms (deep
    supervision's with a `_{layer}` suffix), and `pixel_mask` (B, H, W), the input's (1 real, 0 padding), echoed so
    post-processing can crop the padding."""

    loss_dict: dict[str, Tensor] | None = None
    pixel_mask: Tensor | None = None

    def to_transformers_tuple(self) -> tuple:
        """The tuple transformers' `return_dict=False` gives: the set fields in order, without ours."""
        return tuple(value for key, value in self.items() if key not in ("loss_dict", "pixel_mask"))


def check_output_attentions(output_attentions: bool | None, config) -> None:
    """`output_attentions=True` is refused, not ignored (see docs/api.md, drop-in)."""
    if output_attentions or (output_attentions is None and getattr(config, "output_attentions", False)):
        raise ValueError(
            "output_attentions=True is not supported: the attention runs fused (scaled_dot_product_attention) and "
            "returns no weights (transformers' default sdpa attention returns none either)"
        )
