"""The pixel decoder of MaskFormer (paper Sec. 3.3 and App. A.1): an FPN that turns the backbone's
feature pyramid into per-pixel embeddings at stride 4.

- `fpn`: the paper's BasePixelDecoder. 3x3 conv+GN+ReLU on res5, then coarse to fine: lateral 1x1
  conv+GN, nearest upsample and add, 3x3 conv+GN+ReLU; a final 3x3 conv gives the mask features.
- `fpn_transformer_encoder`: the "+6 Enc" variant, which runs a transformer encoder on res5 first and
  hands the encoded res5 to the transformer decoder as its memory.

Shapes: B batch, C channels, H×W the input size; res2..res5 are at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionImplementation, sequence_with_position, transformer_layers


class ConvNormAct(nn.Sequential):
    """Conv (no bias) + GroupNorm(32) [+ ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, activation: bool = True):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.GroupNorm(32, out_channels),
        ]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class FPNLayer(nn.Module):
    """One top-down step: lateral projection of the finer map, upsampled coarser map added, 3x3 refine."""

    def __init__(self, *, lateral_channels: int, feature_size: int):
        super().__init__()
        self.lateral = ConvNormAct(lateral_channels, feature_size, kernel_size=1, activation=False)
        self.output = ConvNormAct(feature_size, feature_size, kernel_size=3)

    def forward(self, coarse: Tensor, lateral: Tensor) -> Tensor:
        lateral = self.lateral(lateral)
        return self.output(lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="nearest"))


class Res5TransformerEncoder(nn.Module):
    """1x1 input projection of res5 + N transformer encoder layers (+ a final LayerNorm when pre-norm); `layer`:
    the keyword arguments of each `TransformerLayer` (num_heads, ffn_dim, dropout, ...)."""

    def __init__(self, *, in_channels: int, hidden_size: int, num_layers: int, **layer: Any):
        super().__init__()
        self.input_proj = nn.Conv2d(in_channels, hidden_size, kernel_size=1)
        self.layers = transformer_layers(num_layers, hidden_size=hidden_size, **layer)
        self.norm = nn.LayerNorm(hidden_size) if layer.get("pre_norm") else None

    def forward(self, res5: Tensor, attn_implementation: AttentionImplementation) -> Tensor:
        projected = self.input_proj(res5)
        hidden, position = sequence_with_position(projected)  # (B, HW, C) each
        for layer in self.layers:
            hidden = layer(hidden, position, attn_implementation=attn_implementation)
        if self.norm is not None:
            hidden = self.norm(hidden)
        return hidden.transpose(1, 2).reshape(projected.shape)  # (B, C, H, W)


class PixelDecoder(nn.Module):
    """FPN pixel decoder, optionally with a transformer encoder on res5 ("+6 Enc").

    Returns the per-pixel embeddings (B, C_mask, H/4, W/4), the memory for the transformer decoder
    (res5, or the encoded res5) and the FPN maps from coarse to fine.
    """

    def __init__(
        self,
        *,
        in_channels: list[int],
        feature_size: int = 256,
        mask_feature_size: int = 256,
        encoder: Res5TransformerEncoder | None = None,
    ):
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"the pixel decoder needs at least 2 feature maps, got channels {in_channels}")
        self.encoder = encoder
        stem_channels = in_channels[-1] if encoder is None else encoder.input_proj.out_channels
        self.stem = ConvNormAct(stem_channels, feature_size, kernel_size=3)
        self.layers = nn.ModuleList(
            FPNLayer(lateral_channels=channels, feature_size=feature_size) for channels in in_channels[-2::-1]
        )
        self.mask_features = nn.Conv2d(feature_size, mask_feature_size, kernel_size=3, padding=1)

    @property
    def memory_channels(self) -> int:
        return self.stem[0].in_channels

    def forward(
        self, features: list[Tensor], attn_implementation: AttentionImplementation = "sdpa"
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        memory = features[-1]
        if self.encoder is not None:
            memory = self.encoder(memory, attn_implementation)
        hidden = self.stem(memory)
        fpn_maps = []
        for layer, lateral in zip(self.layers, features[-2::-1]):
            hidden = layer(hidden, lateral)
            fpn_maps.append(hidden)
        return self.mask_features(hidden), memory, fpn_maps
