"""Evaluate a MaskFormer on a segmentation dataset: mIoU (+ per-class IoU, pixel accuracy), PQ/SQ/RQ (all,
things, stuff) and COCO mask AP where the dataset has instances (COCO instance data: mask AP only, equal to
pycocotools' `COCOeval(iouType="segm")` on the same predictions). Runs sharded over processes with Accelerate.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..image_processing import MaskFormerImageProcessor
from ..inference.batching import forward_by_padded_size
from ..inference.tta import TestTimeAugmentation, semantic_segmentation_tta
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..paper.per_pixel import PerPixelBaselineForSemanticSegmentation
from .metrics import MaskAPMetric, PanopticQualityMetric, SemanticSegmentationMetric

logger = logging.getLogger(__name__)


def load_model_folder(
    model_path: str,
) -> tuple[MaskFormerForInstanceSegmentation | PerPixelBaselineForSemanticSegmentation, MaskFormerImageProcessor]:
    """Our folder (MaskFormer or the per-pixel baseline), or a transformers MaskFormer folder/Hub id converted on
    the fly."""
    config_file = Path(model_path) / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    if model_type == PerPixelBaselineConfig.model_type:
        return (
            PerPixelBaselineForSemanticSegmentation.from_pretrained(model_path),
            MaskFormerImageProcessor.from_pretrained(model_path),
        )
    if model_type == "maskformer":
        from ..interop.transformers_weights import convert_from_transformers

        converted = Path(tempfile.mkdtemp(prefix="maskformer-converted-"))
        convert_from_transformers(model_path, converted)
        model_path = str(converted)
    model = MaskFormerForInstanceSegmentation.from_pretrained(model_path)
    processor = MaskFormerImageProcessor.from_pretrained(model_path)
    return model, processor


def instance_ground_truth(item: dict, thing_ids: set[int]) -> dict:
    """Binary masks, labels and crowd flags of the thing segments of a panoptic item, or of the objects of an
    instance item (then with COCO's areas, which mask AP's area ranges read, as `COCOeval` does)."""
    instances = item.get("instances")
    if instances is not None:
        keep = np.isin(instances["labels"], sorted(thing_ids))
        return {key: instances[key][keep] for key in ("masks", "labels", "iscrowd", "areas")}
    segments = [s for s in item["segments_info"] if s["category_id"] in thing_ids]
    ids = item["panoptic_ids"]
    masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
    return {
        "masks": masks,
        "labels": np.array([s["category_id"] for s in segments], dtype=np.int64),
        "iscrowd": np.array([s.get("iscrowd", 0) for s in segments], dtype=np.int64),
    }


def target_size(item: dict) -> tuple[int, int]:
    """(H, W) of an item's ground truth: its semantic map, else its instance masks, else its image."""
    if item.get("semantic") is not None:
        return tuple(item["semantic"].shape)
    if item.get("instances") is not None:
        return tuple(item["instances"]["masks"].shape[1:])
    return item["image"].height, item["image"].width


