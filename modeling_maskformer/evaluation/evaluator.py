"""Evaluate a MaskFormer on a segmentation dataset: mIoU (+ per-class IoU, pixel accuracy), PQ/SQ/RQ (all,
things, stuff) and COCO mask AP where the dataset has instances. Runs sharded over processes with Accelerate.
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
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..per_pixel import PerPixelBaselineForSemanticSegmentation
from ..tta import TestTimeAugmentation, semantic_segmentation_tta
from .metrics import MaskAPMetric, PanopticQualityMetric, SemanticSegmentationMetric

logger = logging.getLogger(__name__)


def load_model_folder(
    model_path: str,
) -> tuple[
    MaskFormerForInstanceSegmentation | PerPixelBaselineForSemanticSegmentation, MaskFormerImageProcessor
]:
    """Our folder (MaskFormer or the per-pixel baseline), or a transformers MaskFormer folder/Hub id converted on
    the fly."""
    config_file = Path(model_path) / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    if model_type == PerPixelBaselineConfig.model_type:
        return (PerPixelBaselineForSemanticSegmentation.from_pretrained(model_path),
                MaskFormerImageProcessor.from_pretrained(model_path))  # fmt: skip
    if model_type == "maskformer":
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
    """Accumulates the metrics the targets support; `update()` per batch, then `compute()`.

    Targets are items in the dataset format (`modeling_maskformer.data`): `semantic` (H, W) class ids with
    `ignore_index`, and for panoptic evaluation `panoptic_ids` (H, W) with `segments_info`. Predictions are
    post-processed at the size of `semantic`. PQ needs `panoptic=True`; mask AP also needs thing classes.
    `panoptic_threshold` / `overlap_threshold`: the panoptic inference's object-mask and overlap thresholds.
    """

    def __init__(
        self,
        id2label: dict[int, str],
        *,
        thing_ids: Iterable[int] = (),
        ignore_index: int = 255,
        panoptic: bool = False,
        panoptic_threshold: float = 0.5,
        overlap_threshold: float = 0.8,
    ):
        self.panoptic_threshold, self.overlap_threshold = panoptic_threshold, overlap_threshold
        self.thing_ids = {int(c) for c in thing_ids}
        self.stuff_ids = sorted(set(id2label) - self.thing_ids)
        self.semantic = SemanticSegmentationMetric(
            len(id2label), ignore_index=ignore_index, id2label=id2label
        )
        self.panoptic = self.instance = None
        if panoptic:
            self.panoptic = PanopticQualityMetric(sorted(self.thing_ids), self.stuff_ids, id2label=id2label)
            if self.thing_ids:
                self.instance = MaskAPMetric(id2label=id2label)

    @classmethod
    def for_dataset(
        cls, dataset, id2label: dict[int, str], *, semantic_only: bool = False, **kwargs
    ) -> Evaluator:
        """The metrics a `SegmentationDataset` supports: mIoU always, PQ and mask AP for panoptic data (unless
        `semantic_only`: a per-pixel classifier has no segments to score)."""
        return cls(id2label, thing_ids=dataset.thing_ids, ignore_index=dataset.ignore_index,
                   panoptic=dataset.task == "panoptic" and not semantic_only, **kwargs)  # fmt: skip

    def update(
        self, processor, outputs, items: list[dict], semantic: list[torch.Tensor] | None = None
    ) -> None:
        """Post-process `outputs` (a batch of len(items)) with `processor` and score it against `items`;
        `semantic`: the class maps when computed otherwise (test-time augmentation)."""
        sizes = [tuple(item["semantic"].shape) for item in items]
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
                keep = [
                    i for i, s in enumerate(prediction["segments_info"]) if s["label_id"] in self.thing_ids
                ]
                masks = prediction["segmentation"]
                self.instance.update(
                    {
                        "masks": masks[keep].cpu().numpy().astype(bool),  # (N, H, W); N may be 0
                        "labels": np.array(
                            [prediction["segments_info"][i]["label_id"] for i in keep], dtype=np.int64
                        ),
                        "scores": np.array(
                            [prediction["segments_info"][i]["score"] for i in keep], dtype=np.float64
                        ),
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


def _single_image_outputs(outputs, index: int) -> dict[str, torch.Tensor]:
    """What post-processing reads of one image of a batch, kept as a batch of one."""
    fields = (
        "class_queries_logits",
        "masks_queries_logits",
        "logits",
        "pixel_mask",
    )  # logits: per-pixel baseline
    return {name: outputs[name][index : index + 1] for name in fields if outputs.get(name) is not None}


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
) -> dict:
    """Run the model over (a shard of) the dataset and return the summed metrics of all processes.

    NOTE: the results do not depend on `batch_size`. MaskFormer, like the original, does not read
    `pixel_mask`: padding an image to a larger batch-mate changes what the model sees (convolutions at the
    border, attention over padded positions), so a mixed-size batch would change its predictions. Each image
    is therefore preprocessed alone (padded only by its own processor rule), and only images of the same
    padded size share a forward pass. Images are grouped within windows of `8 * batch_size` items, and
    metrics are updated in dataset order.

    `tta`: semantic maps (mIoU) from test-time augmentation (`modeling_maskformer.tta`), as the authors' multi-scale
    results; panoptic and instance predictions stay single-scale (the authors' TTA is semantic only).

    A per-pixel classifier (`PerPixelBaselineForSemanticSegmentation`) gets the semantic metrics only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    semantic_only = isinstance(unwrapped, PerPixelBaselineForSemanticSegmentation)
    if semantic_only and dataset.task == "panoptic":
        logger.info(
            "per-pixel classification model: semantic metrics only (PQ and mask AP need mask classification)"
        )
    evaluator = Evaluator.for_dataset(dataset, {int(k): v for k, v in unwrapped.config.id2label.items()},
                                      semantic_only=semantic_only, panoptic_threshold=panoptic_threshold,
                                      overlap_threshold=overlap_threshold)  # fmt: skip
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
            by_size: dict[tuple[int, int], list[int]] = {}
            for position, single in enumerate(inputs):
                by_size.setdefault(tuple(single["pixel_values"].shape[-2:]), []).append(position)
            outputs: dict[int, dict[str, torch.Tensor]] = {}
            for positions in by_size.values():
                for first in range(0, len(positions), batch_size):
                    chunk = positions[first : first + batch_size]
                    batch = {
                        key: torch.cat([inputs[p][key] for p in chunk]).to(device)
                        for key in ("pixel_values", "pixel_mask")
                    }
                    batch_outputs = model(**batch)
                    outputs.update({p: _single_image_outputs(batch_outputs, i) for i, p in enumerate(chunk)})
            for position, item in enumerate(items):
                semantic = None
                if tta is not None:
                    semantic = semantic_segmentation_tta(model, processor, item["image"], tta,
                                                         target_sizes=[item["semantic"].shape])  # fmt: skip
                evaluator.update(processor, outputs.pop(position), [item], semantic=semantic)
                progress.update(1)
    evaluator.gather(accelerator)
    model.train(was_training)
    return evaluator.compute()


def summary(results: dict) -> dict[str, float | None]:
    """The headline numbers: mIoU, pixel accuracy, PQ (things/stuff) and mask AP."""
    flat = {
        "mean_iou": results["semantic"]["mean_iou"],
        "pixel_accuracy": results["semantic"]["pixel_accuracy"],
    }
    if "panoptic" in results:
        flat.update({key: results["panoptic"][key] for key in ("pq", "sq", "rq", "pq_things", "pq_stuff")})
    if "instance" in results:
        flat.update({"mask_ap": results["instance"]["ap"], "mask_ap50": results["instance"]["ap50"]})
    return flat
