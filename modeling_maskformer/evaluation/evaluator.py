"""Evaluate a MaskFormer (or the per-pixel baseline) on a dataset: mIoU, PQ and COCO mask AP, as the data allows,
sharded over processes with Accelerate."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import PretrainedConfig

from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..errors import InvalidInputError
from ..image_processing import MaskFormerImageProcessor
from ..inference.batch_predict import forward_by_padded_size
from ..inference.tta import TestTimeAugmentation, semantic_segmentation_tta
from ..interop.transformers_weights import convert_from_transformers
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..paper.per_pixel import PerPixelBaselineForSemanticSegmentation
from .metrics import MaskAPMetric, PanopticQualityMetric, SemanticSegmentationMetric

logger = logging.getLogger(__name__)


def load_model_folder(
    model_path: str,
) -> tuple[MaskFormerForInstanceSegmentation | PerPixelBaselineForSemanticSegmentation, MaskFormerImageProcessor]:
    """The model and processor of a folder or Hub id: a MaskFormer (ours or transformers') or the per-pixel baseline."""
    model_type = PretrainedConfig.get_config_dict(model_path)[0].get("model_type")  # as written; a bad path: one line
    if model_type == "maskformer":  # transformers' format: a folder without a processor gets transformers' defaults
        return convert_from_transformers(model_path)
    per_pixel = model_type == PerPixelBaselineConfig.model_type
    model_class = PerPixelBaselineForSemanticSegmentation if per_pixel else MaskFormerForInstanceSegmentation
    return model_class.from_pretrained(model_path), MaskFormerImageProcessor.from_pretrained(model_path)


def instance_ground_truth(item: dict, thing_ids: set[int]) -> dict:
    """An item's thing instances for `MaskAPMetric.update`: an instance item's objects (with COCO's areas, which
    `COCOeval`'s size ranges read), or a panoptic item's thing segments."""
    if item.get("instances") is not None:
        keep = np.isin(item["instances"]["labels"], sorted(thing_ids))
        return {key: item["instances"][key][keep] for key in ("masks", "labels", "iscrowd", "areas")}
    segments = [s for s in item["segments_info"] if s["category_id"] in thing_ids]
    return {"segmentation": item["panoptic_ids"], "segments_info": segments}


def target_size(item: dict) -> tuple[int, int]:
    """(H, W) of an item's ground truth."""
    if item.get("semantic") is not None:
        return tuple(item["semantic"].shape)
    if item.get("instances") is not None:
        return tuple(item["instances"]["masks"].shape[1:])
    return item["image"].height, item["image"].width


class Evaluator:
    """The metrics dataset items (`modeling_maskformer.data`) support: mIoU of `semantic`; with `panoptic=True` PQ of
    `panoptic_ids`/`segments_info` and mask AP over `thing_ids`; with `instances=True` mask AP only. `update()` per
    batch post-processes at each item's size, then `compute()`."""

    def __init__(
        self,
        id2label: dict[int, str],
        *,
        thing_ids: Iterable[int] = (),
        ignore_index: int = 255,
        panoptic: bool = False,
        instances: bool = False,
        panoptic_threshold: float = 0.5,
        overlap_threshold: float = 0.8,
    ):
        if panoptic and instances:
            raise InvalidInputError("Evaluator: panoptic=True needs panoptic targets, instances=True instance ones")
        self.panoptic_threshold, self.overlap_threshold = panoptic_threshold, overlap_threshold
        self.thing_ids = {int(c) for c in thing_ids}
        self.stuff_ids = sorted(set(id2label) - self.thing_ids)
        self.metrics: dict[str, Any] = {}  # "semantic", "panoptic", "instance": what `compute` returns
        if not instances:
            self.metrics["semantic"] = SemanticSegmentationMetric(len(id2label), ignore_index, id2label=id2label)
        if panoptic:
            self.metrics["panoptic"] = PanopticQualityMetric(sorted(self.thing_ids), self.stuff_ids, id2label=id2label)
        if instances or (panoptic and self.thing_ids):
            self.metrics["instance"] = MaskAPMetric(id2label=id2label)

    @classmethod
    def for_dataset(cls, dataset, id2label: dict[int, str], *, semantic_only: bool = False, **kwargs) -> Evaluator:
        """The metrics `dataset` supports (`semantic_only`: a per-pixel classifier, which has no segments)."""
        if dataset.task == "instance" and semantic_only:
            raise InvalidInputError(
                "a per-pixel classification model has no instances to score, and instance data no "
                "semantic maps: evaluate a MaskFormer on it"
            )
        return cls(
            id2label,
            thing_ids=dataset.thing_ids,
            ignore_index=dataset.ignore_index,
            panoptic=dataset.task == "panoptic" and not semantic_only,
            instances=dataset.task == "instance",
            **kwargs,
        )

    def update(self, processor, outputs, items: list[dict], semantic: list[torch.Tensor] | None = None) -> None:
        """Score `outputs` (a batch of len(items)); `semantic`: class maps computed otherwise (test-time augmentation)."""
        sizes = [target_size(item) for item in items]
        if "semantic" in self.metrics:
            if semantic is None:
                semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            for prediction, item in zip(semantic, items):
                self.metrics["semantic"].update(prediction.cpu(), item["semantic"].astype(np.int64))
        if "panoptic" in self.metrics:
            panoptic = processor.post_process_panoptic_segmentation(
                outputs,
                threshold=self.panoptic_threshold,
                overlap_mask_area_threshold=self.overlap_threshold,
                label_ids_to_fuse=set(self.stuff_ids),
                target_sizes=sizes,
            )
            for prediction, item in zip(panoptic, items):
                self.metrics["panoptic"].update(
                    prediction["segmentation"],
                    prediction["segments_info"],
                    item["panoptic_ids"],
                    item["segments_info"],
                )
        if "instance" in self.metrics:
            instances = processor.post_process_instance_segmentation(
                outputs, threshold=0.0, target_sizes=sizes, return_binary_maps=True
            )
            for prediction, item in zip(instances, items):
                info = prediction["segments_info"]
                keep = [i for i, s in enumerate(info) if s["label_id"] in self.thing_ids]
                things = {"segmentation": prediction["segmentation"][keep], "segments_info": [info[i] for i in keep]}
                self.metrics["instance"].update(things, instance_ground_truth(item, self.thing_ids))

    def gather(self, accelerator: Accelerator | None) -> None:
        for metric in self.metrics.values() if accelerator is not None and accelerator.num_processes > 1 else ():
            if isinstance(metric, MaskAPMetric):
                metric.all_gather(gather_object)
            else:
                metric.all_reduce(lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu())

    def compute(self) -> dict:
        return {name: metric.compute() for name, metric in self.metrics.items()}


@torch.no_grad()
def evaluate_model(
    model,
    processor,
    dataset,
    *,
    accelerator: Accelerator | None = None,
    batch_size: int = 4,
    max_items: int | None = None,
    show_progress: bool = True,
    tta: TestTimeAugmentation | None = None,
    panoptic_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    id2label: dict[int, str] | None = None,
) -> dict:
    """The metrics of the model over the dataset (each process scores its shard; the states are summed).

    `id2label`: the classes scored (default: the model's). `tta`: semantic maps (mIoU) from test-time augmentation
    (`inference.tta`); panoptic and instance predictions stay single-scale.

    NOTE: the results do not depend on `batch_size`: only images of one padded size share a forward pass
    (`inference.batch_predict`), grouped within windows of `8 * batch_size` items."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if tta is not None and dataset.task == "instance":
        raise InvalidInputError(
            "test-time augmentation averages semantic scores (mIoU): instance data has no semantic maps"
        )
    was_training = model.training
    model.eval()
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    semantic_only = isinstance(unwrapped, PerPixelBaselineForSemanticSegmentation)
    if semantic_only and dataset.task == "panoptic":
        logger.info("per-pixel classification model: semantic metrics only (PQ and mask AP need mask classification)")
    id2label = id2label or {int(k): v for k, v in unwrapped.config.id2label.items()}
    evaluator = Evaluator.for_dataset(
        dataset,
        id2label,
        semantic_only=semantic_only,
        panoptic_threshold=panoptic_threshold,
        overlap_threshold=overlap_threshold,
    )
    device = next(model.parameters()).device
    indices = list(range(len(dataset) if max_items is None else min(max_items, len(dataset))))
    if accelerator is not None:
        indices = indices[accelerator.process_index :: accelerator.num_processes]
    disabled = not show_progress or (accelerator is not None and not accelerator.is_local_main_process)
    window = 8 * batch_size
    with tqdm(total=len(indices), desc="evaluating", disable=disabled) as progress:
        for start in range(0, len(indices), window):
            items = [dataset[i] for i in indices[start : start + window]]
            inputs = [processor([item["image"]], return_tensors="pt") for item in items]
            outputs = forward_by_padded_size(model, inputs, batch_size=batch_size, device=device)
            for position, item in enumerate(items):
                semantic = None
                if tta is not None:
                    semantic = semantic_segmentation_tta(
                        model, processor, item["image"], tta, target_sizes=[target_size(item)]
                    )
                evaluator.update(processor, outputs[position], [item], semantic=semantic)
                outputs[position] = None  # free it
                progress.update(1)
    evaluator.gather(accelerator)
    model.train(was_training)
    return evaluator.compute()


def summary(results: dict) -> dict[str, float | None]:
    """The headline numbers the results have: mIoU, pixel accuracy, PQ (things / stuff) and mask AP."""
    keys = {
        "semantic": {"mean_iou": "mean_iou", "pixel_accuracy": "pixel_accuracy"},
        "panoptic": {key: key for key in ("pq", "sq", "rq", "pq_things", "pq_stuff")},
        "instance": {"mask_ap": "ap", "mask_ap50": "ap50"},
    }
    return {name: results[task][key] for task, names in keys.items() if task in results for name, key in names.items()}
