"""Model architectures by name (`--model_preset`), and the model and processor a training run starts from."""

from __future__ import annotations

import logging

from transformers import MaskFormerSwinConfig, ResNetConfig
from transformers.utils import logging as transformers_logging

from ..configuration import MaskFormerConfig
from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..paper.per_pixel import PerPixelBaselineForSemanticSegmentation

logger = logging.getLogger(__name__)

STAGES = ["stage1", "stage2", "stage3", "stage4"]

# `--head`: the model class on top of a preset's backbone and pixel decoder (MaskFormer, or the paper's per-pixel
# classification baseline, Table 4).
HEADS = {
    "mask_classification": MaskFormerForInstanceSegmentation,
    "per_pixel": PerPixelBaselineForSemanticSegmentation,
}


def preset_config(name: str, id2label: dict[int, str]) -> MaskFormerConfig:
    """Architectures by name. `demo` is a small from-scratch model for CPU; the others are the paper's,
    with ImageNet backbones from the Hub."""
    labels = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if name == "demo":
        # NOTE: dropout 0 — on short from-scratch runs decoder dropout 0.1 made eval-mode predictions
        # collapse to "no object" (REFERENCE.md, observed here); the paper's 0.1 stays the default elsewhere.
        backbone = ResNetConfig(
            embedding_size=32,
            hidden_sizes=[32, 64, 128, 256],
            depths=[1, 1, 2, 1],
            layer_type="basic",
            out_features=STAGES,
        )
        return MaskFormerConfig(
            backbone_config=backbone,
            num_queries=20,
            hidden_size=128,
            num_attention_heads=4,
            decoder_layers=3,
            decoder_ffn_dim=512,
            fpn_feature_size=64,
            mask_feature_size=64,
            dropout=0.0,
            attention_dropout=0.0,
            **labels,
        )
    if name in ("resnet50", "resnet101"):
        depths = [3, 4, 6, 3] if name == "resnet50" else [3, 4, 23, 3]
        backbone = ResNetConfig(depths=depths, layer_type="bottleneck", out_features=STAGES)
        return MaskFormerConfig(
            backbone_config=backbone,
            backbone=f"microsoft/{name.replace('resnet', 'resnet-')}",
            use_pretrained_backbone=True,
            use_timm_backbone=False,
            **labels,
        )
    swin = {
        "swin-tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, "microsoft/swin-tiny-patch4-window7-224"),
        "swin-small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, "microsoft/swin-small-patch4-window7-224"),
        "swin-base": (
            128,
            [2, 2, 18, 2],
            [4, 8, 16, 32],
            12,
            "microsoft/swin-base-patch4-window12-384-in22k",
        ),
    }
    if name in swin:
        embed, depths, heads, window, checkpoint = swin[name]
        backbone = MaskFormerSwinConfig(
            embed_dim=embed,
            depths=depths,
            num_heads=heads,
            window_size=window,
            drop_path_rate=0.3,
            out_features=STAGES,
        )
        return MaskFormerConfig(
            backbone_config=backbone,
            backbone=checkpoint,
            use_pretrained_backbone=True,
            use_timm_backbone=False,
            **labels,
        )
    raise ValueError(f"unknown --model_preset {name!r}; choose from demo, resnet50, resnet101, {', '.join(swin)}")


def build_model(
    args, id2label: dict[int, str]
) -> MaskFormerForInstanceSegmentation | PerPixelBaselineForSemanticSegmentation:
    """A preset architecture (`args.model_preset`) with the head `args.head`, or the model at
    `args.model_name_or_path` with its class head re-initialised when the class count differs (which the model's
    `from_pretrained` warns about)."""
    overrides = {"mask_loss_mode": args.mask_loss_mode} if args.mask_loss_mode else {}
    head = getattr(args, "head", "mask_classification")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    model_class = HEADS[head]
    if args.model_name_or_path:
        # NOTE: transformers' own load report would repeat the class-head warning as a table; silence it and
        # report the other unexpected or missing weights once, here.
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            model, info = model_class.from_pretrained(
                args.model_name_or_path,
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                output_loading_info=True,
                **overrides,
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
        mismatched = [key[0] if isinstance(key, tuple) else key for key in info.get("mismatched_keys", [])]
        problems = {
            "missing": sorted(info.get("missing_keys", [])),
            "unexpected": sorted(info.get("unexpected_keys", [])),
            "re-initialised (shape)": sorted(k for k in mismatched if not k.startswith("class_head.")),
        }
        for what, keys in problems.items():
            if keys:
                logger.warning(
                    "%s: %d %s weight(s): %s%s",
                    args.model_name_or_path,
                    len(keys),
                    what,
                    ", ".join(keys[:8]),
                    ", ..." if len(keys) > 8 else "",
                )
    else:
        config = preset_config(args.model_preset, id2label)
        for key, value in overrides.items():
            setattr(config, key, value)
        if model_class is PerPixelBaselineForSemanticSegmentation:
            config = PerPixelBaselineConfig.from_maskformer_config(config)
        config.validate()
        model = model_class(config)
    return model


def backbone_is_pretrained(args, config) -> bool:
    """Whether the run's backbone starts from trained weights (the recipe depends on it): a base model's
    (`--model_name_or_path`) always has; a preset's when it loads ImageNet weights (`use_pretrained_backbone`)."""
    return bool(args.model_name_or_path) or bool(config.use_pretrained_backbone)


def base_processor(model_name_or_path: str | None) -> MaskFormerImageProcessor | None:
    """The image processor saved with the base model (its input size is the size the model was trained at),
    or None when there is no base model or it has no `preprocessor_config.json`."""
    if not model_name_or_path:
        return None
    try:
        return MaskFormerImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        return None


def processor_short_side(processor: MaskFormerImageProcessor | None) -> int | None:
    """The processor's resize target (shortest edge, or the smaller of a fixed height and width)."""
    size = getattr(processor, "size", None) or {}
    if "shortest_edge" in size:
        return int(size["shortest_edge"])
    if "height" in size and "width" in size:
        return int(min(size["height"], size["width"]))
    return None
