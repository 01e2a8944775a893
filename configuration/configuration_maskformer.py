"""MaskFormer configuration: the paper's defaults, typed and checked when built."""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import CONFIG_MAPPING, AutoConfig, DetrConfig, PretrainedConfig, TimmBackboneConfig
from transformers import MaskFormerConfig as TransformersMaskFormerConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING, MODEL_FOR_BACKBONE_MAPPING_NAMES

from ..errors import InvalidInputError, MissingInputError, first_line
from .backbones import STAGES, SWIN_DROP_PATH_RATE, build_backbone_config, with_all_stages
from .remote_code import CONFIG_AUTO_MAP, TRANSFORMERS_MODEL_TYPE, HubFolderMixin, folder_model_type
from .transformers_format import (
    decoder_dict,
    decoder_settings,
    settings_from_transformers,
    transformers_refusals,
    write_transformers_config,
)

PixelDecoderType = Literal["fpn", "fpn_transformer_encoder"]
MaskLossMode = Literal["dense", "point"]
ActivationFunction = Literal["relu", "gelu"]
# Constructor arguments that are not stored as given (built or translated in `__init__`).
_NOT_FIELDS = ("self", "kwargs", "__class__", "backbone_config", "decoder_config", "cross_entropy_weight")
# Integer fields and their least value.
_MIN_INTS = dict.fromkeys(("fpn_feature_size", "mask_feature_size", "num_queries", "hidden_size", "decoder_layers"), 1)
_MIN_INTS |= dict.fromkeys(("num_attention_heads", "decoder_ffn_dim", "encoder_ffn_dim", "train_num_points"), 1)
_MIN_INTS["encoder_layers"] = 0


