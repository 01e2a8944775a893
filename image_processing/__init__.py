from transformers.models.maskformer.image_processing_maskformer import binary_mask_to_rle

from .image_processing_maskformer import (
    MaskFormerImageProcessor,
    convert_segmentation_map_to_binary_masks,
    convert_segmentation_to_rle,
    get_resize_output_size,
)

__all__ = [
    "MaskFormerImageProcessor",
    "binary_mask_to_rle",
    "convert_segmentation_map_to_binary_masks",
    "convert_segmentation_to_rle",
    "get_resize_output_size",
]
