"""Segmentation metrics (mIoU, PQ, COCO mask AP) and the evaluator that runs a model over a dataset.

    from modeling_maskformer.evaluation import evaluate_model, summary

    results = evaluate_model(model, processor, dataset)  # {"semantic": ..., "panoptic": ..., "instance": ...}
    print(summary(results))  # mean_iou, pixel_accuracy, pq, pq_things, pq_stuff, mask_ap, ...
"""

from .evaluator import Evaluator, evaluate_model, instance_ground_truth, load_model_folder, summary
from .metrics import MaskAPMetric, PanopticQualityMetric, SemanticSegmentationMetric, format_table

__all__ = [
    "Evaluator",
    "MaskAPMetric",
    "PanopticQualityMetric",
    "SemanticSegmentationMetric",
    "evaluate_model",
    "format_table",
    "instance_ground_truth",
    "load_model_folder",
    "summary",
]
