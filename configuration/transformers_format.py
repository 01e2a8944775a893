"""Our config <-> transformers' `MaskFormerConfig` (model_type "maskformer"): what a transformers-native folder's
config.json holds, and how our settings travel in it.

- The architecture goes into transformers' own fields (its `decoder_config` is a DETR config), so plain
  transformers builds the same network. What transformers cannot represent (the "+6 Enc" pixel decoder,
  pre-norm layers, a backbone its `AutoBackbone` cannot build) is listed by `transformers_refusals`.
- Every other setting of ours (training-only: deep supervision, the class weight in the matcher, point-sampled
  mask loss, focal alpha/gamma, ...) is stored under `STASH_KEY`, a key transformers keeps on load and save and
  otherwise ignores (checked: `transformers.MaskFormerConfig(maskformer_hf_training={...})` warns nothing), and
  restored when our classes read the folder. A field transformers has is always read from transformers' field,
  so an edit made with transformers is honoured.
- `use_auxiliary_loss` is written False for transformers: True makes transformers' forward fail unless
  `output_hidden_states=True` (5.23/5.24); ours is kept in the stash.
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
# Our field -> (where in transformers' config, its name). Read from there, never from the stash.
TRANSFORMERS_FIELDS: dict[str, tuple[str, str]] = {
    "fpn_feature_size": ("top", "fpn_feature_size"),
    "mask_feature_size": ("top", "mask_feature_size"),
    "no_object_weight": ("top", "no_object_weight"),
    "mask_weight": ("top", "mask_weight"),
    "dice_weight": ("top", "dice_weight"),
    "init_std": ("top", "init_std"),
    "init_xavier_std": ("top", "init_xavier_std"),
    "output_auxiliary_logits": ("top", "output_auxiliary_logits"),
    "num_queries": ("decoder", "num_queries"),
    "hidden_size": ("decoder", "d_model"),
    "decoder_layers": ("decoder", "decoder_layers"),
    "num_attention_heads": ("decoder", "decoder_attention_heads"),
    "decoder_ffn_dim": ("decoder", "decoder_ffn_dim"),
    "dropout": ("decoder", "dropout"),
    "attention_dropout": ("decoder", "attention_dropout"),
    "activation_function": ("decoder", "activation_function"),
}
# Fixed by being representable at all (see `transformers_refusals`), so neither written nor stashed.
_FIXED = {"backbone_config": None, "pixel_decoder_type": "fpn", "pre_norm": False}
# Constructor arguments that only spell other fields transformers' way (not stored).
_ALIASES = ("decoder_config", "cross_entropy_weight")
# Our fields that config.json holds at the top level though transformers' MaskFormer has no such field: it keeps
# them as attributes (`transformers.AutoConfig.from_pretrained(folder).thing_ids`) and writes them back, so
# code written for transformers' models reads them as ours does (`getattr(model.config, "thing_ids", None)`).
TOP_LEVEL_EXTRAS = ("thing_ids", "validation_held_out")


def stashed_fields(config_class) -> tuple[str, ...]:
    """Our settings transformers has no field for: every constructor argument and loss weight not in
    `TRANSFORMERS_FIELDS` (so a new field is stashed without touching this module)."""
    arguments = [
        name
        for name, p in inspect.signature(config_class.__init__).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and name != "self"
    ]
    names = dict.fromkeys([*arguments, *config_class.loss_weight_fields.values()])
    skipped = {*TRANSFORMERS_FIELDS, *_FIXED, *_ALIASES, *TOP_LEVEL_EXTRAS}
    return tuple(n for n in names if n not in skipped)


def transformers_refusals(config) -> list[str]:
    """Why transformers' MaskFormer cannot represent `config` (empty: it can, exactly)."""
    refusals = []
    if config.model_type != "maskformer-hf":  # NOTE: a subclass's, e.g. the per-pixel baseline's
        refusals.append(
            f"model_type {config.model_type!r} (transformers' MaskFormer has mask classification heads only)"
        )
    if config.pixel_decoder_type != "fpn":
        refusals.append(
            f"pixel_decoder_type={config.pixel_decoder_type!r} (transformers has only the FPN pixel decoder)"
        )
    if config.pre_norm:
        refusals.append("pre_norm=True (transformers' DETR decoder is post-norm only)")
    if config.hidden_size % 2:
        refusals.append(f"hidden_size={config.hidden_size} (the sine position encoding needs an even size)")
    if config.activation_function not in ("relu", "gelu"):
        refusals.append(f"activation_function={config.activation_function!r}")
    backbone_type = config.backbone_config.model_type
    if backbone_type not in MODEL_FOR_BACKBONE_MAPPING_NAMES:
        refusals.append(f"backbone model_type {backbone_type!r} (not a backbone transformers' AutoBackbone builds)")
    return refusals


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
    return {
        ours: getattr(decoder_config, theirs)
        for ours, (where, theirs) in TRANSFORMERS_FIELDS.items()
        if where == "decoder"
    }


def settings_from_transformers(tf_config, config_class) -> dict[str, Any]:
    """Constructor arguments of our config from a `transformers.MaskFormerConfig` (the stash restored)."""
    settings = {
        ours: getattr(tf_config, theirs) for ours, (where, theirs) in TRANSFORMERS_FIELDS.items() if where == "top"
    }
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
    # PretrainedConfig-level settings transformers keeps on its config (return_dict, output_hidden_states, ...).
    for name in ("output_hidden_states", "output_attentions", "return_dict"):
        if hasattr(tf_config, name):
            settings[name] = getattr(tf_config, name)
    return settings


def dict_from_transformers(config_dict: dict[str, Any], config_class) -> dict[str, Any]:
    """Our config dict from the dict of a transformers config.json (model_type "maskformer")."""
    tf_config = TransformersMaskFormerConfig.from_dict(config_dict)
    return config_class(**settings_from_transformers(tf_config, config_class)).to_dict()


def decoder_dict(config) -> dict[str, Any]:
    """The DETR decoder config dict transformers' MaskFormer builds our decoder from."""
    settings = {
        theirs: getattr(config, ours) for ours, (where, theirs) in TRANSFORMERS_FIELDS.items() if where == "decoder"
    }
    settings.update(
        encoder_attention_heads=config.num_attention_heads,
        activation_dropout=config.dropout,  # ours drops inside the FFN with `dropout`
        auxiliary_loss=False,  # True would change the decoder's forward (see `decoder_settings`)
    )
    return settings


def config_to_transformers(config):
    """A `transformers.MaskFormerConfig` for our config; `InvalidInputError` naming what transformers cannot
    represent."""
    refusals = transformers_refusals(config)
    if refusals:
        raise InvalidInputError("transformers' MaskFormer cannot represent this model: " + "; ".join(refusals))
    top = {theirs: getattr(config, ours) for ours, (where, theirs) in TRANSFORMERS_FIELDS.items() if where == "top"}
    return TransformersMaskFormerConfig(
        backbone_config=config.backbone_config.__class__.from_dict(config.backbone_config.to_dict()),
        decoder_config=decoder_dict(config),
        cross_entropy_weight=config.class_weight,
        use_auxiliary_loss=False,
        id2label=dict(config.id2label),
        output_hidden_states=config.output_hidden_states,
        return_dict=config.return_dict,
        **{name: getattr(config, name) for name in TOP_LEVEL_EXTRAS},
        **top,
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
