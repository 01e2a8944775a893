"""The paper's per-pixel classification baseline (Sec. 4.1, Table 4): MaskFormer's backbone and pixel decoder (same
names under `model.`), then a 1x1 convolution per pixel, trained with cross-entropy. Semantic segmentation only.
Shapes: B batch, K classes, C_mask the per-pixel embedding channels, H×W the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..modeling_maskformer import MaskFormerPreTrainedModel, build_pixel_level_module, check_pixel_values


@dataclass
class PerPixelBaselineModelOutput(ModelOutput):
    """Per-pixel embeddings (B, C_mask, H/4, W/4), the backbone's res5 (B, C_5, H/32, W/32); with
    `output_hidden_states`, res2..res5 and the FPN maps from coarse to fine."""

    pixel_decoder_last_hidden_state: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[Tensor, ...] | None = None


@dataclass
class PerPixelSemanticSegmentationOutput(ModelOutput):
    """transformers' `SemanticSegmenterOutput` names: `loss` (per-pixel cross-entropy), `logits` (B, K, H/4, W/4);
    `pixel_mask` (B, H, W) echoed back so post-processing can crop the padding; then the base model's fields."""

    loss: Tensor | None = None
    loss_dict: dict[str, Tensor] | None = None
    logits: Tensor | None = None
    pixel_mask: Tensor | None = None
    pixel_decoder_last_hidden_state: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[Tensor, ...] | None = None


class PerPixelBaselinePreTrainedModel(MaskFormerPreTrainedModel):
    config_class = PerPixelBaselineConfig
    config: PerPixelBaselineConfig

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if getattr(module, "_per_pixel_classifier", False):
            # NOTE: He (MSRA) init with zero bias, as detectron2 initialises its per-pixel predictors (c2_msra_fill).
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)


class PerPixelBaselineModel(PerPixelBaselinePreTrainedModel):
    """Backbone and pixel decoder (MaskFormer's pixel-level module, paper Fig. 2): per-pixel embeddings."""

    def __init__(self, config: PerPixelBaselineConfig):
        super().__init__(config)
        self.backbone, self.pixel_decoder = build_pixel_level_module(config)
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PerPixelBaselineModelOutput:
        check_pixel_values(pixel_values, self.config.backbone_config)
        hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        attn_implementation = "eager" if self.config._attn_implementation == "eager" else "sdpa"
        features = self.backbone(pixel_values)  # res2..res5, each (B, C_i, H_i, W_i)
        mask_features, _, fpn_maps = self.pixel_decoder(features, attn_implementation)  # (B, C_mask, H/4, W/4)
        return PerPixelBaselineModelOutput(
            pixel_decoder_last_hidden_state=mask_features,
            encoder_last_hidden_state=features[-1],
            encoder_hidden_states=tuple(features) if hidden else None,
            pixel_decoder_hidden_states=tuple(fpn_maps) if hidden else None,
        )


class PerPixelBaselineForSemanticSegmentation(PerPixelBaselinePreTrainedModel):
    """`class_head`, a 1x1 convolution C_mask -> K on the per-pixel embeddings, trained by per-pixel cross-entropy.
    Labels: `labels` (B, H, W) with `config.ignore_index` for no target, or the image processor's `mask_labels`
    (N_i, H, W) and `class_labels` (N_i,) per image (a pixel outside every mask is ignored)."""

    def __init__(self, config: PerPixelBaselineConfig):
        super().__init__(config)
        self.model = PerPixelBaselineModel(config)
        self.class_head = nn.Conv2d(config.mask_feature_size, config.num_labels, kernel_size=1)
        self.class_head._per_pixel_classifier = True
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor,
        labels: Tensor | None = None,
        mask_labels: list[Tensor] | None = None,
        class_labels: list[Tensor] | None = None,
        pixel_mask: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PerPixelSemanticSegmentationOutput:
        if (mask_labels is None) != (class_labels is None):
            raise ValueError("pass both mask_labels and class_labels to compute the loss, or neither")
        if labels is not None and mask_labels is not None:
            raise ValueError("pass either labels (B, H, W) or mask_labels and class_labels, not both")
        outputs = self.model(pixel_values, pixel_mask=pixel_mask, output_hidden_states=output_hidden_states)
        logits = self.class_head(outputs.pixel_decoder_last_hidden_state)  # (B, K, H/4, W/4)
        loss = None
        if mask_labels is not None:
            labels = self.labels_from_masks(mask_labels, class_labels, tuple(pixel_values.shape[-2:]))
        if labels is not None:
            loss = self.loss(logits, labels.to(logits.device), tuple(pixel_values.shape[-2:]))
        return PerPixelSemanticSegmentationOutput(
            loss=loss,
            loss_dict=None if loss is None else {"loss_cross_entropy": loss},
            logits=logits,
            pixel_mask=pixel_mask,
            **outputs,  # the non-None fields of PerPixelBaselineModelOutput
        )

    def loss(self, logits: Tensor, labels: Tensor, input_size: tuple[int, int]) -> Tensor:
        """Cross-entropy of the logits (B, K, h, w) upsampled to the labels (B, H, W), ignored pixels left out."""
        if labels.ndim != 3 or labels.shape[0] != logits.shape[0] or tuple(labels.shape[-2:]) != input_size:
            raise ValueError(
                f"labels must be (B={logits.shape[0]}, H, W) at the input size {input_size}, got {tuple(labels.shape)}"
            )
        labels = labels.long()
        ignore = self.config.ignore_index
        bad = (labels != ignore) & ((labels < 0) | (labels >= self.config.num_labels))
        if bad.any():
            raise ValueError(
                f"labels hold {sorted(labels[bad].unique().tolist())[:10]}: class ids must be 0..{self.config.num_labels - 1} "
                f"or the ignore index {ignore}"
            )
        # NOTE: at the input size, as the paper's per-pixel baseline (detectron2's semantic heads) computes it.
        upsampled = F.interpolate(logits, size=input_size, mode="bilinear", align_corners=False)  # (B, K, H, W)
        if not (labels != ignore).any():  # F.cross_entropy would give NaN (0 / 0)
            return upsampled.sum() * 0.0
        return F.cross_entropy(upsampled, labels, ignore_index=ignore)

    def labels_from_masks(
        self, mask_labels: list[Tensor], class_labels: list[Tensor], size: tuple[int, int]
    ) -> Tensor:
        """(B, H, W) class map from each image's masks (N, H, W) and classes (N,); `ignore_index` outside every mask."""
        device = self.class_head.weight.device
        labels = torch.full((len(mask_labels), *size), self.config.ignore_index, dtype=torch.long, device=device)
        for b, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
            if masks.ndim != 3 or tuple(masks.shape[-2:]) != size or len(masks) != len(classes):
                raise ValueError(
                    f"mask_labels[{b}] must be (N, H, W) at the input size {size} with one class per mask, got "
                    f"{tuple(masks.shape)} and {len(classes)} classes"
                )
            if len(classes) == 0:
                continue
            masks, classes = masks.to(device) > 0.5, classes.to(device).long()
            if (masks.sum(0) > 1).any():
                raise ValueError(f"mask_labels[{b}]: masks overlap, so a pixel would have two classes")
            covered = masks.any(0)
            labels[b][covered] = classes[masks.float().argmax(0)][covered]
        return labels
