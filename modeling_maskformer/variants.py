"""Named MaskFormer variants, declared once (as segment-anything's `build_sam.py`): the training presets, the authors'
released checkpoints and the benchmark's models (docs/variants.md). Backbone shapes are in `configuration.backbones`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .configuration.backbones import SWIN_DROP_PATH_RATE, build_backbone_config
from .configuration.configuration_maskformer import MaskFormerConfig
from .errors import InvalidInputError
from .modeling_maskformer import MaskFormerForInstanceSegmentation


@dataclass(frozen=True)
class Variant:
    """A MaskFormer by name: its backbone (a key of `BACKBONE_SHAPES`), the Hub id of the backbone's ImageNet
    weights (None: random), the config fields that differ from the paper's defaults and, for a released
    checkpoint, its class count and test-time processor settings."""

    backbone: str
    imagenet_weights: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    num_labels: int | None = None
    processor: Mapping[str, Any] | None = None
    backbone_settings: Mapping[str, Any] = field(default_factory=dict)  # fields of the backbone config

    def config(self, **overrides: Any) -> MaskFormerConfig:
        """The config; `overrides` are MaskFormerConfig fields (`id2label`, `num_labels`, `mask_loss_mode`, ...)."""
        fields = {"backbone_config": build_backbone_config(self.backbone, **self.backbone_settings)}
        if self.imagenet_weights is not None:
            fields.update(backbone=self.imagenet_weights, use_pretrained_backbone=True, use_timm_backbone=False)
        if self.num_labels is not None:
            fields["num_labels"] = self.num_labels
        return MaskFormerConfig(**{**fields, **self.settings, **overrides})


def _paper(backbone: str, **fields: Any) -> Variant:
    """A variant on one of the paper's backbones; a Swin trains with the paper's stochastic depth."""
    drop_path = {"drop_path_rate": SWIN_DROP_PATH_RATE} if backbone.startswith("swin") else {}
    return Variant(backbone, backbone_settings=drop_path, **fields)


# NOTE: dropout 0 — on short from-scratch runs decoder dropout 0.1 made eval-mode predictions collapse to
# "no object" (REFERENCE.md, observed here); the paper's 0.1 stays the default elsewhere.
_DEMO = {"num_queries": 20, "hidden_size": 128, "num_attention_heads": 4, "decoder_layers": 3, "decoder_ffn_dim": 512}
_DEMO.update(fpn_feature_size=64, mask_feature_size=64, dropout=0.0, attention_dropout=0.0)
# The ImageNet checkpoints of the paper's backbones on the Hub (Swin-B/L: ImageNet-22k at 384 px, as the paper's).
_IMAGENET = {
    "resnet50": "microsoft/resnet-50",
    "resnet101": "microsoft/resnet-101",
    "swin-tiny": "microsoft/swin-tiny-patch4-window7-224",
    "swin-small": "microsoft/swin-small-patch4-window7-224",
    "swin-base": "microsoft/swin-base-patch4-window12-384-in22k",
    "swin-large": "microsoft/swin-large-patch4-window12-384-in22k",
}
# Test-time processor settings of the authors' configs (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST).
_ADE = {"size": {"shortest_edge": 512, "longest_edge": 2048}, "do_reduce_labels": True, "ignore_index": 255}
_ADE_640 = {**_ADE, "size": {"shortest_edge": 640, "longest_edge": 2560}}
_COCO = {"size": {"shortest_edge": 800, "longest_edge": 1333}, "ignore_index": 255}
_CITYSCAPES = {"size": {"shortest_edge": 1024, "longest_edge": 2048}, "ignore_index": 255}
_COCO_STUFF = {"size": {"shortest_edge": 640, "longest_edge": 2560}, "ignore_index": 255}
_ADE_FULL = {"size": {"shortest_edge": 512, "longest_edge": 2048}, "ignore_index": 65535}
_VISTAS = {"size": {"shortest_edge": 2048, "longest_edge": 2048}, "ignore_index": 65}
_SWIN_ADE = {"swin-tiny": _ADE, "swin-small": _ADE, "swin-base": _ADE_640, "swin-large": _ADE_640}
_BENCHMARK_TINY = {"hidden_size": 32, "fpn_feature_size": 32, "mask_feature_size": 32, "decoder_layers": 2}
_BENCHMARK_TINY.update(decoder_ffn_dim=64, num_labels=150)

VARIANTS: dict[str, Variant] = {
    # Training presets (`--model_preset`): the CPU demo from scratch, the paper's backbones from ImageNet.
    "demo": Variant("resnet-demo", settings=_DEMO),
    **{name: _paper(name, imagenet_weights=weights) for name, weights in _IMAGENET.items()},
    # The authors' released checkpoints (facebookresearch/MaskFormer MODEL_ZOO.md).
    **{f"{swin}-ade": _paper(swin, num_labels=150, processor=ade) for swin, ade in _SWIN_ADE.items()},
    **{f"{swin}-coco": _paper(swin, num_labels=133, processor=_COCO) for swin in _SWIN_ADE},
    **{f"resnet{d}-ade": _paper(f"resnet{d}", num_labels=150, processor=_ADE) for d in (50, 101)},
    **{
        f"resnet{d}-6enc-coco": _paper(
            f"resnet{d}", settings={"pixel_decoder_type": "fpn_transformer_encoder"}, num_labels=133, processor=_COCO
        )
        for d in (50, 101)
    },
    **{f"resnet{d}-coco-stuff": _paper(f"resnet{d}", num_labels=171, processor=_COCO_STUFF) for d in (50, 101)},
    **{f"resnet{d}-ade20k-full": _paper(f"resnet{d}", num_labels=847, processor=_ADE_FULL) for d in (50, 101)},
    "resnet101-cityscapes": _paper("resnet101", num_labels=19, processor=_CITYSCAPES),
    "resnet50-vistas": _paper("resnet50", num_labels=65, processor=_VISTAS),
    # The benchmark's random models at the ADE20K shapes, and a few channels wide (the test suite's).
    "benchmark-swin-t": Variant("swin-tiny", num_labels=150),
    "benchmark-r50": Variant("resnet50", num_labels=150),
    "benchmark-swin-t-tiny": Variant("swin-tiny-mini", settings=_BENCHMARK_TINY),
    "benchmark-r50-tiny": Variant("resnet50-mini", settings=_BENCHMARK_TINY),
}
TRAINING_PRESETS = ("demo", *_IMAGENET)
AUTHORS_CHECKPOINTS = tuple(name for name, variant in VARIANTS.items() if variant.processor is not None)


def variant_config(name: str, **overrides: Any) -> MaskFormerConfig:
    """The config of the variant `name`, with `overrides` (MaskFormerConfig fields)."""
    if name not in VARIANTS:
        raise InvalidInputError(f"unknown model variant {name!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name].config(**overrides)


def variant_model(name: str, **overrides: Any) -> MaskFormerForInstanceSegmentation:
    """A model of the variant `name` (random weights, the backbone's ImageNet weights when it has them)."""
    return MaskFormerForInstanceSegmentation(variant_config(name, **overrides))
