"""Segment files, folders and globs in batches; write overlays and files other tools import.

    python scripts/predict.py photos/ --model outputs/demo --task panoptic --out predictions/
    python scripts/predict.py "shots/**/*.jpg" a.png --model outputs/demo --task semantic instance --out predictions/
    python scripts/predict.py photos/ --recursive --model exported/demo-onnx --device cpu --out predictions/

Per task, under <out>/<task>/: overlays/<name>.png (picture + legend) and
  semantic  masks/<name>.png: class-index PNG (8-bit up to 255 classes, else 16-bit)
  panoptic  predictions_panoptic.json + predictions_panoptic/<name>.png: COCO panoptic
  instance  results.json (COCO results, RLE) + instances.json (COCO instances dataset: CVAT, datumaro, detectron2)
and <out>/predictions.json: settings, per image its files and segments, the summary. COCO category ids are the
model's class ids + 1. The same command run again resumes (images done are kept); other settings into the same
--out are refused unless --overwrite. Details: docs/predict.md.

Exit status: 0 all images done; 1 some could not be read (reported, skipped; the others are written); 2 usage or
input error (a folder or pattern without images, a missing path, an unavailable device); 130 Ctrl-C and 143 SIGTERM
(the run stops after the current forward pass and writes what is done).
"""

from __future__ import annotations

import argparse
import sys

from modeling_maskformer.cli import run_cli
from modeling_maskformer.inference.app import load_model
from modeling_maskformer.inference.batch_predict import TASKS, expand_inputs, predict_images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files, folders and glob patterns (quote them: '**/*.jpg')")
    parser.add_argument(
        "--model",
        required=True,
        help="our model folder, a transformers MaskFormer folder, a Hub id, or an exported folder",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--task", nargs="+", choices=TASKS, default=["panoptic"], help="one or more (default panoptic)"
    )
    parser.add_argument("--recursive", action="store_true", help="also the images in the folders' subfolders")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=4,
        help="images per forward pass (only images of one padded size share one, so results change only "
        "by float rounding)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, mps")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold (instance, panoptic)")
    parser.add_argument("--mask_threshold", type=float, default=0.5)
    parser.add_argument("--overlap_threshold", type=float, default=0.8)
    parser.add_argument(
        "--fuse_stuff",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="panoptic: one segment per stuff class (needs the model's thing_ids)",
    )
    parser.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True, help="draw overlays")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="for exported folders")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the predictions of another run in --out (the same command resumes without it)",
    )
    parser.add_argument(
        "--progress",
        choices=["auto", "bar", "lines", "none"],
        default="auto",
        help="auto: a bar on a terminal, else one line per image (stderr)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    return args


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    # Before loading the model, so that bad input fails fast; never the outputs of an earlier run as inputs.
    paths = expand_inputs(args.images, recursive=args.recursive, exclude=[args.out])
    model, processor = load_model(args.model, precision=args.precision)
    summary = predict_images(
        model,
        processor,
        paths,
        args.out,
        tasks=list(dict.fromkeys(args.task)),
        batch_size=args.batch_size,
        device=args.device,
        threshold=args.threshold,
        mask_threshold=args.mask_threshold,
        overlap_threshold=args.overlap_threshold,
        fuse_stuff=args.fuse_stuff,
        overlays=args.overlays,
        overwrite=args.overwrite,
        progress=args.progress,
        run_info={"model": args.model, "precision": args.precision},
    )
    print(summary.report())
    if summary.exit_status:
        sys.stdout.flush()
        raise SystemExit(summary.exit_status)
    return summary


if __name__ == "__main__":
    run_cli(main)
