"""Deployment: export a MaskFormer to ONNX (onnxruntime) or OpenVINO IR, int8 variants, and a runtime wrapper
that returns the PyTorch model's output type. Needs the `[export]` extra (onnx, onnxscript, onnxruntime,
openvino, nncf).

    from modeling_maskformer.export import export_folder, MaskFormerRuntimeModel
    export_folder("outputs/demo", "exported/", format="onnx", height=512, width=512)
    model = MaskFormerRuntimeModel.from_pretrained("exported/")
"""

from .folder import PARITY_TOLERANCE, export_folder
from .runtime import MaskFormerRuntimeModel, RuntimeSegmentationPipeline, pad_to_size

__all__ = ["PARITY_TOLERANCE", "MaskFormerRuntimeModel", "RuntimeSegmentationPipeline", "export_folder", "pad_to_size"]
