"""Mean IoU for semantic segmentation, with the arguments and results of the Hub's canonical `mean_iou`.

Self-contained (numpy, datasets, evaluate) so that this folder can be pushed to the Hub as a community
metric. Load it offline with `modeling_maskformer.evaluation.load_metric("mean_iou")` or
`evaluate.load("<path to this folder>")`.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_CITATION = """\
@software{MMSegmentation_Contributors_OpenMMLab_Semantic_Segmentation_2020,
  author = {{MMSegmentation Contributors}},
  license = {Apache-2.0},
  month = {7},
  title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
  url = {https://github.com/open-mmlab/mmsegmentation},
  year = {2020}
}
"""

_DESCRIPTION = """\
Intersection over union (IoU, Jaccard index) per class, accumulated over all images: the pixels of a class
that prediction and ground truth share, divided by the pixels either assigns to it. Mean IoU averages the
classes whose IoU is defined (union > 0). Also reports the per-class and mean accuracy (recall) and the
overall pixel accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`): predicted class maps, one (height, width) integer array per image.
    references (`List[ndarray]`): ground-truth class maps of the same sizes.
    num_labels (`int`): number of classes K; labels outside [0, K) are counted for no class.
    ignore_index (`int`): ground-truth value of pixels left out of every count (e.g. 255).
    nan_to_num (`int`, *optional*): replace undefined (NaN) values of every result by this number.
    label_map (`dict`, *optional*): {old: new} relabelling of the references, applied before
        `reduce_labels` (all pairs at once, so {1: 2, 2: 1} swaps).
    reduce_labels (`bool`, *optional*, defaults to `False`): ADE20K convention: ground truth 0 becomes 255
        (ignored with `ignore_index=255`) and every other label k becomes k - 1 (255 stays 255).
Returns:
    `mean_iou` (`float`): mean of the defined per-class IoUs.
    `mean_accuracy` (`float`): mean of the defined per-class accuracies.
    `overall_accuracy` (`float`): correctly labelled pixels over all counted ground-truth pixels.
    `per_category_iou` (`ndarray` of shape (num_labels,)): IoU per class, NaN where undefined.
    `per_category_accuracy` (`ndarray` of shape (num_labels,)): accuracy per class, NaN where undefined.
Examples:
    >>> import numpy as np
    >>> from modeling_maskformer.evaluation import load_metric
    >>> mean_iou = load_metric("mean_iou")
    >>> predicted = [np.array([[1, 2], [3, 4], [5, 255]]), np.array([[2, 7], [9, 2], [3, 6]])]
    >>> ground_truth = [np.array([[0, 3], [5, 4], [6, 255]]), np.array([[1, 7], [9, 2], [3, 6]])]
    >>> results = mean_iou.compute(predictions=predicted, references=ground_truth, num_labels=10, ignore_index=255)
    >>> round(float(results["mean_iou"]), 4), round(float(results["overall_accuracy"]), 4)
    (0.463, 0.5455)
"""


def _class_areas(values: np.ndarray, num_labels: int) -> np.ndarray:
    """Pixel count per class 0..K-1 of a flat integer array; values outside that range count for nothing."""
    values = values[(values >= 0) & (values < num_labels)]
    return np.bincount(values, minlength=num_labels).astype(np.float64)


def _relabel(labels: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    """Every pair of `label_map` applied at once, through a lookup table (labels are uint16, so >= 0)."""
    top = int(labels.max(initial=0))
    lookup = np.arange(top + 1, dtype=np.int64)
    for old, new in label_map.items():
        if 0 <= int(old) <= top:
            lookup[int(old)] = int(new)
    return lookup[labels]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIou(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # one image per example: rows of pixels, as in the canonical module
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                }
            ),
            reference_urls=["https://github.com/open-mmlab/mmsegmentation"],
        )

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int,
        nan_to_num: int | None = None,
        label_map: dict[int, int] | None = None,
        reduce_labels: bool = False,
    ):
        if not isinstance(num_labels, int | np.integer) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        intersection, union, predicted, labelled = (np.zeros(num_labels) for _ in range(4))
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction = np.asarray(prediction, dtype=np.int64)
            reference = np.asarray(reference, dtype=np.int64)
            if prediction.shape != reference.shape:
                raise ValueError(
                    f"image {index}: prediction {prediction.shape} and reference {reference.shape} differ in shape"
                )
            if label_map:
                reference = _relabel(reference, label_map)
            if reduce_labels:
                reduced = reference - 1
                reference = np.where((reference == 0) | (reduced == 254), 255, reduced)
            counted = reference != ignore_index
            prediction, reference = prediction[counted], reference[counted]
            area_intersection = _class_areas(prediction[prediction == reference], num_labels)
            area_predicted = _class_areas(prediction, num_labels)
            area_labelled = _class_areas(reference, num_labels)
            intersection += area_intersection
            predicted += area_predicted
            labelled += area_labelled
            union += area_predicted + area_labelled - area_intersection

        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersection / union
            accuracy = intersection / labelled
            overall = intersection.sum() / labelled.sum()
        results = {
            "mean_iou": np.nanmean(iou) if not np.isnan(iou).all() else np.float64("nan"),
            "mean_accuracy": np.nanmean(accuracy) if not np.isnan(accuracy).all() else np.float64("nan"),
            "overall_accuracy": overall,
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
        if nan_to_num is not None:
            results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
        return results
