"""`pipeline("image-segmentation", pipeline_class=MaskFormerSegmentationPipeline)`: the stock pipeline plus numpy /
torch inputs (H×W, H×W×C or C×H×W; uint8, uint16, or float in [0, 1]), `fast_inference=True` (the model's fast path),
`tta=True` or a `TestTimeAugmentation` (semantic only), quicker per-segment masks, semantic as the per-pixel baseline's
default subtask, and the model's things and stuff (`config.thing_ids`, `data.labels.segment`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_utils import load_image
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..data.labels import TASKS, model_thing_ids, segment
from ..errors import InvalidInputError
from ..image_processing.validation import image_to_tensor
from .tta import NO_SIZE_LIMIT, TestTimeAugmentation, semantic_segmentation_tta


def array_to_pil(image: np.ndarray | torch.Tensor) -> Image.Image:
    """An array or tensor input as the RGB image the stock pipeline takes."""
    tensor, in_unit_range = image_to_tensor(image, "pipeline input", **NO_SIZE_LIMIT)
    if tensor.is_floating_point():
        tensor = (tensor * (255.0 if in_unit_range else 1.0)).round().clamp(0, 255)
    array = tensor.to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")


def segment_masks(segmentation: torch.Tensor, ids: list[int]) -> list[Image.Image]:
    """One "L" mask (255 where `segmentation` equals the id, 0 elsewhere) per id."""
    values = segmentation.numpy()
    if ids and 0 <= min(ids) and max(ids) < 255:
        # NOTE: one 8-bit copy of the map (any other value -> 255, never an id), then a 256-entry table per mask.
        base = Image.fromarray(np.where((values >= 0) & (values < 255), values, 255).astype(np.uint8), mode="L")
        return [base.point([255 if value == segment_id else 0 for value in range(256)]) for segment_id in ids]
    return [Image.fromarray(((values == segment_id) * 255).astype(np.uint8), mode="L") for segment_id in ids]


class MaskFormerSegmentationPipeline(ImageSegmentationPipeline):
    def __init__(self, *args, fast_inference: bool = False, tta: bool | TestTimeAugmentation = False, **kwargs):
        super().__init__(*args, **kwargs)
        if fast_inference:
            if not hasattr(self.model, "enable_fast_inference"):
                raise InvalidInputError(f"fast_inference needs this package's model, got {type(self.model).__name__}")
            self.model.enable_fast_inference()
        self.tta = TestTimeAugmentation.for_processor(self.image_processor) if tta is True else tta or None
        name = getattr(self.model.config, "name_or_path", "") or type(self.model).__name__
        self.thing_ids = model_thing_ids(self.model.config, name)

    def _sanitize_parameters(self, label_ids_to_fuse=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if label_ids_to_fuse is not None:
            postprocess["label_ids_to_fuse"] = label_ids_to_fuse
        return preprocess, forward, postprocess

    def _subtask(self, subtask):
        if subtask is None:
            return "semantic" if isinstance(self.model.config, PerPixelBaselineConfig) else "panoptic"
        return subtask

    def preprocess(self, image, subtask=None, timeout=None):
        if isinstance(image, (np.ndarray, torch.Tensor)):
            image = array_to_pil(image)
        if self.tta is None:
            return super().preprocess(image, subtask=self._subtask(subtask), timeout=timeout)
        if self._subtask(subtask) != "semantic":
            raise InvalidInputError(
                "tta applies to subtask='semantic' only (the authors' test-time augmentation averages semantic "
                f"scores), got subtask={subtask!r}"
            )
        image = load_image(image, timeout=timeout)
        return {"tta_image": image, "target_size": [(image.height, image.width)]}

    def _forward(self, model_inputs):
        if "tta_image" not in model_inputs:
            return super()._forward(model_inputs)
        sizes = model_inputs["target_size"]
        maps = semantic_segmentation_tta(
            self.model, self.image_processor, model_inputs["tta_image"], self.tta, target_sizes=sizes
        )
        return {"tta_segmentation": maps[0], "target_size": sizes}

    def postprocess(
        self,
        model_outputs,
        subtask=None,
        threshold=0.9,
        mask_threshold=0.5,
        overlap_mask_area_threshold=0.5,
        label_ids_to_fuse=None,
    ):
        labels, subtask = self.model.config.id2label, self._subtask(subtask)
        if subtask not in TASKS:
            raise InvalidInputError(f"Subtask {subtask} is not supported for model {type(self.model)}")
        result = model_outputs.get("tta_segmentation")
        if result is None:
            settings = {"threshold": threshold, "mask_threshold": mask_threshold, "thing_ids": self.thing_ids}
            settings |= {
                "overlap_mask_area_threshold": overlap_mask_area_threshold,
                "label_ids_to_fuse": label_ids_to_fuse,
            }
            sizes = model_outputs["target_size"]
            [result] = segment(self.image_processor, model_outputs, subtask, target_sizes=sizes, **settings)
        if subtask == "semantic":
            ids = torch.unique(result).tolist()
            return [{"score": None, "label": labels[i], "mask": m} for i, m in zip(ids, segment_masks(result, ids))]
        segments = result["segments_info"]
        masks = segment_masks(result["segmentation"], [s["id"] for s in segments])
        return [{"score": s["score"], "label": labels[s["label_id"]], "mask": m} for s, m in zip(segments, masks)]
