"""Hugging Face `datasets` as a source: a ``Dataset``/``DatasetDict``, a ``save_to_disk`` folder, a local data folder
or a Hub dataset id, whose annotation column is a semantic PNG (or colour mask with a ``palette``), a COCO panoptic
PNG with ``segments_info``, or transformers' instance-segmentation example format (``semantic_class_to_id``)
(docs/data-masks.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import datasets
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from ..errors import InvalidInputError
from .class_names import check_palette_names, find_id2label, names_for_convention, parse_id2label, read_id2label_file
from .dataset import SegmentationDataset, SegmentationItem, Task
from .decoding import (
    category_metadata,
    decode_class_and_instance,
    decode_panoptic,
    decode_semantic,
    open_image,
    open_rgb,
    require_label_convention,
    scan_num_labels,
    warn_if_binary,
)
from .palette import Palette, read_palette
from .splits import RecordedHoldOut, plan_split

logger = logging.getLogger(__name__)

_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_SEMANTIC_COLUMNS = ("annotation", "semantic", "semantic_map", "segmentation", "label", "mask")
_PANOPTIC_COLUMNS = ("label", "panoptic", "panoptic_map", "annotation", "segmentation", "mask")
CLASS_MAP_COLUMN = "semantic_class_to_id"  # transformers' instance-segmentation example: {name: class id} per row
ID2LABEL_FILE = "id2label.json"

Kind = Literal["semantic", "panoptic", "class_instance"]


class HFDataset(SegmentationDataset):
    """A ``datasets.Dataset`` with an image column and an annotation column of one `Kind`."""

    def __init__(
        self,
        dataset,
        kind: Kind,
        image_column: str,
        label_column: str,
        *,
        category_to_label: dict[int, int] | None = None,
        palette: Palette | None = None,
        stuff_ids: Sequence[int] = (),
        **metadata,
    ):
        super().__init__(**metadata)
        self.dataset, self.kind = dataset, kind
        self.task: Task = "semantic" if kind == "semantic" else "panoptic"
        self.image_column, self.label_column = image_column, label_column
        self.category_to_label, self.palette, self.stuff_ids = category_to_label, palette, list(stuff_ids)
        if kind == "panoptic":  # segments_info's categories name the classes
            self.convention_from = None
        if palette is not None:  # colour masks: the palette names the classes, no convention applies
            self.convention_from = f"the colours of {palette.source}"

    def __len__(self) -> int:
        return len(self.dataset)

    def _source(self, index: int) -> str:
        return f"row {index}"

    def _load(self, index: int) -> SegmentationItem:
        row = self.dataset[index]
        image_id = str(row.get("image_id", index))
        source = f"row {index} (image_id {image_id})"
        image = open_rgb(row[self.image_column], f"{source}, column {self.image_column!r}", decode=self.decode_images)
        annotation = open_image(row[self.label_column], f"{source}, column {self.label_column!r}")
        item = {"image": image, "image_id": image_id}
        common = {"ignore_index": self.ignore_index, "source": source}
        if self.kind == "semantic":
            semantic = decode_semantic(annotation, reduce_labels=self.reduce_labels, palette=self.palette, **common)
            return {**item, "semantic": semantic}
        if self.kind == "class_instance":
            ids, segments, semantic = decode_class_and_instance(
                annotation, reduce_labels=self.reduce_labels, stuff_ids=self.stuff_ids, **common
            )
        elif row.get("segments_info") is None:
            raise InvalidInputError(f"{source}: no segments_info")
        else:
            ids, segments, semantic = decode_panoptic(
                annotation, row["segments_info"], self.category_to_label, **common
            )
        return {**item, "semantic": semantic, "panoptic_ids": ids, "segments_info": segments}


def _pick_column(columns: list[str], given: str | None, candidates: Sequence[str], what: str, flag: str) -> str:
    if given is not None and given not in columns:
        raise InvalidInputError(f"{what} column {given!r} ({flag}) not found; columns are {columns}")
    if found := given or next((name for name in candidates if name in columns), None):
        return found
    raise InvalidInputError(
        f"cannot find the {what} column (tried {list(candidates)}); columns are {columns}. Name it with {flag} COLUMN."
    )


def _open(name_or_path, split: str, train_val_split: float | RecordedHoldOut | None, load_kwargs: dict):
    """(the planned ``datasets.Dataset``, its local folder, its Hub id, a description, what was held out)."""
    folder = hub_id = None
    if isinstance(name_or_path, (datasets.Dataset, datasets.DatasetDict)):
        source, where = name_or_path, "the dataset"
    elif any((Path(name_or_path) / f).is_file() for f in ("state.json", "dataset_dict.json")):  # save_to_disk
        folder = Path(name_or_path)
        source, where = datasets.load_from_disk(str(folder)), f"dataset {folder}"
    else:  # a data folder or a Hub id: every subset (datasets prepares them all, whichever split is asked for)
        name = str(name_or_path)
        folder = Path(name) if Path(name).is_dir() else None
        hub_id, where = (None if folder else name), f"dataset {name}"
        try:
            source = datasets.load_dataset(name, **load_kwargs)
        except RuntimeError as error:
            # NOTE: datasets >= 4.0 refuses loading scripts: "Dataset scripts are no longer supported, but found x.py".
            if "scripts are no longer supported" not in str(error):
                raise
            raise InvalidInputError(
                f"dataset {name!r} is a loading script, which datasets {datasets.__version__} no longer runs "
                f"({error}); download its data and pass the folder (ADE20K, COCO panoptic and Cityscapes: python "
                "scripts/prepare_data.py NAME --root DIR, see --help)"
            ) from error
    available = list(source) if isinstance(source, datasets.DatasetDict) else None
    plan = plan_split(split, available, train_val_split, where)
    data = source[plan.subset] if available is not None else source
    indices = plan.select(len(data))
    whole = isinstance(indices, range) and indices == range(len(data))
    return (data if whole else data.select(indices)), folder, hub_id, where, plan.held_out(len(data))


def fetch_hub_id2label(repo_id: str, revision: str | None = None) -> dict[int, str] | None:
    """``id2label.json`` of a Hub dataset repo, as transformers' semantic-segmentation example reads it (None: none)."""
    try:
        path = hf_hub_download(repo_id, ID2LABEL_FILE, repo_type="dataset", revision=revision)
    except OSError as error:  # offline and not in the cache (LocalEntryNotFoundError), network errors, not a dataset
        logger.warning("dataset %s: could not fetch %s from the Hub (%s)", repo_id, ID2LABEL_FILE, error)
        return None
    except EntryNotFoundError:
        logger.info("dataset %s: the Hub repo has no %s", repo_id, ID2LABEL_FILE)
        return None
    return read_id2label_file(path)


