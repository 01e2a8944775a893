"""MaskFormer against the paper's per-pixel classification baseline on synthetic scenes at several class counts
(the paper's Table 4 at CPU scale): same backbone, pixel decoder, data stream, steps, optimiser and time budget.

    python scripts/compare_heads.py                                  # 8, 32, 128 classes, 30 minutes in all
    python scripts/compare_heads.py --minutes 6 --class_counts 8,128 --output_json outputs/compare_heads.json

Prints a Markdown table (held-out mIoU per head and class count, the difference) and whether MaskFormer's
advantage grows with the number of classes. See `modeling_maskformer.paper.compare`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from modeling_maskformer.cli import run_cli
from modeling_maskformer.paper.compare import CompareSettings, compare_heads, format_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="the whole budget, split over the class counts")
    parser.add_argument(
        "--class_counts",
        default="8,32,128",
        help="comma-separated class counts K (3 stuff classes + K - 3 thing classes), 4..129",
    )
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_train_images", type=int, default=4000)
    parser.add_argument("--num_eval_images", type=int, default=100, help="held-out scenes (the validation split)")
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--max_steps", type=int, default=None, help="cap the steps per class count (quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None, help="write the full report here")
    args = parser.parse_args(argv)
    try:
        args.class_counts = tuple(int(k) for k in args.class_counts.split(","))
    except ValueError:
        parser.error(f"--class_counts must be comma-separated ints, got {args.class_counts!r}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = CompareSettings(
        class_counts=args.class_counts,
        minutes=args.minutes,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_train_images=args.num_train_images,
        num_eval_images=args.num_eval_images,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        seed=args.seed,
    )
    report = compare_heads(settings)
    print(format_report(report))
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run_cli(main)
