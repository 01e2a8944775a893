"""int8 variants of an exported graph: onnxruntime static (QDQ, calibrated) or dynamic quantisation, and
OpenVINO post-training quantisation with NNCF (calibrated).

Calibration data: `pixel_values` arrays (B, 3, H, W) float32 at the graph's input size, from the model's own
processor (`calibration_batches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InvalidInputError
from .graph import require
from .runtime import pad_to_size

# NOTE: the heavy arithmetic is in Conv and MatMul; quantising element-wise ops, softmax or normalisation
# costs accuracy and saves little time.
ONNX_OPS_TO_QUANTIZE = ["Conv", "MatMul", "Gemm"]


def calibration_batches(images: Sequence, processor, *, height: int, width: int, batch_size: int = 1) -> list:
    """The processor's pixel_values for `images` (PIL images), zero-padded bottom/right to (height, width)
    as the runtime wrapper pads them; images that come out larger than that are an error."""
    batches = []
    for start in range(0, len(images), batch_size):
        inputs = processor(list(images[start : start + batch_size]), return_tensors="pt")
        pixel_values, _ = pad_to_size(inputs["pixel_values"], inputs["pixel_mask"], (height, width))
        batches.append(pixel_values.numpy().astype(np.float32))
    if not batches:
        raise InvalidInputError("calibration needs at least one image")
    return batches


def quantize_onnx(
    onnx_path: str | Path,
    output_path: str | Path,
    *,
    calibration: Sequence[np.ndarray] | None = None,
    mode: Literal["static", "dynamic"] = "static",
) -> Path:
    """int8 ONNX file. `static`: QDQ with per-channel int8 weights and uint8 activations calibrated (MinMax) on
    `calibration`; `dynamic`: int8 weights, activation ranges computed at run time (no calibration data)."""
    if mode not in ("static", "dynamic"):
        raise InvalidInputError(f"quantize_onnx: mode must be 'static' or 'dynamic', got {mode!r}")
    if mode == "static" and calibration is None:
        raise InvalidInputError("quantize_onnx(mode='static') needs calibration batches (or use mode='dynamic')")
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
    """int8 OpenVINO IR by NNCF post-training quantisation, calibrated on `calibration`."""
    if not calibration:
        raise InvalidInputError("quantize_openvino needs calibration batches")
    nncf, ov = require("nncf"), require("openvino")
    dataset = nncf.Dataset(list(calibration), lambda batch: {"pixel_values": batch})
    quantized = nncf.quantize(ov.Core().read_model(str(xml_path)), dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(output_path), compress_to_fp16=False)
    return Path(output_path)
