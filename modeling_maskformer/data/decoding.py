"""Reading annotation files, shared by the dataset sources of `loaders.py`: images that fail to decode, class-index
PNGs (the label convention, colour and out-of-range maps), COCO panoptic PNGs and JSON, class names. Every
problem is a ValueError naming the file (or the `datasets` row) and, where it helps, the fix."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .synthetic import rgb_to_id


def load_progress(iterable=None, *, total: int | None = None, desc: str, unit: str = "it"):
    """A progress bar on stderr for a long load, shown only when it takes over 2 s (so small folders stay quiet)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr, delay=2.0,
                mininterval=1.0, leave=False)  # fmt: skip


def open_rgb(value: Any, source: str | None = None) -> Image.Image:
    return open_image(value, source).convert("RGB")


def open_image(value: Any, source: str | None = None) -> Image.Image:
    """A decoded PIL image from a path, a PIL image or a datasets ``{"bytes", "path"}`` dict; a file that
    cannot be decoded (truncated, damaged, not an image) is a ValueError naming ``source`` (default: the path)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        value = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
    source = source or str(value)
    try:
        image = Image.open(value)
        image.load()
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # PIL's decode errors
        raise ValueError(f"{source}: cannot decode the image ({error}); the file is damaged, truncated or not "
                         f"an image: replace it or remove it (and its annotation)") from error  # fmt: skip
    return image


def check_class_index_mode(image: Image.Image, source: str) -> None:
    if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(
            f"{source}: semantic annotation has mode {image.mode}; expected a single-channel class-index PNG "
            f"(one class id per pixel){' - a colour-coded annotation must first be mapped to class ids' if image.mode in ('RGB', 'RGBA') else ''}"
        )


def require_label_convention(reduce_labels: bool | None, source: str) -> bool:
    if reduce_labels is None:
        raise ValueError(
            f"{source}: semantic annotations: say how to read the pixel values. ADE20K's convention "
            f"(0 = 'other', ignored; 1..K are the classes): reduce_labels=True, on the command line "
            f"--label_convention ade. Values used as they are (0..K-1 are the classes, 255 = ignored): "
            f"reduce_labels=False, --label_convention as_is."
        )
    return reduce_labels


def semantic_from_image(
    image: Image.Image, *, reduce_labels: bool, ignore_index: int, source: str
) -> np.ndarray:
    check_class_index_mode(image, source)
    raw = np.asarray(image)
    if raw.dtype == np.uint8:
        # NOTE: 8-bit maps (ADE20K's, most others) go through a 256-entry table: one gather, no int64 copies
        # (the training data path decodes one per image). Same values as the general path below.
        table = _reduce(np.arange(256), ignore_index) if reduce_labels else np.arange(256)
        if table.max() <= 255:
            return table.astype(np.uint8)[raw]
    labels = raw.astype(np.int64)
    if reduce_labels:
        labels = _reduce(labels, ignore_index)
    return labels.astype(np.uint8 if labels.max(initial=0) <= 255 else np.int32)


def _reduce(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """ADE20K's convention: 0 ('other') -> ignore_index, an existing ignore_index stays, k -> k - 1."""
    return np.where(labels == 0, ignore_index, np.where(labels == ignore_index, ignore_index, labels - 1))


def decode_panoptic(
    png: Image.Image,
    segments_info: list[dict],
    category_to_label: dict[int, int],
    *,
    ignore_index: int,
    source: str,
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """COCO panoptic PNG + segments_info -> (ids int32, segments_info with contiguous ids, semantic)."""
    ids = rgb_to_id(np.asarray(png.convert("RGB")))
    segments = []
    for segment in segments_info:
        if not isinstance(segment, dict) or "id" not in segment or "category_id" not in segment:
            raise ValueError(f"{source}: a segments_info entry without 'id' or 'category_id': {segment}")
        if segment["category_id"] not in category_to_label:
            raise ValueError(f"{source}: unknown category id {segment['category_id']} in segments_info")
        segments.append({**segment, "category_id": category_to_label[segment["category_id"]]})
    duplicates = sorted(i for i, count in Counter(s["id"] for s in segments).items() if count > 1)
    if duplicates:
        raise ValueError(f"{source}: segment id(s) {duplicates} listed more than once in segments_info")
    listed = {s["id"] for s in segments}
    present = set(np.unique(ids).tolist()) - {0}
    if listed - present:
        raise ValueError(
            f"{source}: segment id(s) {sorted(listed - present)} in segments_info are absent from the PNG"
        )
    if present - listed:
        raise ValueError(
            f"{source}: segment id(s) {sorted(present - listed)} in the PNG are missing from segments_info"
        )
    semantic = np.full(ids.shape, ignore_index, dtype=np.uint8 if ignore_index <= 255 else np.int32)
    for segment in segments:
        semantic[ids == segment["id"]] = segment["category_id"]
    return ids, segments, semantic


def read_id2label(root: Path) -> dict[int, str] | None:
    """``id2label.json`` (contiguous training ids, like the Hub's ade20k-id2label.json) or ADE's
    ``objectInfo150.{csv,txt}`` (Idx 1..150, first synonym of Name) from ``root``."""
    path = root / "id2label.json"
    if path.is_file():
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    for name in ("objectInfo150.csv", "objectInfo150.txt"):
        path = root / name
        if path.is_file():
            text = path.read_text()
            dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",\t")
            rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
            try:
                return {int(row["Idx"]) - 1: row["Name"].split(";")[0].split(",")[0].strip() for row in rows}
            except KeyError as error:
                raise ValueError(f"{path}: expected columns Idx and Name, got {list(rows[0])}") from error
    return None


