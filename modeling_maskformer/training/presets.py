"""Model architectures by name (`--model_preset`), and the model and processor a training run starts from."""

from __future__ import annotations

import logging

from transformers.utils import logging as transformers_logging

from ..configuration import MaskFormerConfig
from ..configuration.backbones import STAGES  # noqa: F401 (re-exported: modeling_maskformer.training.STAGES)
from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..errors import InvalidInputError
from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..paper.per_pixel import PerPixelBaselineForSemanticSegmentation
from ..variants import TRAINING_PRESETS, variant_config

logger = logging.getLogger(__name__)

# `--head`: the model class on top of a preset's backbone and pixel decoder (MaskFormer, or the paper's per-pixel
# classification baseline, Table 4).
HEADS = {
    "mask_classification": MaskFormerForInstanceSegmentation,
    "per_pixel": PerPixelBaselineForSemanticSegmentation,
}


def preset_config(name: str, id2label: dict[int, str], **overrides) -> MaskFormerConfig:
    """The `--model_preset` architecture `name` (`variants.TRAINING_PRESETS`) for these classes, with `overrides`
    (MaskFormerConfig fields): `demo` is a small from-scratch model for CPU; the others are the paper's, with
    ImageNet backbones from the Hub."""
    if name not in TRAINING_PRESETS:
        raise InvalidInputError(f"unknown --model_preset {name!r}; choose from {', '.join(TRAINING_PRESETS)}")
    return variant_config(name, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **overrides)


def build_model(
    args, id2label: dict[int, str]
) -> MaskFormerForInstanceSegmentation | PerPixelBaselineForSemanticSegmentation:
    """A preset architecture (`args.model_preset`) with the head `args.head`, or the model at
    `args.model_name_or_path` with its class head re-initialised when the class count differs (which the model's
    `from_pretrained` warns about)."""
    overrides = {"mask_loss_mode": args.mask_loss_mode} if args.mask_loss_mode else {}
    head = getattr(args, "head", "mask_classification")
    if head not in HEADS:
        raise InvalidInputError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
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
        config = preset_config(args.model_preset, id2label, **overrides)
        if model_class is PerPixelBaselineForSemanticSegmentation:
            config = PerPixelBaselineConfig.from_maskformer_config(config)
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
