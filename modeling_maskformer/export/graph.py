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

from ..errors import InvalidInputError, MissingDependencyError

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


def check_export_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < 64 or value % SIZE_MULTIPLE:
            raise InvalidInputError(
                f"export {name}={value!r}: must be an integer multiple of {SIZE_MULTIPLE}, at least 64 "
                "(the processor pads inputs to multiples of 32; the stride-32 map needs at least 2x2 pixels)"
            )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    height: int = 512,
    width: int = 512,
    dynamic: bool = False,
    opset=DEFAULT_OPSET,
) -> Path:
    """An ONNX file with weights inside; the batch is dynamic, and with `dynamic=True` height and width too."""
    check_export_size(height, width)
    require("onnxscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return path


def convert_onnx_to_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    ov = require("openvino")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def quantize_onnx(
    onnx_path: str | Path,
    output_path: str | Path,
    *,
    calibration: Sequence[np.ndarray] | None = None,
    mode: Literal["static", "dynamic"] = "static",
) -> Path:
    """int8 ONNX: `static` QDQ with activations calibrated on `calibration` batches, or `dynamic` ranges."""
    quantization = require("onnxruntime.quantization")
    output_path = Path(output_path)
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
                batches = iter(calibration)

                def get_next(self):
                    batch = next(self.batches, None)
                    return None if batch is None else {"pixel_values": batch}

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
    return output_path


def quantize_openvino(xml_path: str | Path, output_path: str | Path, *, calibration: Sequence[np.ndarray]) -> Path:
    nncf, ov = require("nncf"), require("openvino")
    dataset = nncf.Dataset(list(calibration), lambda batch: {"pixel_values": batch})
    quantized = nncf.quantize(ov.Core().read_model(str(xml_path)), dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(output_path), compress_to_fp16=False)
    return Path(output_path)
