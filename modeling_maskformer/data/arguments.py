"""Command-line arguments shared by the training and evaluation programs: which dataset, and how to read it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidInputError
from .coco_instances import COCO_LAYOUT_MARKERS
from .loaders import COCO_JSON, HOLD_OUT_LAYOUTS, source_layout
from .prepare import DATA_ROOT_ENV, default_data_root
from .synthetic import SyntheticShapesConfig

LABEL_CONVENTION_HELP = (
    "semantic PNGs (required for them): 'ade' = ADE20K's convention, 0 is 'other' and ignored, 1..K are the "
    "classes; 'as_is' = the pixel values 0..K-1 are the classes (255 = ignored)"
)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --data_root, --dataset_config_name, --label_convention, --image_size, --synthetic_thing_colours,
    --synthetic_thing_classes, --skip_bad_items, and `add_source_arguments`'."""
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="'synthetic', a folder (ADE, COCO panoptic, COCO instances as COCO, CVAT, Roboflow or Label Studio "
        "export them, Pascal VOC, CVAT 'Segmentation mask' export, datasets files), a COCO instance JSON file "
        "(see --image_root), a name prepared by scripts/prepare_data.py (ade20k, coco_panoptic, cityscapes; also "
        "scene_parse_150 = ade20k), or a datasets name (Hub id)",
    )
    parser.add_argument(
        "--data_root",
        default=None,
        help=f"where scripts/prepare_data.py put the named datasets (default ${DATA_ROOT_ENV}, else "
        f"{default_data_root()})",
    )
    parser.add_argument("--dataset_config_name", default=None, help="config name of a datasets dataset")
    parser.add_argument("--label_convention", choices=["ade", "as_is"], default=None, help=LABEL_CONVENTION_HELP)
    parser.add_argument("--image_size", type=int, default=None, help="synthetic: image side")
    parser.add_argument(
        "--synthetic_thing_colours",
        choices=["random", "by_class"],
        default="random",
        help="synthetic: thing colours random (shape alone tells the class) or by class hue band",
    )
    parser.add_argument(
        "--synthetic_thing_classes",
        type=int,
        default=None,
        help="synthetic: number of thing classes as (shape, fill pattern) pairs, 1..126 (default: the 6 shapes)",
    )
    parser.add_argument(
        "--skip_bad_items",
        action="store_true",
        help="the data check before training and evaluation leaves out the items it finds a problem in (one log "
        "line each) instead of refusing the data",
    )
    add_source_arguments(parser)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--image_column, --label_column, --id2label, --palette, --train_val_split (docs/data-masks.md), --image_root
    (docs/data-coco.md)."""
    parser.add_argument(
        "--image_column",
        default=None,
        help="datasets data: the image column (default: the first of image, img, pixel_values)",
    )
    parser.add_argument(
        "--label_column",
        default=None,
        help="datasets data: the annotation column (default: the first of annotation, semantic, "
        "semantic_map, segmentation, label, mask; panoptic data: label, panoptic, ...)",
    )
    parser.add_argument(
        "--id2label",
        default=None,
        metavar="FILE",
        help='class names, JSON {"0": "name", ...} (ids 0..K-1, names unique). Under --label_convention '
        "ade, a file whose entry 0 names the ignored value (background, unlabeled, ...) is "
        "keyed by pixel value: entry 0 is dropped and entry k names class k-1",
    )
    parser.add_argument(
        "--palette",
        default=None,
        metavar="FILE",
        help='colour-coded masks: colour -> class, JSON {"name": [r, g, b], ..., "__ignore__": [r, g, '
        "b]} or CVAT's labelmap.txt (a CVAT 'Segmentation mask' export needs none: its "
        "labelmap.txt is read)",
    )
    parser.add_argument(
        "--train_val_split",
        type=float,
        default=None,
        metavar="FRACTION",
        help="data without a validation split: hold this fraction of the training split out as the "
        "validation split (seeded; default 0.15). Training records it in the model folder and "
        "evaluation uses the record; a larger fraction than recorded is refused",
    )
    parser.add_argument(
        "--image_root",
        default=None,
        metavar="DIR",
        help="--dataset FILE.json (COCO instances): the folder its images' file_names are relative to "
        "(default: the JSON's folder)",
    )


# The flags of `add_source_arguments`, their loader keyword, and the layouts whose loaders take them.
_SOURCE_FLAGS = {
    "image_column": ("image_column", ("hf",)),
    "label_column": ("label_column", ("hf",)),
    "id2label": ("id2label_file", ("hf", "ade", "voc", "cvat_mask")),
    "palette": ("palette", ("hf", "ade", "voc", "cvat_mask")),
    "train_val_split": ("train_val_split", HOLD_OUT_LAYOUTS),
    "image_root": ("image_root", (COCO_JSON,)),
}


def source_kwargs(args: argparse.Namespace, layout: str) -> dict:
    """The loader keywords of the `add_source_arguments` flags given; a ValueError for one that ``layout``'s loader
    does not take."""
    kwargs = {}
    for flag, (keyword, layouts) in _SOURCE_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if layout not in layouts:
            raise InvalidInputError(
                f"--{flag} does not apply to {args.dataset} (a {layout} dataset); it applies to "
                f"{', '.join(layouts)} data (see docs/data-masks.md)"
            )
        kwargs[keyword] = value
    return kwargs


def dataset_kwargs(args: argparse.Namespace, *, num_images: int | None = None, id2label=None) -> dict:
    """`build_dataset` keyword arguments from those arguments: the synthetic settings, or the label convention
    of semantic label maps (None: not chosen; the loader refuses, or with `build_dataset(..., model=...)` the
    model's recorded convention applies; not used by COCO panoptic folders, whose categories come from the JSON)
    and the classes to use."""
    if args.dataset == "synthetic":
        source_kwargs(args, "synthetic")
        kwargs = {"image_size": args.image_size, "num_images": num_images}
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        config = SyntheticShapesConfig(
            thing_colours=args.synthetic_thing_colours,
            num_thing_classes=getattr(args, "synthetic_thing_classes", None),
        )
        return {**kwargs, "config": config}
    kwargs = {"name": args.dataset_config_name} if args.dataset_config_name else {}
    layout = source_layout(args.dataset)
    if not Path(args.dataset).expanduser().exists() and layout != "hf":  # a prepared dataset's name
        kwargs = {"data_root": args.data_root}
    kwargs.update(source_kwargs(args, layout))
    if layout in ("coco_panoptic", COCO_JSON, *COCO_LAYOUT_MARKERS):
        return kwargs  # the classes come from the JSON
    kwargs["reduce_labels"] = None if args.label_convention is None else args.label_convention == "ade"
    if id2label is not None:
        kwargs["id2label"] = id2label
    return kwargs
