"""`pipeline("image-segmentation")` that also takes numpy arrays and torch tensors.

transformers' image-segmentation pipeline accepts only paths, URLs, base64 strings and PIL images. Pass
`pipeline_class=MaskFormerSegmentationPipeline` to give it arrays (H×W, H×W×C or C×H×W; uint8, uint16, or
float in [0, 1]) as well; everything else behaves exactly as the stock pipeline.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

from .image_processing.validation import image_to_tensor

# Arrays are converted once here; the image processor re-checks size limits.
_NO_LIMIT = {"min_side": 1, "max_side": 1 << 30, "max_pixels": 1 << 62}


def array_to_pil(image: np.ndarray | torch.Tensor) -> Image.Image:
    tensor, in_unit_range = image_to_tensor(image, "pipeline input", **_NO_LIMIT)
    if tensor.is_floating_point():
        tensor = (tensor * (255.0 if in_unit_range else 1.0)).round().clamp(0, 255)
    array = tensor.to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")


class MaskFormerSegmentationPipeline(ImageSegmentationPipeline):
    def preprocess(self, image, subtask=None, timeout=None):
        if isinstance(image, (np.ndarray, torch.Tensor)):
            image = array_to_pil(image)
        return super().preprocess(image, subtask=subtask, timeout=timeout)
