"""The `evaluate` modules shipped in `metric_modules/<name>/` (an `evaluate` community metric's layout, ready for a
Space): each script imports its class from here, which computes with `metrics.py` and takes its description, usage
and citation from the folder's README card. `load_metric(name)` loads one offline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np
import torch

from ..errors import InvalidInputError
from .metrics import (
    MaskAPMetric,
    PanopticQualityMetric,
    class_scores,
    confusion_matrix,
    encode_instances,
    read_segment,
)

METRIC_MODULES = Path(__file__).resolve().parent / "metric_modules"
METRIC_NAMES = ("mean_iou", "panoptic_quality", "mask_ap")


def metric_module_path(name: str) -> Path:
    if name not in METRIC_NAMES:
        raise InvalidInputError(f"unknown metric {name!r}; the package ships {list(METRIC_NAMES)}")
    return METRIC_MODULES / name


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """`evaluate.load` of a shipped metric module from its folder (no network)."""
    return evaluate.load(str(metric_module_path(name)), **kwargs)


def _card_info(name: str, features: dict) -> evaluate.MetricInfo:
    """The module's info from its README card's sections, without the Markdown code fences."""
    card = re.sub(r"^```\w*\n", "", (metric_module_path(name) / "README.md").read_text(), flags=re.MULTILINE)
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", card, flags=re.MULTILINE | re.DOTALL))
    return evaluate.MetricInfo(
        description=sections["Metric Description"].strip(),
        citation=sections["Citation"].strip(),
        inputs_description=sections["How to Use"].strip(),
        features=datasets.Features(features),
        reference_urls=re.findall(r"https?://\S+", sections["Further References"]),
    )


_INTS, _MAP = datasets.Sequence(datasets.Value("int64")), datasets.Sequence(datasets.Sequence(datasets.Value("int64")))


def _each_image(predictions: Iterable, references: Iterable, update: Callable[[Any, Any], Any]) -> list:
    results = []
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        try:
            results.append(update(prediction, reference))
        except ValueError as error:
            raise InvalidInputError(f"image {index}: {error}") from error
    return results


class MeanIou(evaluate.Metric):
    """The canonical `mean_iou` module's arguments and results, computed by `metrics.confusion_matrix`."""

    def _info(self) -> evaluate.MetricInfo:
        rows = datasets.Sequence(datasets.Sequence(datasets.Value("uint16")))  # one image per example
        return _card_info("mean_iou", {"predictions": rows, "references": rows})

    def _compute(
        self, predictions, references, num_labels, ignore_index, nan_to_num=None, label_map=None, reduce_labels=False
    ):
        if not isinstance(num_labels, int | np.integer) or num_labels < 1:
            raise InvalidInputError(f"num_labels must be a positive int, got {num_labels!r}")

        def confusion(prediction, reference) -> torch.Tensor:
            reference = np.asarray(reference, dtype=np.int64)
            relabelled = reference.copy()
            for old, new in (label_map or {}).items():  # all pairs at once: {1: 2, 2: 1} swaps
                relabelled[reference == old] = new
            if reduce_labels:  # ADE20K's convention: 0 is ignored (255), k becomes k - 1
                relabelled = np.where((relabelled == 0) | (relabelled == 255), 255, relabelled - 1)
            return confusion_matrix(np.asarray(prediction, dtype=np.int64), relabelled, num_labels, ignore_index)

        empty = torch.zeros(num_labels + 1, num_labels + 1, dtype=torch.long)
        total = sum(_each_image(predictions, references, confusion), empty)  # (K+1, K+1)
        iou, accuracy, overall = class_scores(total)
        names = ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy")
        values = (iou.nanmean(), accuracy.nanmean(), overall, iou, accuracy)
        results = {name: value.numpy()[()] for name, value in zip(names, values)}  # numpy, as the canonical module
        return results if nan_to_num is None else {k: np.nan_to_num(v, nan=nan_to_num) for k, v in results.items()}


