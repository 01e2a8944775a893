"""Evaluate a MaskFormer on a segmentation dataset: mIoU (+ per-class IoU, pixel accuracy), PQ/SQ/RQ (all,
things, stuff) and COCO mask AP where the dataset has instances.

    python scripts/evaluate_maskformer.py --model outputs/demo --dataset synthetic --split validation
    python scripts/prepare_data.py ade20k --root data   # once: data/ADEChallengeData2016
    python scripts/evaluate_maskformer.py --model facebook/maskformer-swin-tiny-ade --dataset data/ADEChallengeData2016 \
        --label_convention ade
    python scripts/evaluate_maskformer.py --model outputs/demo --dataset synthetic --tta   # multi-scale + flip mIoU

The model folder may be ours or a transformers MaskFormer folder (converted on the fly). Semantic label maps
are read with the label convention the model records (`--label_convention` overrides it, with a warning when it
contradicts the record; a model that records none needs it), and a dataset whose classes differ from the
model's is refused unless `--ignore_class_mismatch`. Data without a validation split holds out the items the
model's training run held out (its config records the fraction); a larger `--train_val_split` is refused, a smaller
one evaluates a subset of them. Prints a table and writes JSON (`--output_json`). Runs on several processes with
`accelerate launch`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from accelerate import Accelerator

from modeling_maskformer.cli import run_cli
from modeling_maskformer.data import build_dataset
from modeling_maskformer.data.arguments import add_dataset_arguments, dataset_kwargs
from modeling_maskformer.data.checks import check_dataset
from modeling_maskformer.data.labels import OVERRIDE_FLAG, LabelSettings
from modeling_maskformer.errors import InvalidInputError
from modeling_maskformer.evaluation import evaluate_model, format_table, load_model_folder
from modeling_maskformer.inference.tta import TestTimeAugmentation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="our model folder, a transformers MaskFormer folder, or Hub id")
    add_dataset_arguments(parser)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--num_images", type=int, default=None, help="synthetic dataset: number of images")
    parser.add_argument("--max_items", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=4,
        help="images per forward pass; only images of one padded size are batched, so the results do not depend on it",
    )
    parser.add_argument("--output_json", default=None, help="write all results here")
    parser.add_argument(
        OVERRIDE_FLAG,
        action="store_true",
        help="evaluate a dataset whose class names or count differ from the model's (class ids are "
        "compared as numbers; names from the model)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="mIoU with the authors' test-time augmentation: short sides 0.5, 0.75, ..., 1.75 x the "
        "processor's test size (long side up to 7x it) and horizontal flips, scores averaged; "
        "PQ and mask AP stay single-scale",
    )
    parser.add_argument(
        "--tta_sizes",
        default=None,
        help="with --tta: the short sides instead, comma-separated (e.g. 256,384,512,640,768,896)",
    )
    parser.add_argument("--tta_max_size", type=int, default=None, help="with --tta_sizes: the long-side cap")
    parser.add_argument("--tta_no_flip", action="store_true", help="with --tta: no mirrored views")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if not args.tta and (args.tta_sizes or args.tta_max_size or args.tta_no_flip):
        parser.error("--tta_sizes, --tta_max_size and --tta_no_flip need --tta")
    return args


def test_time_augmentation(args: argparse.Namespace, processor) -> TestTimeAugmentation | None:
    if not args.tta:
        return None
    if args.tta_sizes is None:
        return TestTimeAugmentation.for_processor(processor, flip=not args.tta_no_flip)
    try:
        sizes = tuple(int(size) for size in args.tta_sizes.split(","))
    except ValueError:
        raise InvalidInputError(f"--tta_sizes must be comma-separated ints, got {args.tta_sizes!r}") from None
    return TestTimeAugmentation(sizes, args.tta_max_size, flip=not args.tta_no_flip)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    accelerator = Accelerator()
    kwargs = dataset_kwargs(args, num_images=args.num_images)  # flags that do not fit the data: refused first
    settings = LabelSettings.from_pretrained(args.model)
    dataset = build_dataset(
        args.dataset, args.split, model=settings, ignore_class_mismatch=args.ignore_class_mismatch, **kwargs
    )
    dataset = check_dataset(
        dataset, skip_bad_items=args.skip_bad_items, accelerator=accelerator, name=f"the {args.split!r} split"
    )
    model, processor = load_model_folder(args.model)
    tta = test_time_augmentation(args, processor)
    model = model.to(accelerator.device)
    classes = {
        **dataset.id2label,
        **settings.id2label,
    }  # the model's; with the override, the dataset's extra ones
    results = evaluate_model(
        model,
        processor,
        dataset,
        accelerator=accelerator,
        batch_size=args.batch_size,
        max_items=args.max_items,
        tta=tta,
        id2label=classes,
    )
    if accelerator.is_main_process:
        for group in results.values():
            print(format_table(group))
        if tta is not None:
            print(f"mIoU with test-time augmentation: {tta}")
            results["test_time_augmentation"] = dataclasses.asdict(tta)
        if args.output_json:
            Path(args.output_json).write_text(json.dumps(results, indent=2, allow_nan=False))
    return results


if __name__ == "__main__":
    run_cli(main)
