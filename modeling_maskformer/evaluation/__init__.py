"""Segmentation metrics (mIoU, PQ, COCO mask AP), the evaluator that runs a model over a dataset, a
`transformers.Trainer` and its `compute_metrics`, and the `evaluate` metric modules shipped with the package.

    from modeling_maskformer.evaluation import evaluate_model, summary

    results = evaluate_model(model, processor, dataset)  # {"semantic": ..., "panoptic": ..., "instance": ...}
    print(summary(results))  # mean_iou, pixel_accuracy, pq, pq_things, pq_stuff, mask_ap, ...

    mean_iou = load_metric("mean_iou")  # an evaluate.EvaluationModule, loaded offline
"""

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
