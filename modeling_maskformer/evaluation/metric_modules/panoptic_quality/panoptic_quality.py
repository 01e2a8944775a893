"""Panoptic quality, the `evaluate` module of the maskformer-hf package (README.md): it imports the metric the package's
own evaluation uses (modeling_maskformer.evaluation.metrics)."""

from modeling_maskformer.evaluation.hub_metrics import PanopticQuality  # noqa: F401
