"""Export a MaskFormer folder to ONNX (onnxruntime) or OpenVINO IR, optionally with an int8 graph.

    python scripts/export.py --format onnx outputs/demo exported/demo-onnx                 # fixed size
    python scripts/export.py --format onnx outputs/demo exported/demo-dyn --dynamic         # any multiple of 32
    python scripts/export.py --format openvino outputs/demo exported/demo-ov --height 512 --width 512 \\
        --int8 --calibration_dir some/images/                                               # NNCF int8
    python scripts/export.py --format onnx outputs/demo exported/demo-onnx --int8 --calibration synthetic

Writes the graph(s), config.json (id2label), preprocessor_config.json, export.json and a README; load the
folder with `modeling_maskformer.export.MaskFormerRuntimeModel`. Needs the `[export]` extra.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from modeling_maskformer.cli import run_cli
from modeling_maskformer.data import SyntheticShapesConfig, build_dataset
from modeling_maskformer.errors import MissingInputError
from modeling_maskformer.export import export_folder


def calibration_images(args: argparse.Namespace) -> list[Image.Image] | None:
    if args.calibration_dir:
        paths = sorted(
            p for p in Path(args.calibration_dir).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if not paths:
            raise MissingInputError(f"--calibration_dir {args.calibration_dir}: no .jpg/.jpeg/.png images found")
        return [Image.open(p).convert("RGB") for p in paths[: args.calibration_count]]
    if args.calibration == "synthetic":
        dataset = build_dataset(
            "synthetic",
            "train",
            num_images=args.calibration_count,
            image_size=args.calibration_image_size,
            config=SyntheticShapesConfig(thing_colours="by_class"),
        )
        return [dataset[i]["image"].convert("RGB") for i in range(len(dataset))]
    return None


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="our model folder or Hub id")
    parser.add_argument("output_dir")
    parser.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    parser.add_argument(
        "--height",
        type=int,
        help="fixed input height (multiple of 32; default: the processor's shortest edge)",
    )
    parser.add_argument("--width", type=int, help="fixed input width (multiple of 32)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic height and width (multiples of 32)")
    parser.add_argument("--int8", action="store_true", help="also write an int8 graph")
    parser.add_argument("--onnx_int8_mode", choices=["static", "dynamic"], default="static")
    parser.add_argument("--calibration_dir", help="folder of images to calibrate int8 on")
    parser.add_argument(
        "--calibration", choices=["synthetic"], help="calibrate on generated synthetic training scenes"
    )
    parser.add_argument("--calibration_count", type=int, default=32)
    parser.add_argument("--calibration_image_size", type=int, default=128)
    parser.add_argument("--opset", type=int, default=18)
    args = parser.parse_args(argv)
    if (args.height is None) != (args.width is None):
        parser.error("give both --height and --width, or neither")
    folder = export_folder(
        args.model,
        args.output_dir,
        format=args.format,
        height=args.height,
        width=args.width,
        dynamic=args.dynamic,
        int8=args.int8,
        calibration_images=calibration_images(args),
        onnx_int8_mode=args.onnx_int8_mode,
        opset=args.opset,
    )
    info = json.loads((folder / "export.json").read_text())
    print(f"Wrote {folder}: {', '.join(info['files'].values())}; input {info['input']}")
    print(
        "max |logit difference| to PyTorch:",
        {k: f"{v:.2e}" for k, v in info["parity_max_abs_difference"].items()},
    )
    return folder


if __name__ == "__main__":
    run_cli(main)