def _class_map_names(dataset, reduce_labels: bool, where: str) -> dict[int, str]:
    """id2label from the instance format's ``semantic_class_to_id`` column ({name: pixel value of R}, row 0)."""
    label2id = dataset.select_columns([CLASS_MAP_COLUMN])[0][CLASS_MAP_COLUMN]
    if not isinstance(label2id, dict):
        raise InvalidInputError(
            f"{where}: column {CLASS_MAP_COLUMN!r} must hold {{class name: class id}}, got {label2id!r}"
        )
    id2label = parse_id2label(
        {value: name for name, value in label2id.items() if value is not None}, f"{where}, column {CLASS_MAP_COLUMN!r}"
    )
    if not reduce_labels:
        return id2label
    # NOTE: as the example's --do_reduce_labels: class 0 ("background") is dropped, the others shift down by one.
    logger.info("%s: --label_convention ade: class 0 (%r) ignored, R = k is class k-1", where, id2label[0])
    return {key - 1: name for key, name in id2label.items() if key}


def load_hf_dataset(
    name_or_path,
    split: str = "train",
    *,
    task: Task | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    reduce_labels: bool | None = None,
    ignore_index: int = 255,
    id2label: dict[int, str] | None = None,
    id2label_file: str | Path | None = None,
    num_labels: int | None = None,
    categories: list[dict] | None = None,
    thing_ids: Sequence[int] = (),
    palette: str | Path | Palette | None = None,
    train_val_split: float | RecordedHoldOut | None = None,
    **load_kwargs,
) -> HFDataset:
    """A Hugging Face dataset (docs/data-masks.md); ``load_kwargs`` go to ``datasets.load_dataset``. Semantic PNGs
    need their label convention (``reduce_labels``: True for ADE's, False when the values are the classes, None
    refuses to guess). Panoptic category ids: ``categories`` (COCO list), else a local ``categories.json``, else a
    ClassLabel on ``segments_info.category_id``, else the ids as they are (``thing_ids`` applies to the last two)."""
    dataset, folder, hub_id, where, held_out = _open(name_or_path, split, train_val_split, load_kwargs)
    if isinstance(palette, (str, Path)):
        palette = read_palette(palette)
    columns = list(dataset.column_names)
    image_column = _pick_column(columns, image_column, _IMAGE_COLUMNS, "image", "--image_column")
    others = [c for c in columns if c != image_column]
    kind: Kind = "panoptic" if task == "panoptic" or (task is None and "segments_info" in columns) else "semantic"
    if task is None and kind == "semantic" and CLASS_MAP_COLUMN in columns and palette is None:
        kind = "class_instance"
    if kind == "panoptic" and "segments_info" not in columns:
        raise InvalidInputError(f"{where}: panoptic data needs a 'segments_info' column; columns are {columns}")
    candidates = _PANOPTIC_COLUMNS if kind == "panoptic" else _SEMANTIC_COLUMNS
    what = f"{kind.replace('_', ' ')} annotation"
    label_column = _pick_column(others, label_column, candidates, what, "--label_column")
    common = dict(image_column=image_column, label_column=label_column, ignore_index=ignore_index, held_out=held_out)
    if not len(dataset):
        raise InvalidInputError(f"{where}: split {split!r} has no rows")

    if kind == "panoptic":
        if id2label is None and id2label_file is not None:  # panoptic ids have no label convention
            id2label = read_id2label_file(id2label_file)
        if palette is not None:
            raise InvalidInputError(f"{where}: --palette reads semantic colour masks; this dataset is panoptic")
        return _panoptic(dataset, folder, categories, id2label, thing_ids, common)
    if palette is not None:
        if reduce_labels:
            logger.info("%s: colour masks read with %s; the label convention does not apply", where, palette.source)
        check_palette_names(id2label, palette, where)
        metadata = dict(id2label=palette.id2label, thing_ids=thing_ids, reduce_labels=False)
        return HFDataset(dataset, "semantic", palette=palette, **metadata, **common)
    reduce_labels = require_label_convention(reduce_labels, where)
    if kind == "class_instance":
        id2label = find_id2label(id2label, id2label_file, None, reduce_labels)  # keyed by R, like the column
        if id2label is None:
            id2label = _class_map_names(dataset, reduce_labels, where)
        stuff = [] if reduce_labels else [0]
        meta = dict(id2label=id2label, reduce_labels=reduce_labels, thing_ids=[i for i in id2label if i not in stuff])
        return HFDataset(dataset, "class_instance", stuff_ids=stuff, **meta, **common)

    warn_if_binary(dataset[label_column], reduce_labels=reduce_labels, ignore_index=ignore_index, source=where)
    id2label = find_id2label(id2label, id2label_file, folder, reduce_labels)
    if id2label is None and hub_id is not None:
        fetched = fetch_hub_id2label(hub_id, load_kwargs.get("revision"))
        if fetched is not None:
            id2label = names_for_convention(fetched, reduce_labels, f"{ID2LABEL_FILE} of the Hub dataset {hub_id}")
    if id2label is None:
        if num_labels is None:
            num_labels = scan_num_labels(dataset[label_column], reduce_labels, ignore_index)
        id2label = {i: str(i) for i in range(num_labels)}
        names = f"no class names (no --id2label, no {ID2LABEL_FILE})"
        logger.warning(f"{where}: {names}: the {num_labels} classes are named by their ids")
    return HFDataset(
        dataset, "semantic", id2label=id2label, thing_ids=thing_ids, reduce_labels=reduce_labels, **common
    )


