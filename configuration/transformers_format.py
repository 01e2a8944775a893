"""Our config <-> transformers' `MaskFormerConfig` (model_type "maskformer") in a transformers-native folder.

The architecture goes into transformers' fields (its `decoder_config` is a DETR config), so plain transformers builds
the same network; `transformers_refusals` lists what it cannot represent. Our other settings travel under
`STASH_KEY`, a key transformers keeps and ignores, and are restored when our classes read the folder; a field
transformers has is always read from there, so an edit made with transformers is honoured.
NOTE: `use_auxiliary_loss` is written False: True makes transformers' forward fail unless `output_hidden_states=True`.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

from transformers import DetrConfig
from transformers import MaskFormerConfig as TransformersMaskFormerConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from ..errors import InvalidInputError
from .backbones import with_all_stages

logger = logging.getLogger(__name__)

STASH_KEY = "maskformer_hf_training"
# Our fields transformers' config has at its top level, same names. Read from there, never from the stash.
TOP_FIELDS = ("fpn_feature_size", "mask_feature_size", "no_object_weight", "mask_weight", "dice_weight", "init_std")
TOP_FIELDS += ("init_xavier_std", "output_auxiliary_logits")
# Our field -> its name in transformers' `decoder_config` (a DETR config).
DECODER_FIELDS = {"num_queries": "num_queries", "hidden_size": "d_model", "decoder_layers": "decoder_layers"}
DECODER_FIELDS |= {"num_attention_heads": "decoder_attention_heads", "decoder_ffn_dim": "decoder_ffn_dim"}
DECODER_FIELDS |= {name: name for name in ("dropout", "attention_dropout", "activation_function")}
# Fixed by being representable at all (see `transformers_refusals`), so neither written nor stashed.
_FIXED = {"backbone_config": None, "pixel_decoder_type": "fpn", "pre_norm": False}
# Constructor arguments that only spell other fields transformers' way (not stored).
_ALIASES = ("decoder_config", "cross_entropy_weight")
# Ours at config.json's top level though transformers has no such field: it keeps and writes back them, so code
# written for transformers reads them as ours does (`getattr(model.config, "thing_ids", None)`).
TOP_LEVEL_EXTRAS = ("thing_ids", "validation_held_out")


def stashed_fields(config_class) -> tuple[str, ...]:
    """Our settings transformers has no field for (a new field is stashed without touching this module)."""
    arguments = [
        name
        for name, p in inspect.signature(config_class.__init__).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and name != "self"
    ]
    names = dict.fromkeys([*arguments, *config_class.loss_weight_fields.values()])
    skipped = {*TOP_FIELDS, *DECODER_FIELDS, *_FIXED, *_ALIASES, *TOP_LEVEL_EXTRAS}
    return tuple(n for n in names if n not in skipped)


def transformers_refusals(config) -> list[str]:
    """Why transformers' MaskFormer cannot represent `config` (empty: it can, exactly)."""
    backbone_type = config.backbone_config.model_type
    checks = [  # (refused, why)
        (
            config.model_type != "maskformer-hf",  # NOTE: a subclass's, e.g. the per-pixel baseline's
            f"model_type {config.model_type!r} (transformers' MaskFormer has mask classification heads only)",
        ),
        (
            config.pixel_decoder_type != "fpn",
            f"pixel_decoder_type={config.pixel_decoder_type!r} (transformers has only the FPN pixel decoder)",
        ),
        (config.pre_norm, "pre_norm=True (transformers' DETR decoder is post-norm only)"),
        (config.hidden_size % 2, f"hidden_size={config.hidden_size} (the sine position encoding needs an even size)"),
        (config.activation_function not in ("relu", "gelu"), f"activation_function={config.activation_function!r}"),
        (
            backbone_type not in MODEL_FOR_BACKBONE_MAPPING_NAMES,
            f"backbone model_type {backbone_type!r} (not a backbone transformers' AutoBackbone builds)",
        ),
    ]
    return [why for refused, why in checks if refused]


