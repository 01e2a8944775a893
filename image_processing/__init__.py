from .image_processing_maskformer import (
    MaskFormerImageProcessor,
    convert_segmentation_map_to_binary_masks,
    get_resize_output_size,
)

__all__ = ["MaskFormerImageProcessor", "convert_segmentation_map_to_binary_masks", "get_resize_output_size"]
