"""`export_folder`: a self-contained folder with the graph(s), config.json (id2label), the processor config,
`export.json` (format, input size, files, measured parity) and a README on how to use it."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from ..errors import InvalidInputError
from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from .graph import (
    DEFAULT_OPSET,
    OUTPUT_NAMES,
    SIZE_MULTIPLE,
    export_onnx,
    quantize_onnx,
    quantize_openvino,
    require,
)
from .runtime import EXPORT_INFO_FILE, MaskFormerRuntimeModel, pad_to_size

PARITY_TOLERANCE = 1e-3  # max absolute logit difference accepted between the fp32 graph and PyTorch
FILES = {
    "onnx": {"fp32": "model.onnx", "int8": "model_int8.onnx"},
    "openvino": {"fp32": "openvino_model.xml", "int8": "openvino_model_int8.xml"},
}
README = """# MaskFormer, exported ({format}, {size})

Files: {files}; `config.json` (architecture and `id2label`), `preprocessor_config.json` (the image processor,
{resize_note}), `export.json` (input size, opset, parity measured at export time).

```python
from PIL import Image
from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.export import MaskFormerRuntimeModel

model = MaskFormerRuntimeModel.from_pretrained("{folder}")      # precision="int8" for the quantised graph
processor = MaskFormerImageProcessor.from_pretrained("{folder}")
image = Image.open("scene.jpg").convert("RGB")
outputs = model(**processor(image, return_tensors="pt"))
semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
```

The graph maps `pixel_values` (B, 3, H, W) float32, normalised by the processor, to `class_queries_logits`
(B, Q, K+1; the last class is "no object") and `masks_queries_logits` (B, Q, H/4, W/4). {input_note}
Measured at export: max |logit difference| to PyTorch {parity}.
"""
DYNAMIC_NOTE = "H and W may be any multiples of 32 (the processor pads to them); the batch size is free."
FIXED_NOTE = (
    "The graph takes exactly {size}; the runtime wrapper zero-pads smaller inputs bottom/right (as the processor "
    "pads a batch) and post-processing crops the padding. The batch size is free."
)


def export_folder(
    model: MaskFormerForInstanceSegmentation | str | Path,
    output_dir: str | Path,
    *,
    processor=None,
    format: Literal["onnx", "openvino"] = "onnx",
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
    int8: bool = False,
    calibration_images: Sequence | None = None,
    onnx_int8_mode: Literal["static", "dynamic"] = "static",
    opset: int = DEFAULT_OPSET,
    check_parity: bool = True,
) -> Path:
    """Export `model` (or the folder/Hub id it is loaded from). Fixed size (default): the graph takes `height`×`width`
    and the saved processor resizes every image to fit; `dynamic=True`: any multiple of 32. `int8` adds a quantised
    graph calibrated on `calibration_images` (PIL; needed for OpenVINO and static ONNX quantisation)."""
    if format not in FILES:
        raise InvalidInputError(f"format must be 'onnx' or 'openvino', got {format!r}")
    if isinstance(model, (str, Path)):
        processor = processor or MaskFormerImageProcessor.from_pretrained(model)
        model = MaskFormerForInstanceSegmentation.from_pretrained(model)
    if processor is None:
        raise InvalidInputError("export_folder needs the image processor when given a model object (processor=...)")
    model = model.eval()
    if height is None or width is None:  # a square covering the processor's shortest edge, rounded up to 32
        side = processor.size.get("shortest_edge") or processor.size.get("height") or 512
        height = width = max(64, -(-int(side) // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < 64 or value % SIZE_MULTIPLE:
            raise InvalidInputError(
                f"export {name}={value!r}: must be an integer multiple of {SIZE_MULTIPLE}, at least 64 "
                "(the processor pads inputs to multiples of 32; the stride-32 map needs at least 2x2 pixels)"
            )
    if onnx_int8_mode not in ("static", "dynamic"):
        raise InvalidInputError(f"onnx_int8_mode must be 'static' or 'dynamic', got {onnx_int8_mode!r}")
    if int8 and not calibration_images and not (format == "onnx" and onnx_int8_mode == "dynamic"):
        method = "NNCF" if format == "openvino" else "static"
        raise InvalidInputError(f"int8 for {format} ({method} quantisation) needs calibration images (none given)")

    output_dir, files = Path(output_dir), FILES[format]
    output_dir.mkdir(parents=True, exist_ok=True)
    if not dynamic:
        side = {"shortest_edge": min(height, width), "longest_edge": min(height, width)}
        processor = MaskFormerImageProcessor.from_dict({**processor.to_dict(), "size": side})
    model.config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)

    onnx_path, fp32, int8_path = (output_dir / name for name in (FILES["onnx"]["fp32"], *files.values()))
    export_onnx(model, onnx_path, height=height, width=width, dynamic=dynamic, opset=opset)
    calibration = None
    if int8 and calibration_images:  # padded as the runtime wrapper pads (a larger image: an error)
        inputs = [processor([image], return_tensors="pt") for image in calibration_images]
        calibration = [pad_to_size(i["pixel_values"], i["pixel_mask"], (height, width))[0].numpy() for i in inputs]
    if format == "openvino":
        ov = require("openvino")
        ov.save_model(ov.convert_model(str(onnx_path)), str(fp32), compress_to_fp16=False)
        onnx_path.unlink()
        if int8:
            quantize_openvino(fp32, int8_path, calibration=calibration)
    elif int8:
        quantize_onnx(onnx_path, int8_path, calibration=calibration, mode=onnx_int8_mode)

    written = dict(files) if int8 else {"fp32": files["fp32"]}
    runtimes = ["onnx", "onnxruntime", *(["openvino"] if format == "openvino" else [])]
    parity = {}
    info = {
        "format": format,
        "files": written,
        "input": {"height": height, "width": width, "dynamic": dynamic, "multiple_of": SIZE_MULTIPLE},
        "opset": opset,
        "int8_method": (("nncf" if format == "openvino" else f"onnxruntime-{onnx_int8_mode}") if int8 else None),
        "versions": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            **{name: require(name).__version__ for name in runtimes},
        },
        "parity_max_abs_difference": parity,
    }
    (output_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2))
    if check_parity:  # max |logit difference| to PyTorch on a random input
        pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model(pixel_values)
        for precision in written:
            got = MaskFormerRuntimeModel.from_pretrained(output_dir, precision=precision)(pixel_values)
            parity[precision] = max((getattr(expected, n) - getattr(got, n)).abs().max().item() for n in OUTPUT_NAMES)
    (output_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2))
    if parity.get("fp32", 0) > PARITY_TOLERANCE:  # NOTE: not the user's doing: a bug of the exporter or a runtime
        raise RuntimeError(
            f"the exported fp32 graph differs from PyTorch by {parity['fp32']:.2e} (> {PARITY_TOLERANCE}); "
            f"see {output_dir / EXPORT_INFO_FILE}"
        )
    size = "dynamic H×W" if dynamic else f"{height}×{width}"
    readme = README.format(
        format={"onnx": "ONNX", "openvino": "OpenVINO IR"}[format],
        size=size,
        files=", ".join(written.values()),
        resize_note="unchanged from the model's" if dynamic else f"set to resize every image to fit in {size}",
        folder=output_dir.name,
        input_note=DYNAMIC_NOTE if dynamic else FIXED_NOTE.format(size=size),
        parity=", ".join(f"{k} {v:.1e}" for k, v in parity.items()) or "not measured",
    )
    (output_dir / "README.md").write_text(readme)
    return output_dir