class _StoredInputs(evaluate.Metric):
    """Inputs brought to the stored schema by the subclass's `_store(image, is_prediction)` before Arrow holds
    them, so that other formats and extra keys are accepted.

    NOTE: `evaluate.EvaluationModule.__init__` appends the card's usage to the docstrings of `add_batch` and `add`,
    so they must have one."""

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images."""
        predictions = None if predictions is None else [self._store(x, True) for x in predictions]
        references = None if references is None else [self._store(x, False) for x in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image."""
        prediction = None if prediction is None else self._store(prediction, True)
        reference = None if reference is None else self._store(reference, False)
        super().add(prediction=prediction, reference=reference, **kwargs)


class PanopticQuality(_StoredInputs):
    """panopticapi's `pq_compute` numbers, computed by `metrics.PanopticQualityMetric(strict=True)`."""

    def _info(self) -> evaluate.MetricInfo:
        segment = {"id": datasets.Value("int64"), "category_id": datasets.Value("int64")}
        crowd = segment | {"iscrowd": datasets.Value("int64")}
        return _card_info(
            "panoptic_quality",
            {
                "predictions": {"segmentation": _MAP, "segments_info": [segment]},
                "references": {"segmentation": _MAP, "segments_info": [crowd]},
            },
        )

    def _store(self, image: Mapping, is_prediction: bool) -> dict:
        segments = [dict(zip(("id", "category_id"), read_segment(s))) for s in image["segments_info"]]
        for segment, given in zip(segments, image["segments_info"]) if not is_prediction else ():
            segment["iscrowd"] = int(given.get("iscrowd", 0))
        segmentation = np.asarray(torch.as_tensor(image["segmentation"]).cpu(), dtype=np.int64)
        return {"segmentation": segmentation, "segments_info": segments}

    def _compute(self, predictions, references, categories: list[Mapping]) -> dict[str, Any]:
        if not all("id" in c and "isthing" in c for c in categories):
            raise InvalidInputError(f"each category needs 'id' and 'isthing', got {categories}")
        things = [c["id"] for c in categories if c["isthing"]]
        metric = PanopticQualityMetric(things, [c["id"] for c in categories if not c["isthing"]], strict=True)
        _each_image(
            predictions,
            references,
            lambda p, r: metric.update(p["segmentation"], p["segments_info"], r["segmentation"], r["segments_info"]),
        )
        results = metric.compute()
        per_category = {
            int(category): {k: v[k] or 0.0 for k in ("pq", "sq", "rq")} | {k: v[k] for k in ("tp", "fp", "fn")}
            for category, v in results.pop("per_class").items()
        }  # 0.0 for a category that never occurs, as panopticapi reports it
        return results | {"per_category": per_category}


class MaskAp(_StoredInputs):
    """pycocotools' `COCOeval(iouType="segm")` numbers, computed by `metrics.MaskAPMetric`; masks are stored as
    COCO RLEs."""

    def _info(self) -> evaluate.MetricInfo:
        rle = [{"size": _INTS, "counts": datasets.Value("string")}]
        scores = datasets.Sequence(datasets.Value("float64"))
        return _card_info(
            "mask_ap",
            {
                "predictions": {"masks": rle, "labels": _INTS, "scores": scores},
                "references": {"masks": rle, "labels": _INTS, "iscrowd": _INTS},
            },
        )

    def _store(self, image: Mapping, is_prediction: bool) -> dict:
        key = "scores" if is_prediction else "iscrowd"
        rles, labels, values = encode_instances(image, key)
        for rle in rles:
            rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        return {"masks": rles, "labels": labels, key: values}

    def _compute(self, predictions, references, max_detections: int = 100) -> dict[str, Any]:
        metric = MaskAPMetric(max_detections=max_detections)
        _each_image(predictions, references, metric.update)
        results = metric.compute()
        per_category = {int(k): v for k, v in results.pop("per_class_ap").items()}
        return results | {"per_category_ap": per_category}
