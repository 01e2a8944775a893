"""The model a training run starts from: a `--model_preset` (a row of `variants.VARIANTS`) or a base model, under
the `--head` chosen."""

from __future__ import annotations

import logging

from transformers.utils import logging as transformers_logging

from ..configuration import MaskFormerConfig
from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..errors import InvalidInputError
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..paper.per_pixel import PerPixelBaselineForSemanticSegmentation
from ..variants import TRAINING_PRESETS, variant_config

logger = logging.getLogger(__name__)

# `--head`: MaskFormer, or the paper's per-pixel classification baseline (Table 4) on the same backbone and decoder.
HEADS = {
    "mask_classification": MaskFormerForInstanceSegmentation,
    "per_pixel": PerPixelBaselineForSemanticSegmentation,
}


def preset_config(name: str, id2label: dict[int, str], **overrides) -> MaskFormerConfig:
    """The `--model_preset` `name` for these classes, with `overrides` (MaskFormerConfig fields)."""
    if name not in TRAINING_PRESETS:
        raise InvalidInputError(f"unknown --model_preset {name!r}; choose from {', '.join(TRAINING_PRESETS)}")
    return variant_config(name, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **overrides)


def build_model(args, id2label: dict[int, str]):
    """A preset (`args.model_preset`) with the head `args.head`, or the model at `args.model_name_or_path` with its
    class head re-initialised when the class count differs."""
    overrides = {"mask_loss_mode": args.mask_loss_mode} if args.mask_loss_mode else {}
    model_class = HEADS[args.head]
    if not args.model_name_or_path:
        config = preset_config(args.model_preset, id2label, **overrides)
        if model_class is PerPixelBaselineForSemanticSegmentation:
            config = PerPixelBaselineConfig.from_maskformer_config(config)
        return model_class(config)
    # NOTE: transformers' own load report would repeat the class-head warning as a table; silence it and report
    # the other unexpected or missing weights once, here.
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
            more = ", ..." if len(keys) > 8 else ""
            logger.warning(
                "%s: %d %s weight(s): %s%s", args.model_name_or_path, len(keys), what, ", ".join(keys[:8]), more
            )
    return model
