"""Backbone shapes by name and the stage names MaskFormer reads: the one place both are written (the named
MaskFormer variants built on them are in `modeling_maskformer.variants`)."""

from __future__ import annotations

from typing import Any

from transformers import CONFIG_MAPPING, PretrainedConfig

# The four backbone outputs res2..res5 (strides 4, 8, 16, 32), as transformers' backbones name them.
STAGES = ["stage1", "stage2", "stage3", "stage4"]
# Stochastic depth of the paper's Swin backbones (the authors' configs: DROP_PATH_RATE 0.3).
SWIN_DROP_PATH_RATE = 0.3


def _swin(embed_dim: int, depth3: int, heads: int, window: int) -> dict[str, Any]:
    """Swin (Liu et al. 2021, Table 1): stages 2-2-x-2, heads doubling per stage."""
    return {
        "model_type": "maskformer-swin",
        "embed_dim": embed_dim,
        "depths": [2, 2, depth3, 2],
        "num_heads": [heads, 2 * heads, 4 * heads, 8 * heads],
        "window_size": window,
    }


def _resnet(depths: list[int], **shape: Any) -> dict[str, Any]:
    """ResNet (He et al. 2016): bottleneck blocks, widths 256..2048 unless `shape` says otherwise."""
    widths = {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "layer_type": "bottleneck"}
    return {"model_type": "resnet", **widths, "depths": depths, **shape}


# name -> the backbone config's `model_type` and the fields that set its shape.
BACKBONE_SHAPES: dict[str, dict[str, Any]] = {
    "swin-tiny": _swin(96, 6, 3, 7),
    "swin-small": _swin(96, 18, 3, 7),
    "swin-base": _swin(128, 18, 4, 12),
    "swin-large": _swin(192, 18, 6, 12),
    "resnet50": _resnet([3, 4, 6, 3]),
    "resnet101": _resnet([3, 4, 23, 3]),
    # Small from-scratch backbones: the CPU demo's, and the benchmark's "tiny" Swin-T and R50 (a few channels wide).
    "resnet-demo": _resnet([1, 1, 2, 1], embedding_size=32, hidden_sizes=[32, 64, 128, 256], layer_type="basic"),
    "swin-tiny-mini": {**_swin(16, 1, 1, 4), "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
    "resnet50-mini": _resnet([1, 1, 1, 1], embedding_size=8, hidden_sizes=[8, 16, 32, 64]),
}


def build_backbone_config(name: str, **overrides: Any) -> PretrainedConfig:
    """The transformers config of the backbone `name` (a key of `BACKBONE_SHAPES`), the four stages as outputs."""
    if name not in BACKBONE_SHAPES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONE_SHAPES)}")
    shape = dict(BACKBONE_SHAPES[name])
    return CONFIG_MAPPING[shape.pop("model_type")](**shape, out_features=list(STAGES), **overrides)


def with_all_stages(config: PretrainedConfig) -> PretrainedConfig:
    """A "swin" config with the four stages as outputs.

    NOTE: as transformers' MaskFormer, which builds a "swin" backbone with its four stages whatever `out_features`
    says (a SwinConfig() has only the last stage: one map, no FPN)."""
    if config.model_type != "swin" or list(getattr(config, "out_features", None) or []) == STAGES:
        return config
    return config.__class__.from_dict({**config.to_dict(), "out_features": list(STAGES), "out_indices": None})
