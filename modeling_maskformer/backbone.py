"""The backbone: any `transformers.AutoBackbone` (Swin, MaskFormer-Swin, ResNet, ConvNeXt, DINOv2, timm),
returning the feature pyramid res2..res5 (strides 4, 8, 16, 32) as a list of (B, C_i, H_i, W_i) maps.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn
from transformers import AutoBackbone, AutoConfig, MaskFormerSwinBackbone, PretrainedConfig, SwinBackbone
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING

from .errors import MissingInputError

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """Wraps an `AutoBackbone` and exposes its feature maps and their channels."""

    def __init__(self, body: nn.Module):
        super().__init__()
        # NOTE: transformers' (MaskFormer-)Swin backbones build the classifier's final LayerNorm but normalise
        # each stage's output with `hidden_states_norms`: the LayerNorm would get no gradient (wasted memory, an
        # error under DDP without find_unused_parameters), so it is not built. transformers' MaskFormer keeps it;
        # interop/transformers_weights.py skips and refills it.
        if isinstance(body, SwinBackbone | MaskFormerSwinBackbone):
            inner = body.swin if isinstance(body, SwinBackbone) else body.model
            inner.layernorm = nn.Identity()
        self.body = body
        self.channels: list[int] = list(body.channels)

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        return list(self.body(pixel_values).feature_maps)


def build_backbone(
    backbone_config: PretrainedConfig, *, pretrained_source: str | None = None, use_pretrained: bool = False
) -> Backbone:
    """The backbone of `backbone_config`; with `use_pretrained`, the weights of `pretrained_source` (a timm model
    name, or a Hub id / local folder of a transformers backbone).

    NOTE: transformers 5.x accepts `use_pretrained_backbone` and silently builds random weights; here failing to
    load them (no network, unknown name) is an error."""
    if not use_pretrained:
        return Backbone(AutoBackbone.from_config(backbone_config))
    source = pretrained_source or getattr(backbone_config, "backbone", None)  # not None: MaskFormerConfig checks
    try:
        if backbone_config.model_type == "timm_backbone":
            from transformers import TimmBackbone  # needs timm, an optional dependency

            config = backbone_config.__class__.from_dict({**backbone_config.to_dict(), "backbone": source})
            body = TimmBackbone._from_config(config, pretrained=True)
        else:
            # NOTE: AutoBackbone.from_pretrained (transformers 5.23) asks the Hub whether the name exists
            # before anything else, so it rejects local folders; resolve the backbone class ourselves.
            source_config = AutoConfig.from_pretrained(source)
            body = MODEL_FOR_BACKBONE_MAPPING[type(source_config)].from_pretrained(
                source, out_features=getattr(backbone_config, "out_features", None)
            )
    except Exception as error:  # network errors, missing files and unknown names surface in many types
        raise MissingInputError(
            f"use_pretrained_backbone=True: could not load pretrained backbone weights from {source!r} "
            f"({type(error).__name__}: {error}). Check the name and the network (the Hugging Face Hub / timm "
            "weights must be reachable, or pass a local folder), or set use_pretrained_backbone=False to start "
            "from random weights."
        ) from error
    logger.info("Loaded pretrained backbone weights from %s", source)
    return Backbone(body)
