from .image_processing_maskformer import (
    MaskFormerImageProcessor,
    convert_segmentation_map_to_binary_masks,
    get_resize_output_size,
)
from .transformers_api import binary_mask_to_rle, convert_segmentation_to_rle

__all__ = [
    "MaskFormerImageProcessor",
    "binary_mask_to_rle",
    "convert_segmentation_map_to_binary_masks",
    "convert_segmentation_to_rle",
    "get_resize_output_size",
]
