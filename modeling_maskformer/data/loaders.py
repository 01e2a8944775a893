"""Dataset sources, each yielding the item format of `dataset.py`: ADE20K-style folders, COCO panoptic
folders, Hugging Face `datasets`, and the built-in synthetic shapes; `build_dataset` picks one."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from PIL import Image

from .dataset import SegmentationDataset, SegmentationItem, Task
from .decoding import (
    category_metadata,
    check_class_index_mode,
    decode_panoptic,
    open_image,
    open_rgb,
    read_coco_panoptic_json,
    read_id2label,
    require_label_convention,
    scan_num_labels,
    semantic_from_image,
)
from .prepare import resolve_name
from .synthetic import SyntheticShapes, SyntheticShapesConfig, rgb_to_id

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Split names accepted everywhere, normalised to "train" / "validation" / "test".
_SPLITS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}
_ADE_SPLIT_DIRS = {"train": "training", "validation": "validation", "test": "testing"}
_COCO_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}


def _normalize_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLITS)}")
    return _SPLITS[split]


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------------------
# ADE20K-style folders.


class AdeFolderDataset(SegmentationDataset):
    """``root/images/<split>/*.jpg`` + ``root/annotations/<split>/*.png`` (same stem)."""

    def __init__(self, pairs: list[tuple[Path, Path]], **metadata):
        super().__init__(**metadata)
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def _source(self, index: int) -> str:
        return str(self.pairs[index][1])

    def _load(self, index: int) -> SegmentationItem:
        image_path, annotation_path = self.pairs[index]
        semantic = semantic_from_image(
            open_image(annotation_path),
            reduce_labels=self.reduce_labels,
            ignore_index=self.ignore_index,
            source=str(annotation_path),
        )
        image = open_rgb(image_path)
        if semantic.shape != (image.height, image.width):
            raise ValueError(
                f"{annotation_path}: annotation size {semantic.shape[1]}x{semantic.shape[0]} (WxH) differs from "
                f"image {image_path} size {image.width}x{image.height}"
            )
        return {
            "image": image,
            "semantic": semantic,
            "panoptic_ids": None,
            "segments_info": None,
            "image_id": image_path.stem,
        }


def load_ade_folder(
    root: str | Path,
    split: str = "train",
    *,
    reduce_labels: bool | None = True,
    ignore_index: int = 255,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    thing_ids: Sequence[int] = (),
) -> AdeFolderDataset:
    """An ADEChallengeData2016-style folder.

    ``root/images/{training,validation}/`` and ``root/annotations/{...}/``, or flat ``root/images/`` and
    ``root/annotations/`` (then ``split`` is ignored). Class names come from ``id2label``, else
    ``root/id2label.json`` or ``root/objectInfo150.{csv,txt}``, else numbers; with none of these and no
    ``num_labels`` the annotations are scanned for the largest label (slow on large folders).

    ``reduce_labels``: True for ADE20K's convention (0 = "other", ignored; 1..K are classes 0..K-1), False
    for values used as they are; None refuses to guess (a ValueError asking for the choice).
    """
    root = Path(root)
    split = _normalize_split(split)
    for sub in ("images", "annotations"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"ADE folder {root}: missing folder {root / sub}")
    if not any((root / "images").iterdir()):
        raise ValueError(f"ADE folder {root}: {root / 'images'} is empty (expected images/{_ADE_SPLIT_DIRS[split]}/*.jpg "
                         f"or images/*.jpg)")  # fmt: skip
    image_dir, annotation_dir = (
        root / "images" / _ADE_SPLIT_DIRS[split],
        root / "annotations" / _ADE_SPLIT_DIRS[split],
    )
    if not image_dir.is_dir():
        if _list_images(root / "images"):  # flat layout
            image_dir, annotation_dir = root / "images", root / "annotations"
        else:
            raise FileNotFoundError(f"ADE folder {root}: missing split folder {image_dir}")
    if not annotation_dir.is_dir():
        raise FileNotFoundError(f"ADE folder {root}: missing split folder {annotation_dir}")
    images = _list_images(image_dir)
    if not images:
        raise ValueError(f"ADE folder {root}: no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    annotations = {p.stem: p for p in annotation_dir.iterdir() if p.suffix.lower() == ".png"}
    missing = [p.name for p in images if p.stem not in annotations]
    if missing:
        raise FileNotFoundError(
            f"ADE folder {root}: {len(missing)} image(s) without annotation in {annotation_dir}, e.g. {missing[0]}"
        )
    pairs = [(p, annotations[p.stem]) for p in images]
    # Cheap (header only) and before any scan: a colour annotation must fail with its own message.
    with Image.open(pairs[0][1]) as first:
        check_class_index_mode(first, str(pairs[0][1]))
    reduce_labels = require_label_convention(reduce_labels, f"ADE folder {root}")

    id2label = id2label or read_id2label(root)
    if id2label is None:
        if num_labels is None:
            num_labels = scan_num_labels([a for _, a in pairs], reduce_labels, ignore_index)
            if num_labels == 0:
                raise ValueError(f"ADE folder {root}: no annotation in {annotation_dir} has a class pixel (all are "
                                 f"ignored{' or 0' if reduce_labels else ''}); check reduce_labels / --label_convention")  # fmt: skip
        id2label = {i: str(i) for i in range(num_labels)}
    return AdeFolderDataset(
        pairs, id2label=id2label, thing_ids=thing_ids, ignore_index=ignore_index, reduce_labels=reduce_labels
    )


# --------------------------------------------------------------------------------------------------
# COCO-panoptic-style folders.


class CocoPanopticDataset(SegmentationDataset):
    """Images + panoptic PNGs + a COCO panoptic JSON."""

    task: Task = "panoptic"

    def __init__(
        self, records: list[tuple[Path, Path, list[dict]]], category_to_label: dict[int, int], **metadata
    ):
        super().__init__(**metadata)
        self.records = records
        self.category_to_label = category_to_label

    def __len__(self) -> int:
        return len(self.records)

    def _source(self, index: int) -> str:
        return str(self.records[index][1])

    def _load(self, index: int) -> SegmentationItem:
        image_path, png_path, segments_info = self.records[index]
        image = open_rgb(image_path)
        png = open_image(png_path)
        if png.size != image.size:
            raise ValueError(
                f"{png_path}: annotation size {png.width}x{png.height} (WxH) differs from image {image_path} "
                f"size {image.width}x{image.height}"
            )
        ids, segments, semantic = decode_panoptic(
            png, segments_info, self.category_to_label, ignore_index=self.ignore_index, source=str(png_path)
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
    """A COCO panoptic folder: ``root/{split}2017/*.jpg``, ``root/annotations/panoptic_{split}2017.json``
    and ``root/annotations/panoptic_{split}2017/*.png``; any of the three can be given explicitly."""
    coco_split = _COCO_SPLIT_NAMES[_normalize_split(split)] + "2017"
    if root is None and None in (images_dir, json_path, png_dir):
        raise ValueError("give root, or all of images_dir, json_path and png_dir")
    root = Path(root) if root is not None else None
    images_dir = Path(images_dir) if images_dir else root / coco_split
    json_path = Path(json_path) if json_path else root / "annotations" / f"panoptic_{coco_split}.json"
    png_dir = Path(png_dir) if png_dir else root / "annotations" / f"panoptic_{coco_split}"
    for path, is_file in ((json_path, True), (images_dir, False), (png_dir, False)):
        if not (path.is_file() if is_file else path.is_dir()):
            raise FileNotFoundError(f"COCO panoptic: missing {'file' if is_file else 'folder'} {path}")

    payload = read_coco_panoptic_json(json_path)
    metadata = category_metadata(payload["categories"])
    images_by_id = {image["id"]: image for image in payload["images"]}
    annotated = {a["image_id"] for a in payload["annotations"]}
    unannotated = [image["file_name"] for image in payload["images"] if image["id"] not in annotated]
    if unannotated:
        raise ValueError(
            f"{json_path}: {len(unannotated)} image(s) without annotation, e.g. {unannotated[0]}"
        )
    image_files, png_files = set(os.listdir(images_dir)), set(os.listdir(png_dir))
    if not image_files:
        raise FileNotFoundError(f"COCO panoptic: the image folder {images_dir} is empty")

    records = []
    for annotation in payload["annotations"]:
        image = images_by_id.get(annotation["image_id"])
        if image is None:
            raise ValueError(
                f"{json_path}: annotation {annotation['file_name']} refers to unknown image id "
                f"{annotation['image_id']}"
            )
        if image["file_name"] not in image_files:
            raise FileNotFoundError(f"COCO panoptic: image {images_dir / image['file_name']} not found")
        if annotation["file_name"] not in png_files:
            raise FileNotFoundError(
                f"COCO panoptic: annotation PNG {png_dir / annotation['file_name']} not found"
            )
        for segment in annotation["segments_info"]:
            if segment["category_id"] not in metadata["category_to_label"]:
                raise ValueError(
                    f"{json_path}: unknown category id {segment['category_id']} in segments_info "
                    f"of {annotation['file_name']}"
                )
        records.append(
            (images_dir / image["file_name"], png_dir / annotation["file_name"], annotation["segments_info"])
        )
    category_to_label = metadata.pop("category_to_label")
    return CocoPanopticDataset(records, category_to_label, ignore_index=ignore_index, **metadata)


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets.

_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_SEMANTIC_COLUMNS = ("annotation", "semantic", "semantic_map", "segmentation", "label", "mask")
_PANOPTIC_COLUMNS = ("label", "panoptic", "panoptic_map", "annotation", "segmentation", "mask")


class HFDataset(SegmentationDataset):
    """A ``datasets.Dataset`` with image + semantic PNG, or image + panoptic PNG + segments_info."""

    def __init__(
        self,
        dataset,
        task: Task,
        image_column: str,
        annotation_column: str,
        category_to_label: dict[int, int] | None = None,
        **metadata,
    ):
        super().__init__(**metadata)
        self.dataset, self.task = dataset, task
        self.image_column, self.annotation_column = image_column, annotation_column
        self.category_to_label = category_to_label

    def __len__(self) -> int:
        return len(self.dataset)

    def _source(self, index: int) -> str:
        return f"row {index}"

    def _load(self, index: int) -> SegmentationItem:
        row = self.dataset[index]
        image_id = str(row.get("image_id", index))
        source = f"row {index} (image_id {image_id})"
        image = open_rgb(row[self.image_column], f"{source}, column {self.image_column!r}")
        annotation = open_image(row[self.annotation_column], f"{source}, column {self.annotation_column!r}")
        if annotation.size != image.size:
            raise ValueError(
                f"{source}: annotation size {annotation.width}x{annotation.height} (WxH) differs from "
                f"image size {image.width}x{image.height}"
            )
        if self.task == "semantic":
            semantic = semantic_from_image(
                annotation, reduce_labels=self.reduce_labels, ignore_index=self.ignore_index, source=source
            )
            return {
                "image": image,
                "semantic": semantic,
                "panoptic_ids": None,
                "segments_info": None,
                "image_id": image_id,
            }
        if row.get("segments_info") is None:
            raise ValueError(f"{source}: no segments_info")
        ids, segments, semantic = decode_panoptic(
            annotation,
            row["segments_info"],
            self.category_to_label,
            ignore_index=self.ignore_index,
            source=source,
        )
        return {
            "image": image,
            "semantic": semantic,
            "panoptic_ids": ids,
            "segments_info": segments,
            "image_id": image_id,
        }


def _pick_column(columns: list[str], given: str | None, candidates: Sequence[str], what: str) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"{what} column {given!r} not found; columns are {columns}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"cannot find the {what} column (tried {list(candidates)}); columns are {columns}. "
        f"Pass it explicitly."
    )


def load_hf_dataset(
    name_or_path,
    split: str = "train",
    *,
    task: Task | None = None,
    image_column: str | None = None,
    annotation_column: str | None = None,
    reduce_labels: bool | None = True,
    ignore_index: int = 255,
    id2label: dict[int, str] | None = None,
    num_labels: int | None = None,
    categories: list[dict] | None = None,
    thing_ids: Sequence[int] = (),
    **load_kwargs,
) -> HFDataset:
    """A Hugging Face dataset: a ``datasets.Dataset``/``DatasetDict`` object, a folder written by
    ``save_to_disk``, or anything ``datasets.load_dataset`` takes (Hub name, local data folder).

    The task is panoptic when a ``segments_info`` column exists (the PNG column is one of
    ``label``/``panoptic``/``annotation``/...), otherwise semantic (``annotation``/``semantic``/``label``/...).

    Semantic PNGs follow ADE's convention by default (0 = other, like scene_parse_150): pass
    ``reduce_labels=False`` when 0 is a real class (None: refuse to guess, asking for the choice). Class names: ``id2label``, else ``id2label.json`` in a
    local folder, else numbers (``num_labels``, or a scan of the annotations: slow on big data).

    Panoptic category ids: ``categories`` (COCO list, sparse ids mapped to 0..K-1), else
    ``categories.json`` in a local folder, else a ClassLabel feature on ``segments_info.category_id``, else
    the ids as they are (``id2label`` or numbers up to the largest id seen). ``thing_ids`` applies to the
    last two cases.
    """
    import datasets

    folder = None
    if isinstance(name_or_path, (datasets.Dataset, datasets.DatasetDict)):
        dataset = name_or_path
    elif Path(name_or_path).is_dir() and any(
        (Path(name_or_path) / f).is_file() for f in ("state.json", "dataset_dict.json")
    ):
        folder = Path(name_or_path)
        dataset = datasets.load_from_disk(str(folder))
    else:
        folder = Path(name_or_path) if Path(name_or_path).is_dir() else None
        dataset = _load_split(datasets, str(name_or_path), split, load_kwargs)
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[_hf_split_name(list(dataset), split)]

    columns = list(dataset.column_names)
    if task is None:
        task = "panoptic" if "segments_info" in columns else "semantic"
    if task == "panoptic" and "segments_info" not in columns:
        raise ValueError(f"panoptic data needs a 'segments_info' column; columns are {columns}")
    image_column = _pick_column(columns, image_column, _IMAGE_COLUMNS, "image")
    candidates = _PANOPTIC_COLUMNS if task == "panoptic" else _SEMANTIC_COLUMNS
    annotation_column = _pick_column(
        [c for c in columns if c != image_column], annotation_column, candidates, f"{task} annotation"
    )
    common = {
        "image_column": image_column,
        "annotation_column": annotation_column,
        "ignore_index": ignore_index,
    }

    if task == "semantic":
        described = (
            f"dataset {name_or_path}"
            if folder is not None or isinstance(name_or_path, str)
            else "the dataset"
        )
        reduce_labels = require_label_convention(reduce_labels, described)
        if id2label is None and folder is not None:
            id2label = read_id2label(folder)
        if id2label is None:
            if num_labels is None:
                num_labels = scan_num_labels(dataset[annotation_column], reduce_labels, ignore_index)
            id2label = {i: str(i) for i in range(num_labels)}
        return HFDataset(
            dataset, "semantic", id2label=id2label, thing_ids=thing_ids, reduce_labels=reduce_labels, **common
        )

    if categories is None and folder is not None and (folder / "categories.json").is_file():
        categories = json.loads((folder / "categories.json").read_text())
    if categories is not None:
        metadata = category_metadata(categories)
        category_to_label = metadata.pop("category_to_label")
        return HFDataset(dataset, "panoptic", category_to_label=category_to_label, **metadata, **common)
    feature = dataset.features["segments_info"]
    feature = (
        feature.feature
        if hasattr(feature, "feature")
        else feature[0]
        if isinstance(feature, list)
        else feature
    )
    category_feature = feature.get("category_id") if isinstance(feature, dict) else None
    if id2label is None and isinstance(category_feature, datasets.ClassLabel):
        id2label = dict(enumerate(category_feature.names))
    if id2label is None:
        top = max((s["category_id"] for segments in dataset["segments_info"] for s in segments), default=-1)
        id2label = {i: str(i) for i in range(top + 1)}
    return HFDataset(
        dataset,
        "panoptic",
        category_to_label={i: i for i in id2label},
        id2label=id2label,
        thing_ids=thing_ids,
        **common,
    )


def _split_candidates(split: str) -> list[str]:
    canonical = _normalize_split(split)
    return list(dict.fromkeys((split, canonical, _COCO_SPLIT_NAMES[canonical])))


def _hf_split_name(available: list[str], split: str) -> str:
    """Map our split name to the dataset's ("validation" vs "val")."""
    for name in _split_candidates(split):
        if name in available:
            return name
    raise ValueError(f"split {split!r} not found; the dataset has splits {available}")


def _load_split(datasets, name: str, split: str, load_kwargs: dict):
    """``datasets.load_dataset`` for one split, trying the aliases of its name ("validation", "val")."""
    candidates = _split_candidates(split)
    try:
        for candidate in candidates[:-1]:
            try:
                return datasets.load_dataset(name, split=candidate, **load_kwargs)
            except ValueError as error:  # datasets: 'Unknown split "validation". Should be one of [...]'
                if "split" not in str(error).lower():
                    raise
        return datasets.load_dataset(name, split=candidates[-1], **load_kwargs)
    except RuntimeError as error:
        # NOTE: datasets >= 4.0 refuses loading scripts: "Dataset scripts are no longer supported, but found x.py".
        if "scripts are no longer supported" not in str(error):
            raise
        raise ValueError(
            f"dataset {name!r} is a loading script, which datasets {datasets.__version__} no longer runs ({error}); "
            f"download its data and pass the folder (ADE20K, COCO panoptic and Cityscapes: python "
            f"scripts/prepare_data.py NAME --root DIR, see --help)"
        ) from error


# --------------------------------------------------------------------------------------------------
# Synthetic scenes.


class SyntheticDataset(SegmentationDataset):
    """``synthetic.SyntheticShapes`` in the common item format (panoptic, with semantic maps)."""

    task: Task = "panoptic"

    def __init__(self, shapes: SyntheticShapes):
        super().__init__(
            id2label=shapes.id2label, thing_ids=shapes.thing_ids, ignore_index=shapes.ignore_index
        )
        self.shapes = shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def _load(self, index: int) -> SegmentationItem:
        item = self.shapes[index]
        return {
            "image": item["image"],
            "semantic": item["semantic"],
            "panoptic_ids": rgb_to_id(item["panoptic"]),
            "segments_info": item["segments_info"],
            "image_id": item["image_id"],
        }


def load_synthetic(
    split: str = "train",
    num_images: int | None = None,
    image_size: int | None = None,
    seed: int | None = None,
    *,
    config: SyntheticShapesConfig | None = None,
) -> SyntheticDataset:
    """The built-in procedural dataset (see synthetic.py)."""
    split = _normalize_split(split)
    if split == "test":
        raise ValueError("the synthetic dataset has only 'train' and 'validation' splits")
    return SyntheticDataset(SyntheticShapes(split, num_images, image_size, seed, config=config))


# --------------------------------------------------------------------------------------------------
# Dispatch.


_HF_DATA_FILES = ("*.parquet", "*.arrow", "*/*.parquet", "*/*.arrow")


def detect_folder_layout(root: str | Path) -> Literal["coco_panoptic", "ade", "hf"]:
    """Which layout a local folder has; ValueError listing its contents when none fits."""
    root = Path(root)
    if (root / "annotations").is_dir() and any((root / "annotations").glob("panoptic_*.json")):
        return "coco_panoptic"
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "ade"
    saved = any((root / f).is_file() for f in ("state.json", "dataset_dict.json"))
    if saved or any(next(root.glob(pattern), None) for pattern in _HF_DATA_FILES):
        return "hf"
    raise ValueError(
        f"{root}: not a known dataset layout (COCO panoptic: annotations/panoptic_*.json; ADE: images/ + "
        f"annotations/; datasets save_to_disk or parquet/arrow files). Contents: {sorted(os.listdir(root))[:20]}"
    )


def build_dataset(
    source, split: str = "train", *, data_root: str | Path | None = None, **kwargs
) -> SegmentationDataset:
    """One entry point: ``"synthetic"``, a local folder (ADE, COCO panoptic, ``save_to_disk`` output or
    parquet/arrow files; detected), a ``datasets`` object, or a Hugging Face dataset name. ``kwargs`` go
    to the loader.

    A name of `prepare.py` (``"ade20k"``, ``"coco_panoptic"``, ``"cityscapes"``) or a Hub name whose loading script
    `datasets` no longer runs (``"scene_parse_150"``) reads the folder `scripts/prepare_data.py` left under
    ``data_root`` (default ``$MASKFORMER_DATA``, else ``~/.cache/maskformer-hf/datasets``); when it is not there,
    a FileNotFoundError names the command that prepares it."""
    if isinstance(source, str) and source == "synthetic":
        return load_synthetic(split, **kwargs)
    if isinstance(source, str) and not Path(source).expanduser().exists():
        source = resolve_name(source, split, data_root) or source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            layout = detect_folder_layout(path)
            if layout == "coco_panoptic":
                return load_coco_panoptic_folder(path, split, **kwargs)
            if layout == "ade":
                return load_ade_folder(path, split, **kwargs)
            return load_hf_dataset(path, split, **kwargs)
        if path.exists() or str(source).startswith((".", "/", "~")):
            raise FileNotFoundError(f"dataset folder {path} not found")
    return load_hf_dataset(source, split, **kwargs)
