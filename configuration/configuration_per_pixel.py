"""Configuration of the paper's per-pixel classification baseline (Table 4): MaskFormer's backbone and pixel
decoder, a 1x1 convolution classifier on the per-pixel embeddings, per-pixel cross-entropy."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from .configuration_maskformer import MaskFormerConfig
from .remote_code import PER_PIXEL_AUTO_MAP


class PerPixelBaselineConfig(MaskFormerConfig):
    r"""A `MaskFormerConfig` whose model is `PerPixelBaselineForSemanticSegmentation`; `ignore_index` is the
    `labels` value the cross-entropy skips. The transformer-decoder and set-prediction loss fields are unused.

    NOTE: a subclass with its own `model_type`, not a `head_type` field: transformers' Auto classes map a config
    *class* to a model class, so only a distinct type lets `AutoConfig` and `pipeline()` pick the baseline from a
    folder, and makes `MaskFormerForInstanceSegmentation.from_pretrained` refuse a baseline folder.
    """

    model_type = "maskformer-per-pixel"
    remote_auto_map = PER_PIXEL_AUTO_MAP  # a saved folder also loads with trust_remote_code (remote_code.py)

    def __init__(self, ignore_index: int = 255, **kwargs: Any):
        self.ignore_index = ignore_index
        super().__init__(**kwargs)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.ignore_index, int) or isinstance(self.ignore_index, bool):
            raise InvalidInputError(f"PerPixelBaselineConfig.ignore_index={self.ignore_index!r}: must be an int")
        if 0 <= self.ignore_index < self.num_labels:
            classes = f"0..{self.num_labels - 1}"
            raise InvalidInputError(
                f"PerPixelBaselineConfig.ignore_index={self.ignore_index}: must not be a class id ({classes})"
            )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> PerPixelBaselineConfig:
        if config_dict.get("model_type") in (MaskFormerConfig.model_type, "maskformer"):
            raise cls._not_a_baseline(config_dict["model_type"])
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def dict_from_transformers(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        raise cls._not_a_baseline("maskformer")  # a MaskFormer folder in transformers' format

    @staticmethod
    def _not_a_baseline(model_type: str) -> InvalidInputError:
        return InvalidInputError(
            f"config.json is a MaskFormer's (model_type {model_type!r}), not the per-pixel baseline's: load it with "
            "MaskFormerForInstanceSegmentation, or build the baseline on its architecture with "
            "PerPixelBaselineConfig.from_maskformer_config(MaskFormerConfig.from_pretrained(...))"
        )

    @classmethod
    def from_maskformer_config(cls, config: MaskFormerConfig, **overrides: Any) -> PerPixelBaselineConfig:
        """The baseline with `config`'s backbone, pixel decoder and classes (for a like-for-like comparison)."""
        dropped = ("model_type", "architectures", "auto_map", "transformers_version")
        return cls(**{**{k: v for k, v in config.to_dict().items() if k not in dropped}, **overrides})


__all__ = ["PerPixelBaselineConfig"]
