"""COCO mask AP as an `evaluate` module (README.md): the metric of `modeling_maskformer.evaluation.metrics`."""

from modeling_maskformer.evaluation.hub_metrics import MaskAp  # noqa: F401
