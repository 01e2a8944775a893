"""Command-line arguments shared by the training and evaluation programs: which dataset, and how to read it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidInputError
from .coco_instances import COCO_LAYOUT_MARKERS
from .loaders import COCO_JSON, HOLD_OUT_LAYOUTS, source_layout
from .registry import DATA_ROOT_ENV, default_data_root
from .synthetic import SyntheticShapesConfig

LABEL_CONVENTION_HELP = (
    "semantic PNGs (required for them): 'ade' = ADE20K's convention, 0 is 'other' and ignored, 1..K are the "
    "classes; 'as_is' = the pixel values 0..K-1 are the classes (255 = ignored)"
)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
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
        help="synthetic: number of thing classes as (shape, fill pattern) pairs, 1..126 (default: the 6 shapes)",
    )
    parser.add_argument(
        "--skip_bad_items",
        action="store_true",
        help="the data check before training and evaluation leaves out the items it finds a problem in (one log "
        "line each) instead of refusing the data",
    )
    add_source_arguments(parser)


# The flags of `add_source_arguments` (docs/data-masks.md, docs/data-coco.md): the loader keyword each fills, the
# layouts whose loaders take it, its metavar, and its help.
_SOURCE_FLAGS = {
    "image_column": ("image_column", ("hf",), "COLUMN"),
    "label_column": ("label_column", ("hf",), "COLUMN"),
    "id2label": ("id2label_file", ("hf", "ade", "voc", "cvat_mask"), "FILE"),
    "palette": ("palette", ("hf", "ade", "voc", "cvat_mask"), "FILE"),
    "train_val_split": ("train_val_split", HOLD_OUT_LAYOUTS, "FRACTION"),
    "image_root": ("image_root", (COCO_JSON,), "DIR"),
}
_SOURCE_HELP = {
    "image_column": "datasets data: the image column (default: the first of image, img, pixel_values)",
    "label_column": "datasets data: the annotation column (default: the first of annotation, semantic, semantic_map, "
    "segmentation, label, mask; panoptic data: label, panoptic, ...)",
    "id2label": 'class names, JSON {"0": "name", ...} (ids 0..K-1, names unique). Under --label_convention ade, a file '
    "whose entry 0 names the ignored value (background, unlabeled, ...) is keyed by pixel value: entry 0 is dropped "
    "and entry k names class k-1",
    "palette": 'colour-coded masks: colour -> class, JSON {"name": [r, g, b], ..., "__ignore__": [r, g, b]} or CVAT\'s '
    "labelmap.txt (a CVAT 'Segmentation mask' export needs none: its labelmap.txt is read)",
    "train_val_split": "data without a validation split: hold this fraction of the training split out as the "
    "validation split (seeded; default 0.15). Training records it in the model folder and evaluation uses the "
    "record; a larger fraction than recorded is refused",
    "image_root": "--dataset FILE.json (COCO instances): the folder its images' file_names are relative to (default: "
    "the JSON's folder)",
}


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (_, _, metavar) in _SOURCE_FLAGS.items():
        kind = float if flag == "train_val_split" else str
        parser.add_argument(f"--{flag}", type=kind, default=None, metavar=metavar, help=_SOURCE_HELP[flag])


def source_kwargs(args: argparse.Namespace, layout: str) -> dict:
    """The loader keywords of the source flags given; a ValueError for one that ``layout``'s loader does not take."""
    kwargs = {}
    for flag, (keyword, layouts, _) in _SOURCE_FLAGS.items():
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
    """`build_dataset` keyword arguments: the synthetic settings, or the source flags, the label convention of
    semantic label maps (None: not chosen; the loader refuses, or `build_dataset(..., model=...)` takes the model's)
    and the classes to use."""
    if args.dataset == "synthetic":
        source_kwargs(args, "synthetic")
        kwargs = {"image_size": args.image_size, "num_images": num_images}
        classes = getattr(args, "synthetic_thing_classes", None)
        config = SyntheticShapesConfig(thing_colours=args.synthetic_thing_colours, num_thing_classes=classes)
        return {**{key: value for key, value in kwargs.items() if value is not None}, "config": config}
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
