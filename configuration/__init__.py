from .configuration_maskformer import MaskFormerConfig

__all__ = ["MaskFormerConfig"]
