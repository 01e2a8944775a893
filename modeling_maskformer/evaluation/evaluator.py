"""Evaluate a MaskFormer on a segmentation dataset: mIoU (+ per-class IoU, pixel accuracy), PQ/SQ/RQ (all,
things, stuff) and COCO mask AP where the dataset has instances. Runs sharded over processes with Accelerate.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from .metrics import MaskAPMetric, PanopticQualityMetric, SemanticSegmentationMetric

logger = logging.getLogger(__name__)


def load_model_folder(model_path: str) -> tuple[MaskFormerForInstanceSegmentation, MaskFormerImageProcessor]:
    """Our folder, or a transformers MaskFormer folder/Hub id converted on the fly."""
    config_file = Path(model_path) / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "maskformer":
        from ..conversion import convert_from_transformers

        converted = Path(tempfile.mkdtemp(prefix="maskformer-converted-"))
        convert_from_transformers(model_path, converted)
        model_path = str(converted)
    model = MaskFormerForInstanceSegmentation.from_pretrained(model_path)
    processor = MaskFormerImageProcessor.from_pretrained(model_path)
    return model, processor


def instance_ground_truth(item: dict, thing_ids: set[int]) -> dict:
    """Binary masks, labels and crowd flags of the thing segments of a panoptic item."""
    segments = [s for s in item["segments_info"] if s["category_id"] in thing_ids]
    ids = item["panoptic_ids"]
    masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
    return {
        "masks": masks,
        "labels": np.array([s["category_id"] for s in segments], dtype=np.int64),
        "iscrowd": np.array([s.get("iscrowd", 0) for s in segments], dtype=np.int64),
    }


class Evaluator:
    """Accumulates the metrics a dataset supports; `compute()` after all `update()` calls."""

    def __init__(self, dataset, id2label: dict[int, str]):
        self.dataset = dataset
        self.thing_ids = set(dataset.thing_ids)
        self.stuff_ids = sorted(set(id2label) - self.thing_ids)
        self.semantic = SemanticSegmentationMetric(len(id2label), ignore_index=dataset.ignore_index, id2label=id2label)
        self.panoptic = self.instance = None
        if dataset.task == "panoptic":
            self.panoptic = PanopticQualityMetric(sorted(self.thing_ids), self.stuff_ids, id2label=id2label)
            if self.thing_ids:
                self.instance = MaskAPMetric(id2label=id2label)

    def update(self, processor, outputs, items: list[dict]) -> None:
        sizes = [(item["image"].height, item["image"].width) for item in items]
        semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
        for prediction, item in zip(semantic, items):
            self.semantic.update(prediction.cpu(), torch.as_tensor(item["semantic"].astype(np.int64)))
        if self.panoptic is not None:
            panoptic = processor.post_process_panoptic_segmentation(
                outputs, threshold=0.5, label_ids_to_fuse=set(self.stuff_ids), target_sizes=sizes
            )
            for prediction, item in zip(panoptic, items):
                self.panoptic.update(
                    prediction["segmentation"].cpu(), prediction["segments_info"], item["panoptic_ids"], item["segments_info"]
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

        self.semantic.all_reduce(reduce)
        if self.panoptic is not None:
            self.panoptic.all_reduce(reduce)
        if self.instance is not None:
            self.instance.all_gather(gather_object)

    def compute(self) -> dict:
        results = {"semantic": self.semantic.compute()}
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
) -> dict:
    """Run the model over (a shard of) the dataset and return the summed metrics of all processes."""
    was_training = model.training
    model.eval()
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    evaluator = Evaluator(dataset, {int(k): v for k, v in unwrapped.config.id2label.items()})
    device = next(model.parameters()).device
    indices = list(range(len(dataset) if max_items is None else min(max_items, len(dataset))))
    if accelerator is not None:
        indices = indices[accelerator.process_index :: accelerator.num_processes]
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    disabled = not show_progress or (accelerator is not None and not accelerator.is_local_main_process)
    for batch in tqdm(batches, desc="evaluating", disable=disabled):
        items = [dataset[i] for i in batch]
        inputs = processor([item["image"] for item in items], return_tensors="pt").to(device)
        evaluator.update(processor, model(**inputs), items)
    evaluator.gather(accelerator)
    model.train(was_training)
    return evaluator.compute()


def summary(results: dict) -> dict[str, float | None]:
    """The headline numbers: mIoU, pixel accuracy, PQ (things/stuff) and mask AP."""
    flat = {"mean_iou": results["semantic"]["mean_iou"], "pixel_accuracy": results["semantic"]["pixel_accuracy"]}
    if "panoptic" in results:
        flat.update({key: results["panoptic"][key] for key in ("pq", "sq", "rq", "pq_things", "pq_stuff")})
    if "instance" in results:
        flat.update({"mask_ap": results["instance"]["ap"], "mask_ap50": results["instance"]["ap50"]})
    return flat
