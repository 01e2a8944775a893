"""Run an exported folder with onnxruntime or OpenVINO and get the PyTorch model's output type back
(`MaskFormerForInstanceSegmentationOutput` with the logits and `pixel_mask`), so the processor's post-processings
and `pipeline("image-segmentation", model=model, image_processor=processor)` work unchanged."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from transformers import AutoConfig
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

from ..errors import InvalidInputError, MissingInputError
from ..modeling_maskformer import MaskFormerForInstanceSegmentationOutput
from .graph import OUTPUT_NAMES, SIZE_MULTIPLE, require

EXPORT_INFO_FILE = "export.json"


def pad_to_size(pixel_values: Tensor, pixel_mask: Tensor | None, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Zero-pad pixel values (B, 3, h, w) and mask (B, h, w; None: all real) bottom/right to `size` (H, W)."""
    batch, _, height, width = pixel_values.shape
    if height > size[0] or width > size[1]:
        raise InvalidInputError(
            f"pixel_values are {height}x{width} but this graph was exported for a fixed {size[0]}x{size[1]} input: "
            "use the processor saved with the export (it resizes to fit) or export with --dynamic"
        )
    if pixel_mask is None:
        pixel_mask = torch.ones(batch, height, width, dtype=torch.long)
    padding = (0, size[1] - width, 0, size[0] - height)  # (left, right, top, bottom) of the last two dimensions
    return F.pad(pixel_values, padding), F.pad(pixel_mask, padding)


def _onnxruntime_session(path: Path, num_threads: int | None):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda pixel_values: session.run(OUTPUT_NAMES, {"pixel_values": pixel_values})


@functools.cache
def _openvino_core():
    """NOTE: one Core per process. Each Core's CPU plugin installs an alternate signal stack on the compiling thread;
    two Cores released out of order leave it in freed memory (OpenVINO 2026.4), so Ctrl-C then segfaults."""
    return require("openvino").Core()


def _openvino_session(path: Path, num_threads: int | None, inference_precision: str):
    core = _openvino_core()
    config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY"}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()

    def run(pixel_values: np.ndarray) -> list[np.ndarray]:
        results = request.infer({"pixel_values": pixel_values})
        return [np.array(results[compiled.output(name)]) for name in OUTPUT_NAMES]

    return run


class MaskFormerRuntimeModel:
    """An `export_folder` graph behind the PyTorch model's call signature (CPU, inference only)."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, session, *, config, export_info: dict, precision: str):
        self.session, self.config, self.export_info, self.precision = session, config, export_info, precision
        size = export_info["input"]
        self.fixed_size = None if size["dynamic"] else (size["height"], size["width"])

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        precision: Literal["fp32", "int8"] = "fp32",
        num_threads: int | None = None,
        openvino_inference_precision: Literal["f32", "bf16"] = "f32",
    ) -> MaskFormerRuntimeModel:
        """`openvino_inference_precision="bf16"`: fp32 graphs run in bf16 where the CPU has it (faster, less exact)."""
        folder = Path(folder)
        info_path = folder / EXPORT_INFO_FILE
        if not info_path.is_file():
            raise MissingInputError(f"{info_path} not found: {folder} is not a folder written by scripts/export.py")
        info = json.loads(info_path.read_text())
        files = info["files"]
        if precision not in files:
            raise InvalidInputError(
                f"{folder} has no {precision!r} graph (it has {sorted(files)}); export with --int8 to add one"
            )
        path = folder / files[precision]
        if info["format"] not in ("onnx", "openvino"):
            raise InvalidInputError(f"{info_path}: unknown format {info['format']!r} (expected 'onnx' or 'openvino')")
        if info["format"] == "openvino":
            session = _openvino_session(path, num_threads, openvino_inference_precision)
        else:
            session = _onnxruntime_session(path, num_threads)
        # NOTE: our config class is registered with AutoConfig when the package is imported.
        config = AutoConfig.from_pretrained(folder)
        return cls(session, config=config, export_info=info, precision=precision)

    def __call__(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, **unused
    ) -> MaskFormerForInstanceSegmentationOutput:
        pixel_values = torch.as_tensor(pixel_values)
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise InvalidInputError(f"pixel_values must be (B, 3, H, W), got shape {tuple(pixel_values.shape)}")
        if self.fixed_size is not None:
            pixel_values, pixel_mask = pad_to_size(pixel_values, pixel_mask, self.fixed_size)
        elif any(side % SIZE_MULTIPLE for side in pixel_values.shape[-2:]):
            raise InvalidInputError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])}: the dynamic graph needs multiples of 32"
            )
        class_logits, mask_logits = self.session(pixel_values.detach().float().contiguous().numpy())
        return MaskFormerForInstanceSegmentationOutput(
            class_queries_logits=torch.from_numpy(class_logits),
            masks_queries_logits=torch.from_numpy(mask_logits),
            pixel_mask=pixel_mask,
        )

    forward = __call__

    # The few nn.Module/PreTrainedModel methods transformers' pipeline calls.
    def to(self, device) -> MaskFormerRuntimeModel:
        if torch.device(device).type != "cpu":
            raise InvalidInputError(f"MaskFormerRuntimeModel runs on the CPU only, not {device}")
        return self

    def eval(self) -> MaskFormerRuntimeModel:
        return self

    def can_generate(self) -> bool:
        return False

    def __repr__(self) -> str:
        size = "dynamic" if self.fixed_size is None else "x".join(map(str, self.fixed_size))
        return f"{type(self).__name__}(format={self.export_info['format']!r}, precision={self.precision!r}, {size})"


class RuntimeSegmentationPipeline(ImageSegmentationPipeline):
    """transformers' image-segmentation pipeline, without its complaint that the wrapper is no registered model."""

    def check_model_type(self, supported_models):
        if not isinstance(self.model, MaskFormerRuntimeModel):
            super().check_model_type(supported_models)
