"""Segmentation metrics (mIoU, PQ, COCO mask AP), the evaluator that runs a model over a dataset
(`summary(evaluate_model(model, processor, dataset))`), a `transformers.Trainer` with its `compute_metrics`, and the
`evaluate` metric modules shipped with the package (`load_metric("mean_iou")`, offline)."""

from .evaluator import Evaluator, evaluate_model, instance_ground_truth, load_model_folder, summary
from .hub_metrics import METRIC_NAMES, load_metric, metric_module_path
from .metrics import MaskAPMetric, PanopticQualityMetric, SemanticSegmentationMetric, format_table
from .trainer_metrics import SegmentationMetrics, SegmentationTrainer

__all__ = [
    "METRIC_NAMES",
    "Evaluator",
    "MaskAPMetric",
    "PanopticQualityMetric",
    "SegmentationMetrics",
    "SegmentationTrainer",
    "SemanticSegmentationMetric",
    "evaluate_model",
    "format_table",
    "instance_ground_truth",
    "load_metric",
    "load_model_folder",
    "metric_module_path",
    "summary",
]