def _panoptic(dataset, folder, categories, id2label, thing_ids, common) -> HFDataset:
    if categories is None and folder is not None and (folder / "categories.json").is_file():
        categories = json.loads((folder / "categories.json").read_text())
    if categories is not None:
        metadata = category_metadata(categories)
        if id2label is not None and dict(id2label) != metadata["id2label"]:
            raise InvalidInputError(
                f"the dataset's categories name the classes {list(metadata['id2label'].values())[:8]}, "
                f"but id2label gives {list(id2label.values())[:8]}"
            )
        category_to_label = metadata.pop("category_to_label")
        return HFDataset(dataset, "panoptic", category_to_label=category_to_label, **metadata, **common)
    feature = dataset.features["segments_info"]
    feature = feature.feature if hasattr(feature, "feature") else feature[0] if isinstance(feature, list) else feature
    category_feature = feature.get("category_id") if isinstance(feature, dict) else None
    if id2label is None and isinstance(category_feature, datasets.ClassLabel):
        id2label = dict(enumerate(category_feature.names))
    if id2label is None:
        top = max((s["category_id"] for segments in dataset["segments_info"] for s in segments), default=-1)
        id2label = {i: str(i) for i in range(top + 1)}
    identity = {i: i for i in id2label}
    return HFDataset(dataset, "panoptic", category_to_label=identity, id2label=id2label, thing_ids=thing_ids, **common)
