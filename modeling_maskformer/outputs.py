"""The models' outputs, field for field in transformers' MaskFormer order (so that `return_dict=False` gives
transformers' tuple), plus ours at the end.

Shapes: B batch, Q queries, K classes (+1 "no object"), C channels, H×W the padded input size, L decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from transformers.utils import ModelOutput


@dataclass
class MaskFormerModelOutput(ModelOutput):
    """Outputs of `MaskFormerModel`.

    Args:
        encoder_last_hidden_state: (B, C_5, H/32, W/32) the backbone's res5.
        pixel_decoder_last_hidden_state: (B, C_mask, H/4, W/4) per-pixel embeddings.
        transformer_decoder_last_hidden_state: (B, Q, C) final query embeddings (after the final LayerNorm).
        encoder_hidden_states: the backbone's feature maps res2..res5, when `output_hidden_states`.
        pixel_decoder_hidden_states: the FPN maps from coarse to fine, when `output_hidden_states`.
        transformer_decoder_hidden_states: L+1 tensors (B, Q, C), when `output_hidden_states`: each decoder
            layer's input (the first is the zero target) and the final queries (transformers' layout).
        hidden_states: the three above concatenated, when `output_hidden_states` (as transformers).
        attentions: never filled (`output_attentions=True` raises: see docs/api.md, drop-in).
        transformer_decoder_intermediate_states: L-1 tensors (B, Q, C), the normalised outputs of the first
            decoder layers (deep supervision), when asked for (`return_intermediate`); ours only.
    """

    encoder_last_hidden_state: Tensor | None = None
    pixel_decoder_last_hidden_state: Tensor | None = None
    transformer_decoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[Tensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[Tensor, ...] | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    transformer_decoder_intermediate_states: tuple[Tensor, ...] | None = None


@dataclass
class MaskFormerForInstanceSegmentationOutput(ModelOutput):
    """Outputs of `MaskFormerForInstanceSegmentation`.

    Args:
        loss: scalar total loss (weighted sum of `loss_dict`), when labels are given.
        class_queries_logits: (B, Q, K+1) class logits; the last class is "no object".
        masks_queries_logits: (B, Q, H/4, W/4) mask logits.
        auxiliary_logits: per deep-supervision layer, a dict with `class_queries_logits` (B, Q, K+1) and
            `masks_queries_logits` (B, Q, H/4, W/4).
        encoder_last_hidden_state ... attentions: as in `MaskFormerModelOutput`.
        loss_dict: the weighted loss parts: `loss_cross_entropy`, `loss_mask` (focal), `loss_dice`, and the
            same with a `_{layer}` suffix for each deep-supervision layer; ours only (not in the tuple).
        pixel_mask: (B, H, W) the input's pixel mask (1 real, 0 padding), echoed back so post-processing
            can crop the padding; None when the input had none; ours only (not in the tuple).
    """

    loss: Tensor | None = None
    class_queries_logits: Tensor | None = None
    masks_queries_logits: Tensor | None = None
    auxiliary_logits: list[dict[str, Tensor]] | None = None
    encoder_last_hidden_state: Tensor | None = None
    pixel_decoder_last_hidden_state: Tensor | None = None
    transformer_decoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[Tensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[Tensor, ...] | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
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