def scan_num_labels(annotations, reduce_labels: bool, ignore_index: int) -> int:
    """Number of classes implied by the largest raw label in the annotations (ignore_index excluded); an
    annotation that is not a class-index image, or a label at or above ignore_index, is an error naming it."""
    top = -1
    total = len(annotations) if hasattr(annotations, "__len__") else None
    for number, annotation in enumerate(
        load_progress(annotations, total=total, desc="counting classes", unit="file")
    ):
        source = str(annotation) if isinstance(annotation, (str, os.PathLike)) else f"row {number}"
        image = open_image(annotation, source)
        check_class_index_mode(image, source)
        labels = np.unique(np.asarray(image)).astype(np.int64)
        labels = labels[labels != ignore_index]
        largest = int(labels.max(initial=-1))
        if largest > ignore_index >= 0:
            raise ValueError(
                f"{source}: label {largest} is above ignore_index {ignore_index}, so the ignore value would be a "
                f"class id. Is it an instance or colour map rather than class ids? If there really are more than "
                f"{ignore_index} classes, pass a larger ignore_index (or id2label)."
            )
        top = max(top, largest)
    if top < 0:
        return 0
    return top if reduce_labels else top + 1


def category_metadata(categories: list[dict]) -> dict[str, Any]:
    """COCO categories (sparse ids) -> contiguous labels, sorted by COCO id."""
    categories = sorted(categories, key=lambda c: c["id"])
    return {
        "category_to_label": {c["id"]: i for i, c in enumerate(categories)},
        "id2label": {i: c["name"] for i, c in enumerate(categories)},
        "thing_ids": [i for i, c in enumerate(categories) if c.get("isthing", 1)],
        "label_to_category_id": {i: c["id"] for i, c in enumerate(categories)},
    }


_COCO_FIELDS = {
    "images": ("id", "file_name"),
    "annotations": ("image_id", "file_name", "segments_info"),
    "categories": ("id", "name"),
}


def _coco_entry_name(entry) -> str:
    if not isinstance(entry, dict):
        return repr(entry)
    for key, prefix in (("file_name", ""), ("image_id", "image id "), ("id", "id "), ("name", "")):
        if key in entry:
            return f"{prefix}{entry[key]}"
    return "?"


def read_coco_panoptic_json(json_path: Path) -> dict:
    """A COCO panoptic JSON, checked for what the loader relies on; every problem is a ValueError naming the
    file and the entry: invalid JSON, missing fields, segment ids listed twice for one image."""
    data = bytearray()
    with open(json_path, "rb") as file, load_progress(total=os.path.getsize(json_path), desc=f"reading {json_path.name}",
                                                      unit="B") as bar:  # fmt: skip
        while chunk := file.read(1 << 22):
            data += chunk
            bar.update(len(chunk))
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{json_path}: not valid JSON ({error}); the file is damaged or truncated"
        ) from error
    if not isinstance(payload, dict):
        raise ValueError(f"{json_path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key, fields in _COCO_FIELDS.items():
        if key not in payload:
            raise ValueError(f"{json_path}: no {key!r} entry (keys: {sorted(payload)})")
        for number, entry in enumerate(payload[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                name = _coco_entry_name(entry)
                raise ValueError(
                    f"{json_path}: {key}[{number}] ({name}) has no {', '.join(map(repr, missing))}"
                )
    if not payload["annotations"]:
        raise ValueError(f"{json_path}: empty 'annotations' list")
    seen_images = set()
    annotations = load_progress(payload["annotations"], desc=f"checking {json_path.name}", unit="annotation")
    for number, annotation in enumerate(annotations):
        where = f"{json_path}: annotations[{number}] ({annotation['file_name']})"
        if annotation["image_id"] in seen_images:
            raise ValueError(f"{where}: a second annotation for image id {annotation['image_id']}")
        seen_images.add(annotation["image_id"])
        if not isinstance(annotation["segments_info"], list):
            raise ValueError(f"{where}: 'segments_info' must be a list")
        ids = []
        for segment in annotation["segments_info"]:
            missing = [f for f in ("id", "category_id") if not isinstance(segment, dict) or f not in segment]
            if missing:
                raise ValueError(f"{where}: a segment without {', '.join(map(repr, missing))}: {segment}")
            ids.append(segment["id"])
        duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
        if duplicates:
            raise ValueError(f"{where}: segment id(s) {duplicates} listed more than once in segments_info")
    return payload