def decoder_settings(decoder_config) -> dict[str, Any]:
    """Our fields from a DETR decoder config (transformers' `MaskFormerConfig.decoder_config`), or its dict."""
    if isinstance(decoder_config, dict):
        decoder_config = DetrConfig.from_dict({k: v for k, v in decoder_config.items() if k != "model_type"})
    if getattr(decoder_config, "auxiliary_loss", False):
        logger.warning(
            "decoder_config.auxiliary_loss=True: transformers then applies the decoder's final LayerNorm inside "
            "the residual stream after every layer; this model follows the original (normalised predictions "
            "only), so the converted model's outputs differ from transformers' for this checkpoint."
        )
    activation_dropout = getattr(decoder_config, "activation_dropout", 0.0)
    if activation_dropout not in (0.0, decoder_config.dropout):
        logger.warning(
            "decoder_config.activation_dropout=%s is not used: this model drops inside the FFN with `dropout`=%s",
            activation_dropout,
            decoder_config.dropout,
        )
    return {ours: getattr(decoder_config, theirs) for ours, theirs in DECODER_FIELDS.items()}


def settings_from_transformers(tf_config, config_class) -> dict[str, Any]:
    """Constructor arguments of our config from a `transformers.MaskFormerConfig` (the stash restored)."""
    settings = {name: getattr(tf_config, name) for name in TOP_FIELDS}
    settings.update(decoder_settings(tf_config.decoder_config))
    settings.update(
        backbone_config=with_all_stages(tf_config.backbone_config),
        class_weight=tf_config.cross_entropy_weight,
        use_auxiliary_loss=tf_config.use_auxiliary_loss,
        id2label={int(k): v for k, v in tf_config.id2label.items()},
        use_pretrained_backbone=False,
    )
    settings["label2id"] = dict(tf_config.label2id or {v: k for k, v in settings["id2label"].items()})
    settings.update((name, getattr(tf_config, name, None)) for name in TOP_LEVEL_EXTRAS)
    stash = getattr(tf_config, STASH_KEY, None) or {}
    settings.update((name, value) for name, value in stash.items() if name in stashed_fields(config_class))
    # PretrainedConfig-level settings transformers keeps on its config.
    names = ("output_hidden_states", "output_attentions", "return_dict")
    return settings | {name: getattr(tf_config, name) for name in names if hasattr(tf_config, name)}


def decoder_dict(config) -> dict[str, Any]:
    """The DETR decoder config dict transformers' MaskFormer builds our decoder from."""
    settings = {theirs: getattr(config, ours) for ours, theirs in DECODER_FIELDS.items()}
    # activation_dropout: ours drops inside the FFN with `dropout`; auxiliary_loss=True would change the forward.
    return {
        **settings,
        "encoder_attention_heads": config.num_attention_heads,
        "activation_dropout": config.dropout,
        "auxiliary_loss": False,
    }


def config_to_transformers(config):
    """A `transformers.MaskFormerConfig` for our config; `InvalidInputError` naming what it cannot represent."""
    refusals = transformers_refusals(config)
    if refusals:
        raise InvalidInputError("transformers' MaskFormer cannot represent this model: " + "; ".join(refusals))
    return TransformersMaskFormerConfig(
        backbone_config=config.backbone_config.__class__.from_dict(config.backbone_config.to_dict()),
        decoder_config=decoder_dict(config),
        cross_entropy_weight=config.class_weight,
        use_auxiliary_loss=False,
        id2label=dict(config.id2label),
        output_hidden_states=config.output_hidden_states,
        return_dict=config.return_dict,
        **{name: getattr(config, name) for name in TOP_LEVEL_EXTRAS},
        **{name: getattr(config, name) for name in TOP_FIELDS},
        **{STASH_KEY: {name: getattr(config, name) for name in stashed_fields(type(config))}},
    )


def write_transformers_config(config, folder, architectures: list[str] | None = None) -> None:
    """Write `config` as a transformers MaskFormer config.json into `folder` (the stash included)."""
    saved = config_to_transformers(config).to_dict()
    if architectures is not None:
        saved["architectures"] = architectures
    # transformers turns "swin" into MaskFormer-Swin when it builds the model, whatever the file says; keeping
    # "swin" (as on the Hub) lets our classes build their SwinBackbone again.
    saved["backbone_config"] = config.backbone_config.to_dict()
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(saved, indent=2, sort_keys=True, default=str) + "\n")
