"""Deployment: export a MaskFormer to ONNX (onnxruntime) or OpenVINO IR, int8 variants, and a runtime wrapper
that returns the PyTorch model's output type. Needs the `[export]` extra (onnx, onnxscript, onnxruntime,
openvino, nncf).

    from modeling_maskformer.export import export_folder, MaskFormerRuntimeModel
    export_folder("outputs/demo", "exported/", format="onnx", height=512, width=512)
    model = MaskFormerRuntimeModel.from_pretrained("exported/")
"""

from .folder import PARITY_TOLERANCE, default_export_size, export_folder, measure_parity
from .graph import LogitsOnly, convert_onnx_to_openvino, export_onnx
from .quantization import calibration_batches, quantize_onnx, quantize_openvino
from .runtime import MaskFormerRuntimeModel, RuntimeSegmentationPipeline, pad_to_size

__all__ = [
    "PARITY_TOLERANCE",
    "LogitsOnly",
    "MaskFormerRuntimeModel",
    "RuntimeSegmentationPipeline",
    "calibration_batches",
    "convert_onnx_to_openvino",
    "default_export_size",
    "export_folder",
    "export_onnx",
    "measure_parity",
    "pad_to_size",
    "quantize_onnx",
    "quantize_openvino",
]