class MaskFormerConfig(HubFolderMixin, PretrainedConfig):
    r"""Configuration of a MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021); its fields are tabled in docs/api.md.

    Defaults reproduce the paper: Swin-T backbone, FPN pixel decoder with 256 channels, a 6-layer DETR post-norm
    transformer decoder (8 heads, FFN 2048, dropout 0.1) with 100 queries, and the loss
    `1 * CE (no-object weight 0.1) + 20 * focal + 1 * dice` with deep supervision. `decoder_config` (a DETR config
    or dict) and `cross_entropy_weight` are transformers' spellings, translated into our fields and not stored;
    transformers' MaskFormer config.json (model_type "maskformer") is read too (`transformers_format.py`).
    """

    model_type = "maskformer-hf"
    remote_auto_map = CONFIG_AUTO_MAP
    sub_configs = {"backbone_config": AutoConfig}
    # Each loss term (a key of the model's `loss_dict`, a function in loss.py's `MaskFormerLoss.terms`) and the
    # field holding its weight; the matcher weighs the mirroring costs alike. A new term: its function in loss.py,
    # its field in `__init__` and its entry here.
    loss_weight_fields = {"loss_cross_entropy": "class_weight", "loss_mask": "mask_weight", "loss_dice": "dice_weight"}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        backbone: str | None = None,
        use_pretrained_backbone: bool = False,
        use_timm_backbone: bool = True,
        backbone_kwargs: dict | None = None,
        pixel_decoder_type: PixelDecoderType = "fpn",
        fpn_feature_size: int = 256,
        mask_feature_size: int = 256,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 2048,
        num_queries: int = 100,
        hidden_size: int = 256,
        decoder_layers: int = 6,
        num_attention_heads: int = 8,
        decoder_ffn_dim: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_function: ActivationFunction = "relu",
        pre_norm: bool = False,
        no_object_weight: float = 0.1,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        use_auxiliary_loss: bool = True,
        mask_loss_mode: MaskLossMode = "dense",
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        output_auxiliary_logits: bool | None = None,
        decoder_config: PretrainedConfig | dict | None = None,
        cross_entropy_weight: float | None = None,
        thing_ids: list[int] | None = None,
        validation_held_out: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        fields = {name: value for name, value in locals().items() if name not in _NOT_FIELDS}
        if cross_entropy_weight is not None:
            if class_weight not in (1.0, cross_entropy_weight):
                raise InvalidInputError(
                    f"MaskFormerConfig: class_weight={class_weight} and cross_entropy_weight={cross_entropy_weight} "
                    "name the same weight; give one"
                )
            fields["class_weight"] = cross_entropy_weight
        if decoder_config is not None:
            fields.update(decoder_settings(decoder_config))
        fields["backbone_kwargs"] = dict(backbone_kwargs or {})
        fields["thing_ids"] = None if thing_ids is None else sorted(thing_ids)
        fields["validation_held_out"] = None if validation_held_out is None else dict(validation_held_out)
        for name, value in fields.items():
            setattr(self, name, value)
        self.backbone_config = with_all_stages(self._backbone_config_from(backbone_config))
        super().__init__(**kwargs)
        self.validate()

    def _backbone_config_from(self, backbone_config: PretrainedConfig | dict | None) -> PretrainedConfig:
        if isinstance(backbone_config, PretrainedConfig):
            return backbone_config
        if isinstance(backbone_config, dict):
            model_type = backbone_config.get("model_type")
            if model_type is None:
                raise InvalidInputError("backbone_config: a dict backbone config needs a 'model_type' key")
            if model_type not in CONFIG_MAPPING:
                raise InvalidInputError(f"backbone_config: unknown model_type {model_type!r}")
            return CONFIG_MAPPING[model_type].from_dict(backbone_config)
        if backbone_config is not None:
            raise TypeError(
                f"backbone_config must be a PretrainedConfig, a dict or None, got {type(backbone_config).__name__}"
            )
        if self.backbone is None:  # Swin-T, the paper's ADE20K backbone (Sec. 4.1)
            return build_backbone_config("swin-tiny", drop_path_rate=SWIN_DROP_PATH_RATE)
        if self.use_timm_backbone:
            return TimmBackboneConfig(backbone=self.backbone, **{"out_indices": [1, 2, 3, 4], **self.backbone_kwargs})
        try:  # a transformers backbone checkpoint: its config.json describes the architecture
            config = AutoConfig.from_pretrained(self.backbone, **self.backbone_kwargs)
        except OSError as error:
            raise MissingInputError(
                f"backbone={self.backbone!r}: could not read its config (no network, or not a Hub id / local "
                f"folder). Pass `backbone_config` explicitly to build the architecture offline. ({error})"
            ) from error
        if getattr(config, "out_features", None) is None and hasattr(config, "stage_names"):
            config.out_features = list(STAGES)
        return config

    def validate(self) -> None:
        """Raise `InvalidInputError` (a ValueError) naming the first field whose value cannot build a MaskFormer."""

        def check(condition: bool, field: str, requirement: str) -> None:
            if not condition:
                raise InvalidInputError(f"MaskFormerConfig.{field}={getattr(self, field)!r}: {requirement}")

        for field, allowed in (
            ("pixel_decoder_type", PixelDecoderType),
            ("mask_loss_mode", MaskLossMode),
            ("activation_function", ActivationFunction),
        ):
            check(getattr(self, field) in get_args(allowed), field, f"must be one of {get_args(allowed)}")
        for field, least in _MIN_INTS.items():
            value = getattr(self, field)
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= least
            check(valid, field, f"must be an int >= {least}")
        heads = self.num_attention_heads
        check(self.hidden_size % heads == 0, "hidden_size", f"must be divisible by num_attention_heads={heads}")
        groups = "must be a multiple of 32 (the FPN uses GroupNorm with 32 groups)"
        check(self.fpn_feature_size % 32 == 0, "fpn_feature_size", groups)
        for field in ("no_object_weight", *self.loss_weight_fields.values(), "focal_gamma"):
            value = getattr(self, field)
            check(isinstance(value, (int, float)) and value >= 0, field, "must be a number >= 0")
        check(0 <= self.focal_alpha <= 1, "focal_alpha", "must be in [0, 1]")
        for field in ("dropout", "attention_dropout"):
            check(0 <= getattr(self, field) < 1, field, "must be in [0, 1)")
        check(self.oversample_ratio >= 1, "oversample_ratio", "must be >= 1")
        check(0 <= self.importance_sample_ratio <= 1, "importance_sample_ratio", "must be in [0, 1]")
        check(len(self.id2label) >= 1, "num_labels", "must be >= 1 (set num_labels or id2label)")
        ids = sorted(self.id2label)
        if ids != list(range(len(ids))):
            shown = ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else "")
            raise InvalidInputError(
                f"MaskFormerConfig.id2label: class ids must be 0..{len(ids) - 1} without gaps (the class head has one "
                f"output per id), got [{shown}]"
            )
        if self.thing_ids is not None:
            valid = all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(ids) for i in self.thing_ids)
            valid = valid and len(set(self.thing_ids)) == len(self.thing_ids)
            check(valid, "thing_ids", f"must be None or distinct class ids in 0..{len(ids) - 1}")
        if self.validation_held_out is not None:
            fraction, seed = self.validation_held_out.get("fraction"), self.validation_held_out.get("seed", 0)
            valid = isinstance(fraction, (int, float)) and 0 < fraction < 1 and isinstance(seed, int)
            check(valid, "validation_held_out", 'must be None or {"fraction": 0 < f < 1, "seed": int, ...}')
        backbone_type = getattr(self.backbone_config, "model_type", None)
        known = {*MODEL_FOR_BACKBONE_MAPPING_NAMES, *(c.model_type for c in MODEL_FOR_BACKBONE_MAPPING._extra_content)}
        if backbone_type not in known:  # transformers' own backbones and any registered at run time
            raise InvalidInputError(
                f"MaskFormerConfig.backbone_config: model_type {backbone_type!r} is not a backbone "
                "transformers.AutoBackbone can build (e.g. 'swin', 'maskformer-swin', 'resnet', 'convnext', "
                "'dinov2', 'timm_backbone')"
            )
        if self.use_pretrained_backbone and self.backbone is None:
            check(
                getattr(self.backbone_config, "backbone", None) is not None,
                "use_pretrained_backbone",
                "needs `backbone`: a timm model name or a Hub id / folder of a transformers backbone checkpoint",
            )

    @property
    def loss_weights(self) -> dict[str, float]:
        """The weight of each loss term by its name (Mask2Former's `weight_dict`)."""
        return {term: getattr(self, field) for term, field in self.loss_weight_fields.items()}

    @property
    def num_hidden_layers(self) -> int:
        return self.decoder_layers

    @property
    def cross_entropy_weight(self) -> float:
        return self.class_weight

    @property
    def decoder_config(self) -> PretrainedConfig:
        """The decoder as transformers' MaskFormer describes it (a DETR config)."""
        return DetrConfig(**decoder_dict(self))

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any):
        """Into a transformers-native folder (model_type "maskformer") in that format, to fit the weights."""
        if folder_model_type(save_directory) != TRANSFORMERS_MODEL_TYPE or transformers_refusals(self):
            return super().save_pretrained(save_directory, *args, **kwargs)
        if args or kwargs.get("push_to_hub"):
            raise TypeError("saving a config into a transformers-native folder takes no other arguments")
        write_transformers_config(self, save_directory, getattr(self, "architectures", None))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs: Any):
        """An invalid value is reported with the folder it comes from."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ValueError as error:
            raise InvalidInputError(f"{pretrained_model_name_or_path}: {error}") from error

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        """Clear errors for a path that does not exist and a folder without config.json (transformers would build
        the default config, a Swin-T, for it); a transformers MaskFormer dict is converted."""
        source = str(pretrained_model_name_or_path)
        check_local_source(source)
        try:
            config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        except OSError as error:
            if os.path.exists(source):
                raise
            raise MissingInputError(
                f"{source}: no such local folder, and not available from the Hugging Face Hub ({first_line(error)})"
            ) from error
        if config_dict.get("model_type") == "maskformer":  # converted here, so from_pretrained sees our type
            config_dict = cls.dict_from_transformers(config_dict)
        if not config_dict:
            raise MissingInputError(
                f"{source} has no config.json: not a saved model folder (save one with save_pretrained, or convert "
                "a checkpoint with scripts/convert_checkpoint.py)"
            )
        return config_dict, kwargs

    @classmethod
    def dict_from_transformers(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        """Our config dict from the dict of a transformers config.json (model_type "maskformer")."""
        tf_config = TransformersMaskFormerConfig.from_dict(config_dict)
        return cls(**settings_from_transformers(tf_config, cls)).to_dict()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> MaskFormerConfig:
        """Also reads transformers' MaskFormer config (converted, our settings restored); refuses other models'."""
        model_type = config_dict.get("model_type")
        if model_type == "maskformer":
            config_dict = cls.dict_from_transformers(config_dict)
        elif model_type not in (None, cls.model_type):
            raise InvalidInputError(
                f"config.json has model_type {model_type!r}, not {cls.model_type!r} or 'maskformer': not a "
                "MaskFormer folder"
            )
        return super().from_dict(config_dict, **kwargs)


def check_local_source(source: str) -> None:
    """`MissingInputError` for a path that does not exist and cannot be a Hub repo id (instead of the Hub's "Repo
    id must be in the form ..."); a valid repo id is left to the Hub."""
    if os.path.exists(source):
        return
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise MissingInputError(f"{source}: no such file or folder") from None
