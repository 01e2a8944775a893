"""The exported graphs: pixel_values (B, 3, H, W) -> class logits (B, Q, K+1), mask logits (B, Q, H/4, W/4).

ONNX through `torch.onnx.export(dynamo=True)`; OpenVINO IR converted from that ONNX file, so both runtimes run the
same graph. int8 variants: onnxruntime static (QDQ, calibrated) or dynamic quantisation; OpenVINO with NNCF.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import MissingDependencyError

OUTPUT_NAMES = ["class_queries_logits", "masks_queries_logits"]
# NOTE: opset 18 is what torch's dynamo exporter emits natively (einsum needs >= 12); OpenVINO and
# onnxruntime both read it.
DEFAULT_OPSET = 18
SIZE_MULTIPLE = 32  # the processor pads to multiples of 32 (the backbone's stride)
# NOTE: the heavy arithmetic is in Conv and MatMul; quantising element-wise ops, softmax or normalisation
# costs accuracy and saves little time.
ONNX_OPS_TO_QUANTIZE = ["Conv", "MatMul", "Gemm"]


def require(module: str):
    """Import an optional export dependency (NOTE: when used: they are heavy), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(f"export needs {module}: pip install -e '.[export]' ({error})") from error


class LogitsOnly(nn.Module):
    """The model's inference path with plain tensor outputs. The model ignores `pixel_mask` (padding is cropped in
    post-processing), so the graph takes only `pixel_values`; the runtime wrapper echoes the mask back."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.model(pixel_values, output_auxiliary_logits=False)
        return outputs.class_queries_logits, outputs.masks_queries_logits


def export_onnx(model: nn.Module, path: Path, *, height: int, width: int, dynamic: bool, opset: int) -> None:
    """An ONNX file with weights inside; the batch is dynamic, and with `dynamic=True` height and width too."""
    require("onnxscript")
    # NOTE: a batch of 2 in the example: torch.export specialises a dimension traced at size 1.
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic:
        dims[2] = SIZE_MULTIPLE * torch.export.Dim("height_blocks", min=2, max=512)
        dims[3] = SIZE_MULTIPLE * torch.export.Dim("width_blocks", min=2, max=512)
    with torch.no_grad():
        program = torch.onnx.export(
            LogitsOnly(model).eval(),
            (example,),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=OUTPUT_NAMES,
            dynamic_shapes={"pixel_values": dims},
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def quantize_onnx(
    onnx_path: Path, output_path: Path, *, calibration: Sequence[np.ndarray] | None, mode: Literal["static", "dynamic"]
) -> None:
    """int8 ONNX: `static` QDQ with activations calibrated on `calibration` batches, or `dynamic` ranges."""
    quantization = require("onnxruntime.quantization")
    prepared = output_path.with_name(output_path.stem + ".prepared.onnx")
    quantization.quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    int8 = {"per_channel": True, "weight_type": quantization.QuantType.QInt8}
    try:
        if mode == "dynamic":
            quantization.quantize_dynamic(
                str(prepared), str(output_path), op_types_to_quantize=["MatMul", "Gemm"], **int8
            )
        else:

            class Reader(quantization.CalibrationDataReader):
                feeds = iter([{"pixel_values": batch} for batch in calibration])

                def get_next(self):
                    return next(self.feeds, None)

            quantization.quantize_static(
                str(prepared),
                str(output_path),
                Reader(),
                quant_format=quantization.QuantFormat.QDQ,
                op_types_to_quantize=ONNX_OPS_TO_QUANTIZE,
                activation_type=quantization.QuantType.QUInt8,
                **int8,
            )
    finally:
        prepared.unlink(missing_ok=True)


def quantize_openvino(xml_path: Path, output_path: Path, *, calibration: Sequence[np.ndarray]) -> None:
    nncf, ov = require("nncf"), require("openvino")
    dataset = nncf.Dataset(list(calibration), lambda batch: {"pixel_values": batch})
    quantized = nncf.quantize(ov.Core().read_model(str(xml_path)), dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(output_path), compress_to_fp16=False)
