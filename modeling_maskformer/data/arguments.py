"""Command-line arguments shared by the training and evaluation programs: which dataset, and how to read it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .loaders import detect_folder_layout
from .prepare import DATA_ROOT_ENV, DATASETS, SCRIPT_DATASETS, default_data_root
from .synthetic import SyntheticShapesConfig

LABEL_CONVENTION_HELP = (
    "semantic PNGs (required for them): 'ade' = ADE20K's convention, 0 is 'other' and ignored, 1..K are the "
    "classes; 'as_is' = the pixel values 0..K-1 are the classes (255 = ignored)"
)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --data_root, --dataset_config_name, --label_convention, --image_size, --synthetic_thing_colours,
    --synthetic_thing_classes."""
    parser.add_argument(
        "--dataset", default="synthetic",
        help="'synthetic', an ADE/COCO-panoptic folder, a name prepared by scripts/prepare_data.py (ade20k, "
             "coco_panoptic, cityscapes; also scene_parse_150 = ade20k), or a datasets name/path",
    )  # fmt: skip
    parser.add_argument(
        "--data_root", default=None,
        help=f"where scripts/prepare_data.py put the named datasets (default ${DATA_ROOT_ENV}, else {default_data_root()})",
    )  # fmt: skip
    parser.add_argument("--dataset_config_name", default=None, help="config name of a datasets dataset")
    parser.add_argument(
        "--label_convention", choices=["ade", "as_is"], default=None, help=LABEL_CONVENTION_HELP
    )
    parser.add_argument("--image_size", type=int, default=None, help="synthetic: image side")
    parser.add_argument(
        "--synthetic_thing_colours", choices=["random", "by_class"], default="random",
        help="synthetic: thing colours random (shape alone tells the class) or by class hue band",
    )  # fmt: skip
    parser.add_argument(
        "--synthetic_thing_classes", type=int, default=None,
        help="synthetic: number of thing classes as (shape, fill pattern) pairs, 1..126 (default: the 6 shapes)",
    )  # fmt: skip


def dataset_kwargs(args: argparse.Namespace, *, num_images: int | None = None, id2label=None) -> dict:
    """`build_dataset` keyword arguments from those arguments: the synthetic settings, or the label convention
    of semantic PNGs (None: the loader refuses semantic data, which must choose; not used by COCO panoptic
    folders, whose categories come from the JSON) and the classes to use."""
    if args.dataset == "synthetic":
        kwargs = {"image_size": args.image_size, "num_images": num_images}
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        config = SyntheticShapesConfig(thing_colours=args.synthetic_thing_colours,
                                       num_thing_classes=getattr(args, "synthetic_thing_classes", None))  # fmt: skip
        return {**kwargs, "config": config}
    kwargs = {"name": args.dataset_config_name} if args.dataset_config_name else {}
    path = Path(args.dataset).expanduser()
    if not path.exists():  # a prepared dataset's name, or a `datasets` name
        if SCRIPT_DATASETS.get(args.dataset, args.dataset) in DATASETS:
            kwargs = {"data_root": args.data_root}
        if args.dataset == "coco_panoptic":
            return kwargs
    elif path.is_dir() and detect_folder_layout(path) == "coco_panoptic":
        return kwargs
    kwargs["reduce_labels"] = None if args.label_convention is None else args.label_convention == "ade"
    if id2label is not None:
        kwargs["id2label"] = id2label
    return kwargs
