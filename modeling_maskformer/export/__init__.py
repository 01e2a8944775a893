"""Deployment: ONNX (onnxruntime) or OpenVINO IR export with int8 variants, and a runtime wrapper returning the
PyTorch model's output type (`docs/deploy.md`). Needs the `[export]` extra."""

from .folder import PARITY_TOLERANCE, export_folder
from .runtime import MaskFormerRuntimeModel, RuntimeSegmentationPipeline, pad_to_size

__all__ = ["PARITY_TOLERANCE", "MaskFormerRuntimeModel", "RuntimeSegmentationPipeline", "export_folder", "pad_to_size"]
