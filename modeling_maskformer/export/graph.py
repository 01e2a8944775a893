"""The exported graph: pixel_values (B, 3, H, W) -> class logits (B, Q, K+1), mask logits (B, Q, H/4, W/4).

ONNX through `torch.onnx.export(dynamo=True)` (torch.export, then onnxscript), OpenVINO IR converted from
that ONNX file, so both runtimes run the same graph.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError, MissingDependencyError

INPUT_NAMES = ["pixel_values"]
OUTPUT_NAMES = ["class_queries_logits", "masks_queries_logits"]
# NOTE: opset 18 is what torch's dynamo exporter emits natively (einsum needs >= 12); OpenVINO and
# onnxruntime both read it.
DEFAULT_OPSET = 18
SIZE_MULTIPLE = 32  # the processor pads to multiples of 32 (the backbone's stride)


def require(module: str):
    """Import an optional dependency of the export (onnxscript, onnxruntime, openvino, nncf), or say how to
    install it. NOTE: imported when used, not with the package: they are heavy and only this feature needs them."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(f"export needs {module}: pip install -e '.[export]' ({error})") from error


class LogitsOnly(nn.Module):
    """The model's inference path with plain tensor outputs (no loss, no auxiliary heads, no dataclass).

    The model ignores `pixel_mask` in its forward pass (padding is cropped in post-processing), so the graph
    takes only `pixel_values`; the runtime wrapper echoes the mask back.
    """

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
    """Write `model` (a MaskFormerForInstanceSegmentation) as an ONNX file with weights inside.

    The batch dimension is always dynamic. With `dynamic=True` height and width are too (any multiple of 32);
    otherwise the graph accepts exactly (height, width) and the runtime wrapper pads smaller inputs.
    """
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
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_shapes={"pixel_values": dims},
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    return path


def convert_onnx_to_openvino(onnx_path: str | Path, xml_path: str | Path, *, compress_to_fp16: bool = False) -> Path:
    """OpenVINO IR (`.xml` + `.bin`) of an ONNX file; fp32 weights unless `compress_to_fp16`."""
    ov = require("openvino")
    Path(xml_path).parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=compress_to_fp16)
    return Path(xml_path)
