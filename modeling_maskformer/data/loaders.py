"""`build_dataset`, which picks a source's loader, and the ADE20K-style, COCO panoptic and synthetic loaders."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import InvalidInputError, MissingInputError
from .class_names import check_palette_names, find_id2label
from .coco_instances import (
    COCO_LAYOUT_MARKERS,
    coco_instances_layout,
    load_coco_instances_file,
    load_coco_instances_folder,
)
from .dataset import SegmentationDataset, SegmentationItem, Task
from .decoding import (
    IMAGE_SUFFIXES,
    LOSSY_LABEL_SUFFIXES,
    category_metadata,
    check_class_index_mode,
    decode_panoptic,
    open_image,
    open_rgb,
    read_coco_panoptic_json,
    refuse_lossy,
    require_label_convention,
    scan_num_labels,
    warn_if_binary,
)
from .hf import load_hf_dataset
from .labels import LabelSettings
from .palette import Palette, read_palette
from .registry import DATA_ROOT_ENV, DATASETS, SCRIPT_DATASETS, default_data_root, prepare_command, prepared_folder
from .splits import WHOLE, HoldOut, RecordedHoldOut, plan_split
from .splits import normalize_split as _normalize_split
from .synthetic import SyntheticShapes, SyntheticShapesConfig, rgb_to_id
from .voc import MaskPairsDataset, is_voc_folder, load_voc_folder

logger = logging.getLogger(__name__)

_COCO_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _ade_pairs(root: Path, images: list[Path], annotation_dir: Path) -> list[tuple[Path, Path]]:
    annotations: dict[str, Path] = {}
    for path in sorted(annotation_dir.iterdir()):
        suffix = path.suffix.lower()
        if suffix == ".png" or (suffix in LOSSY_LABEL_SUFFIXES and path.stem not in annotations):
            annotations[path.stem] = path
    refuse_lossy(None, "annotations", [annotations[p.stem] for p in images if p.stem in annotations])
    missing = [p.name for p in images if p.stem not in annotations]
    if missing:
        raise MissingInputError(
            f"ADE folder {root}: {len(missing)} image(s) without annotation in {annotation_dir}, e.g. {missing[0]}"
        )
    return [(p, annotations[p.stem]) for p in images]


def _ade_subsets(root: Path) -> dict[str, Path]:
    for sub in ("images", "annotations"):
        if not (root / sub).is_dir():
            raise MissingInputError(f"ADE folder {root}: missing folder {root / sub}")
    folders = {p.name: p for p in sorted((root / "images").iterdir()) if p.is_dir() and not p.name.startswith(".")}
    flat = _list_images(root / "images")
    if flat and folders:
        logger.warning(
            f"ADE folder {root}: the {len(flat)} image(s) directly in {root / 'images'} are not read: its subfolders "
            f"{sorted(folders)} are the splits"
        )
    if folders:
        return folders
    if not flat:
        raise InvalidInputError(
            f"ADE folder {root}: {root / 'images'} is empty (expected images/training/*.jpg and "
            f"images/validation/*.jpg, or images/*.jpg)"
        )
    return {WHOLE: root / "images"}


def load_ade_folder(
    root: str | Path,
    split: str = "train",
    *,
    reduce_labels: bool | None = None,
    ignore_index: int = 255,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    id2label_file: str | Path | None = None,
    thing_ids: Sequence[int] = (),
    palette: str | Path | Palette | None = None,
    train_val_split: float | RecordedHoldOut | None = None,
) -> MaskPairsDataset:
    """An ADEChallengeData2016-style folder, ``root/{images,annotations}/<subset>/`` or flat. Class names from files,
    else numbers up to ``num_labels`` or the largest label found. ``reduce_labels``: None refuses to guess."""
    root = Path(root)
    where = f"ADE folder {root}"
    subsets = _ade_subsets(root)
    plan = plan_split(split, list(subsets), train_val_split, where)
    image_dir = subsets[plan.subset]
    annotation_dir = root / "annotations" / image_dir.relative_to(root / "images")
    if not annotation_dir.is_dir():
        raise MissingInputError(f"{where}: missing split folder {annotation_dir}")
    images = _list_images(image_dir)
    if not images:
        raise InvalidInputError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    pairs = _ade_pairs(root, images, annotation_dir)
    held_out = plan.held_out(len(pairs))
    pairs = [pairs[i] for i in plan.select(len(pairs))]
    common = {"thing_ids": thing_ids, "ignore_index": ignore_index, "held_out": held_out}
    if palette is not None:
        palette = read_palette(palette) if isinstance(palette, (str, Path)) else palette
        check_palette_names(id2label, palette, where)
        if reduce_labels:
            logger.info("%s: colour masks read with %s; the label convention does not apply", where, palette.source)
        return MaskPairsDataset(pairs, palette=palette, id2label=palette.id2label, reduce_labels=False, **common)
    # Cheap (header only) and before any scan: a colour annotation must fail with its own message.
    with Image.open(pairs[0][1]) as first:
        check_class_index_mode(first, str(pairs[0][1]))
    reduce_labels = require_label_convention(reduce_labels, where)
    warn_if_binary([a for _, a in pairs], reduce_labels=reduce_labels, ignore_index=ignore_index, source=where)

    id2label = find_id2label(id2label, id2label_file, root, reduce_labels)
    if id2label is None:
        if num_labels is None:
            num_labels = scan_num_labels([a for _, a in pairs], reduce_labels, ignore_index)
            if num_labels == 0:
                raise InvalidInputError(
                    f"ADE folder {root}: no annotation in {annotation_dir} has a class pixel (all are "
                    f"ignored{' or 0' if reduce_labels else ''}); check reduce_labels / --label_convention"
                )
        id2label = {i: str(i) for i in range(num_labels)}
    return MaskPairsDataset(pairs, id2label=id2label, reduce_labels=reduce_labels, **common)


class CocoPanopticDataset(SegmentationDataset):
    """Images + panoptic PNGs + a COCO panoptic JSON."""

    task: Task = "panoptic"
    convention_from = None  # the classes come from the JSON's categories

    def __init__(self, records: list[tuple[Path, Path, list[dict]]], category_to_label: dict[int, int], **metadata):
        super().__init__(records=records, **metadata)
        self.category_to_label = category_to_label

    def _source(self, index: int) -> str:
        return str(self.records[index][1])

    def _load(self, index: int) -> SegmentationItem:
        image_path, png_path, segments_info = self.records[index]
        image = open_rgb(image_path, decode=self.decode_images)
        ids, segments, semantic = decode_panoptic(
            open_image(png_path),
            segments_info,
            self.category_to_label,
            ignore_index=self.ignore_index,
            source=str(png_path),
        )
        return {
            "image": image,
            "semantic": semantic,
            "panoptic_ids": ids,
            "segments_info": segments,
            "image_id": image_path.stem,
        }


def load_coco_panoptic_folder(
    root: str | Path | None = None,
    split: str = "train",
    *,
    images_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    png_dir: str | Path | None = None,
    ignore_index: int = 255,
) -> CocoPanopticDataset:
    """``root/{split}2017/``, ``root/annotations/panoptic_{split}2017{.json,/}``, or each given explicitly."""
    coco_split = _COCO_SPLIT_NAMES[_normalize_split(split)] + "2017"
    if root is None and None in (images_dir, json_path, png_dir):
        raise InvalidInputError("give root, or all of images_dir, json_path and png_dir")
    root = Path(root) if root is not None else None
    images_dir = Path(images_dir) if images_dir else root / coco_split
    json_path = Path(json_path) if json_path else root / "annotations" / f"panoptic_{coco_split}.json"
    png_dir = Path(png_dir) if png_dir else root / "annotations" / f"panoptic_{coco_split}"
    for path, is_file in ((json_path, True), (images_dir, False), (png_dir, False)):
        if not (path.is_file() if is_file else path.is_dir()):
            raise MissingInputError(f"COCO panoptic: missing {'file' if is_file else 'folder'} {path}")

    payload = read_coco_panoptic_json(json_path)
    metadata = category_metadata(payload["categories"])
    images_by_id = {image["id"]: image for image in payload["images"]}
    annotated = {a["image_id"] for a in payload["annotations"]}
    unannotated = [image["file_name"] for image in payload["images"] if image["id"] not in annotated]
    if unannotated:
        raise InvalidInputError(f"{json_path}: {len(unannotated)} image(s) without annotation, e.g. {unannotated[0]}")
    image_files, png_files = set(os.listdir(images_dir)), set(os.listdir(png_dir))
    if not image_files:
        raise MissingInputError(f"COCO panoptic: the image folder {images_dir} is empty")

    records = []
    for annotation in payload["annotations"]:
        image = images_by_id.get(annotation["image_id"])
        if image is None:
            raise InvalidInputError(
                f"{json_path}: annotation {annotation['file_name']} refers to unknown image id "
                f"{annotation['image_id']}"
            )
        if image["file_name"] not in image_files:
            raise MissingInputError(f"COCO panoptic: image {images_dir / image['file_name']} not found")
        if annotation["file_name"] not in png_files:
            raise MissingInputError(f"COCO panoptic: annotation PNG {png_dir / annotation['file_name']} not found")
        for segment in annotation["segments_info"]:
            if segment["category_id"] not in metadata["category_to_label"]:
                raise InvalidInputError(
                    f"{json_path}: unknown category id {segment['category_id']} in segments_info "
                    f"of {annotation['file_name']}"
                )
        records.append(
            (images_dir / image["file_name"], png_dir / annotation["file_name"], annotation["segments_info"])
        )
    category_to_label = metadata.pop("category_to_label")
    return CocoPanopticDataset(records, category_to_label, ignore_index=ignore_index, **metadata)


class SyntheticDataset(SegmentationDataset):
    task: Task = "panoptic"
    convention_from = None  # generated with their classes
    needs_check = False  # generated scenes

    def __init__(self, shapes: SyntheticShapes):
        metadata = {"id2label": shapes.id2label, "thing_ids": shapes.thing_ids, "ignore_index": shapes.ignore_index}
        super().__init__(records=shapes, **metadata)

    def _load(self, index: int) -> SegmentationItem:
        item = self.records[index]
        item["panoptic_ids"] = rgb_to_id(item.pop("panoptic"))
        return item


def load_synthetic(
    split: str = "train",
    num_images: int | None = None,
    image_size: int | None = None,
    seed: int | None = None,
    *,
    config: SyntheticShapesConfig | None = None,
) -> SyntheticDataset:
    split = _normalize_split(split)
    if split == "test":
        raise InvalidInputError("the synthetic dataset has only 'train' and 'validation' splits")
    return SyntheticDataset(SyntheticShapes(split, num_images, image_size, seed, config=config))


_HF_DATA_FILES = ("*.parquet", "*.arrow", "*/*.parquet", "*/*.arrow")


# The folder layouts `detect_folder_layout` knows, in the order it tries them, with the file that marks each.
FOLDER_LAYOUTS = {
    "coco_panoptic": "annotations/panoptic_<subset>.json",
    "voc": "SegmentationClass/ (Pascal VOC: + JPEGImages/, ImageSets/Segmentation/)",
    "cvat_mask": "SegmentationClass/ + labelmap.txt (CVAT 'Segmentation mask 1.1' export)",
    **COCO_LAYOUT_MARKERS,
    "ade": "images/ + annotations/ (ADE20K: images/training/, annotations/training/)",
    "hf": "state.json or dataset_dict.json (datasets' save_to_disk), or *.parquet / *.arrow files",
}


def detect_folder_layout(root: str | Path) -> str:
    root = Path(root)
    if (root / "annotations").is_dir() and any((root / "annotations").glob("panoptic_*.json")):
        return "coco_panoptic"
    if is_voc_folder(root):  # SegmentationClass/; CVAT's "Segmentation mask" export adds labelmap.txt
        return "cvat_mask" if (root / "labelmap.txt").is_file() else "voc"
    coco = coco_instances_layout(root)  # before ADE: a CVAT COCO export also has images/ + annotations/
    if coco is not None:
        return coco
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "ade"
    saved = any((root / f).is_file() for f in ("state.json", "dataset_dict.json"))
    if saved or any(next(root.glob(pattern), None) for pattern in _HF_DATA_FILES):
        return "hf"
    known = "; ".join(f"{name}: {marker}" for name, marker in FOLDER_LAYOUTS.items())
    raise InvalidInputError(
        f"{root}: not a known dataset layout. Known layouts (the file that marks each): {known}. "
        f"Contents: {sorted(os.listdir(root))[:20]}"
    )


# The layouts whose loaders read semantic label maps, and so take a label convention (`reduce_labels`).
LABEL_CONVENTION_LAYOUTS = ("ade", "voc", "cvat_mask", "hf")


# A COCO instance JSON file given as the source (`coco_instances.load_coco_instances_file`).
COCO_JSON = "coco_json"
# The layouts whose loaders take `train_val_split` (`splits.plan_split`).
HOLD_OUT_LAYOUTS = ("hf", "ade", "voc", "cvat_mask", COCO_JSON, *COCO_LAYOUT_MARKERS)


def source_layout(source) -> str:
    """Which loader `build_dataset(source)` uses (a key of `_LOADERS`, or ``"synthetic"``)."""
    if isinstance(source, str) and source == "synthetic":
        return "synthetic"
    if not isinstance(source, (str, os.PathLike)):  # a `datasets` object
        return "hf"
    path = Path(source).expanduser()
    if path.is_dir():
        return detect_folder_layout(path)
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InvalidInputError(
                f"{path} is a file but not a COCO instance JSON; a dataset is a folder (layouts: "
                f"{', '.join(FOLDER_LAYOUTS)}), a COCO instance .json file or a datasets name"
            )
        return COCO_JSON
    name = SCRIPT_DATASETS.get(str(source), str(source))
    if name in DATASETS:
        return "coco_panoptic" if name == "coco_panoptic" else "ade"
    return "hf"


_LOADERS = {
    COCO_JSON: load_coco_instances_file,
    "coco_panoptic": load_coco_panoptic_folder,
    "voc": load_voc_folder,
    "cvat_mask": load_voc_folder,
    **dict.fromkeys(COCO_LAYOUT_MARKERS, load_coco_instances_folder),
    "ade": load_ade_folder,
    "hf": load_hf_dataset,
}


def build_dataset(
    source,
    split: str = "train",
    *,
    data_root: str | Path | None = None,
    model=None,
    ignore_class_mismatch: bool = False,
    **kwargs,
) -> SegmentationDataset:
    """``"synthetic"``, a local folder, a COCO instance JSON file, a ``datasets`` object or Hub name, or a `prepare.py`
    name (``"ade20k"``) read from under ``data_root`` (default ``$MASKFORMER_DATA``); ``kwargs`` go to the loader.
    ``model`` (a folder, Hub id, model or `labels.LabelSettings`): read the data for that model, with its recorded
    label convention, class names and held-out items; a dataset whose classes differ is refused
    (``ignore_class_mismatch``: a warning instead)."""
    if model is not None:
        return _dataset_for_model(source, split, data_root, model, ignore_class_mismatch, kwargs)
    if isinstance(source, str) and source == "synthetic":
        return load_synthetic(split, **kwargs)
    if isinstance(source, str) and not Path(source).expanduser().exists():
        source = resolve_name(source, split, data_root) or source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.exists():
            return _LOADERS[source_layout(path)](path, split, **kwargs)
        if str(source).startswith((".", "/", "~")) or path.suffix.lower() == ".json":
            what = "file" if path.suffix.lower() == ".json" else "folder"
            raise MissingInputError(f"dataset {what} {path} not found")
    return load_hf_dataset(source, split, **kwargs)


def resolve_name(source: str, split: str, data_root: str | Path | None = None) -> Path | None:
    """The prepared folder of a `prepare.py` name (or an error naming the command that prepares it); None for others."""
    name = SCRIPT_DATASETS.get(source, source if source in DATASETS else None)
    if name is None:
        return None
    folder = prepared_folder(name, data_root, split)
    if folder is not None:
        return folder
    root = Path(data_root or default_data_root()).expanduser()
    script = f"{source!r} is a loading-script dataset on the Hub, which the installed `datasets` no longer runs; "
    why = script if source in SCRIPT_DATASETS else ""
    raise MissingInputError(
        f"{why}the {DATASETS[name].title} data is not prepared in {root}: run "
        f"`{prepare_command(name, root, [split])}` (or pass --data_root / set {DATA_ROOT_ENV} to where it is, or "
        "--dataset FOLDER)"
    )


def _dataset_for_model(
    source, split, data_root, model, ignore_class_mismatch: bool, kwargs: dict
) -> SegmentationDataset:
    if isinstance(model, LabelSettings):
        settings = model
    elif isinstance(model, (str, os.PathLike)):
        settings = LabelSettings.from_pretrained(model)
    else:
        settings = LabelSettings.from_model(model)
    layout = source_layout(source)
    if settings.held_out is not None and layout in HOLD_OUT_LAYOUTS:
        recorded = HoldOut.from_dict(settings.held_out, settings.source)
        kwargs["train_val_split"] = RecordedHoldOut(recorded, settings.source, kwargs.get("train_val_split"))
    if layout in LABEL_CONVENTION_LAYOUTS:
        kwargs["reduce_labels"] = settings.label_convention(kwargs.get("reduce_labels"))
        if layout in ("ade", "hf") and "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["num_labels"] = settings.num_labels  # no scan; the names come from the data, else the model
    dataset = build_dataset(source, split, data_root=data_root, **kwargs)
    name = f"dataset {source if isinstance(source, (str, os.PathLike)) else type(source).__name__} ({split})"
    settings.check_dataset(dataset, ignore_class_mismatch=ignore_class_mismatch, name=name)
    return dataset