class Evaluator:
    """Accumulates the metrics the targets support; `update()` per batch, then `compute()`.

    Targets are items in the dataset format (`modeling_maskformer.data`): `semantic` (H, W) class ids with
    `ignore_index`, and for panoptic evaluation `panoptic_ids` (H, W) with `segments_info`. Predictions are
    post-processed at the size of the image. PQ needs `panoptic=True`; mask AP also needs thing classes.
    `instances=True` (COCO instance data, whose items carry `instances` and no semantic map): mask AP only.
    `panoptic_threshold` / `overlap_threshold`: the panoptic inference's object-mask and overlap thresholds.
    """

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
            raise ValueError(
                "Evaluator: panoptic=True needs panoptic targets, instances=True instance targets; not both"
            )
        self.panoptic_threshold, self.overlap_threshold = panoptic_threshold, overlap_threshold
        self.thing_ids = {int(c) for c in thing_ids}
        self.stuff_ids = sorted(set(id2label) - self.thing_ids)
        self.semantic = self.panoptic = self.instance = None
        if instances:
            self.instance = MaskAPMetric(id2label=id2label)
        else:
            self.semantic = SemanticSegmentationMetric(len(id2label), ignore_index=ignore_index, id2label=id2label)
        if panoptic:
            self.panoptic = PanopticQualityMetric(sorted(self.thing_ids), self.stuff_ids, id2label=id2label)
            if self.thing_ids:
                self.instance = MaskAPMetric(id2label=id2label)

    @classmethod
    def for_dataset(cls, dataset, id2label: dict[int, str], *, semantic_only: bool = False, **kwargs) -> Evaluator:
        """The metrics a `SegmentationDataset` supports: mIoU always, PQ and mask AP for panoptic data (unless
        `semantic_only`: a per-pixel classifier has no segments to score), mask AP alone for instance data."""
        if dataset.task == "instance" and semantic_only:
            raise ValueError(
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
        """Post-process `outputs` (a batch of len(items)) with `processor` and score it against `items`;
        `semantic`: the class maps when computed otherwise (test-time augmentation)."""
        sizes = [target_size(item) for item in items]
        if self.semantic is not None:
            if semantic is None:
                semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            for prediction, item in zip(semantic, items):
                self.semantic.update(prediction.cpu(), torch.as_tensor(item["semantic"].astype(np.int64)))
        if self.panoptic is not None:
            panoptic = processor.post_process_panoptic_segmentation(
                outputs,
                threshold=self.panoptic_threshold,
                overlap_mask_area_threshold=self.overlap_threshold,
                label_ids_to_fuse=set(self.stuff_ids),
                target_sizes=sizes,
            )
            for prediction, item in zip(panoptic, items):
                self.panoptic.update(
                    prediction["segmentation"].cpu(),
                    prediction["segments_info"],
                    item["panoptic_ids"],
                    item["segments_info"],
                )
        if self.instance is not None:
            instances = processor.post_process_instance_segmentation(
                outputs, threshold=0.0, target_sizes=sizes, return_binary_maps=True
            )
            for prediction, item in zip(instances, items):
                keep = [i for i, s in enumerate(prediction["segments_info"]) if s["label_id"] in self.thing_ids]
                masks = prediction["segmentation"]
                self.instance.update(
                    {
                        "masks": masks[keep].cpu().numpy().astype(bool),  # (N, H, W); N may be 0
                        "labels": np.array([prediction["segments_info"][i]["label_id"] for i in keep], dtype=np.int64),
                        "scores": np.array([prediction["segments_info"][i]["score"] for i in keep], dtype=np.float64),
                    },
                    instance_ground_truth(item, self.thing_ids),
                )

    def gather(self, accelerator: Accelerator | None) -> None:
        """Sum the metric states over processes (each process saw a shard of the data)."""
        if accelerator is None or accelerator.num_processes == 1:
            return

        def reduce(tensor: torch.Tensor) -> torch.Tensor:
            return accelerator.reduce(tensor.to(accelerator.device), reduction="sum").cpu()

        if self.semantic is not None:
            self.semantic.all_reduce(reduce)
        if self.panoptic is not None:
            self.panoptic.all_reduce(reduce)
        if self.instance is not None:
            self.instance.all_gather(gather_object)

    def compute(self) -> dict:
        results = {"semantic": self.semantic.compute()} if self.semantic is not None else {}
        if self.panoptic is not None:
            results["panoptic"] = self.panoptic.compute()
        if self.instance is not None:
            results["instance"] = self.instance.compute()
        return results


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
    """Run the model over (a shard of) the dataset and return the summed metrics of all processes.

    `id2label`: the classes scored (default: the model's; more when a dataset has classes the model lacks).

    NOTE: the results do not depend on `batch_size`: only images of the same padded size share a forward pass
    (`modeling_maskformer.inference.batching`). Images are grouped within windows of `8 * batch_size` items, and metrics
    are updated in dataset order.

    `tta`: semantic maps (mIoU) from test-time augmentation (`modeling_maskformer.inference.tta`), as the authors' multi-scale
    results; panoptic and instance predictions stay single-scale (the authors' TTA is semantic only).

    A per-pixel classifier (`PerPixelBaselineForSemanticSegmentation`) gets the semantic metrics only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tta is not None and dataset.task == "instance":
        raise ValueError("test-time augmentation averages semantic scores (mIoU): instance data has no semantic maps")
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
    """The headline numbers: mIoU, pixel accuracy, PQ (things/stuff) and mask AP (those the results have)."""
    flat = {}
    if "semantic" in results:
        flat.update({key: results["semantic"][key] for key in ("mean_iou", "pixel_accuracy")})
    if "panoptic" in results:
        flat.update({key: results["panoptic"][key] for key in ("pq", "sq", "rq", "pq_things", "pq_stuff")})
    if "instance" in results:
        flat.update({"mask_ap": results["instance"]["ap"], "mask_ap50": results["instance"]["ap50"]})
    return flat
