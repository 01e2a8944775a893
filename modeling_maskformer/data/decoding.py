"""Reading images and annotation files for every source; each problem is one error naming the file and the fix."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from .dataset import present_labels
from .palette import Palette
from .synthetic import rgb_to_id

logger = logging.getLogger(__name__)


load_progress = functools.partial(tqdm, delay=2.0, mininterval=1.0, leave=False)


def open_rgb(value: Any, source: str | None = None, *, decode: bool = True) -> Image.Image:
    image = open_image(value, source, decode=decode)
    return image.convert("RGB") if decode else image


def open_image(value: Any, source: str | None = None, *, decode: bool = True) -> Image.Image:
    """A decoded image from a path, a PIL image or a datasets ``{"bytes", "path"}`` dict. ``decode=False`` (the data
    check): the closed header-only image. NOTE: JPEGs are then decoded at 1/8 scale: libjpeg still reads the whole
    entropy-coded stream, so a damaged file fails as in a full decode, at ~60 % of its cost."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data = value.get("bytes")
        value = value["path"] if data is None else io.BytesIO(data)
    source = source or str(value)
    try:
        image = Image.open(value)
        if not decode:
            size, mode = image.size, image.mode
            image.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))  # a no-op for formats other than JPEG
        image.load()
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # PIL's decode errors
        raise InvalidInputError(
            f"{source}: cannot decode the image ({error}); the file is damaged, truncated or not "
            f"an image: replace it or remove it (and its annotation)"
        ) from error
    if decode:
        return image
    if isinstance(value, io.BytesIO):
        value.seek(0)
    header = Image.open(value)  # NOTE: lazy: reads the header only; closed, it keeps size, mode and info
    header.close()
    return header


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INDEX_MODES = ("L", "P", "I", "I;16")  # single-channel class-index images
# Lossy label files are refused: compression changes label values.
LOSSY_LABEL_SUFFIXES = (".jpg", ".jpeg")
_LOSSY_FORMATS = ("JPEG", "MPO")

PALETTE_HINT = (
    'pass --palette FILE (colour -> class: JSON {"name": [r, g, b], ...} or CVAT\'s labelmap.txt); a CVAT '
    "'Segmentation mask 1.1' export is read as it is (point --dataset at the folder with labelmap.txt)"
)


def refuse_lossy(image: Image.Image | None, source: str, files: list[Path] = ()) -> None:
    """A JPEG label ``image``, or the first of the label ``files`` that is JPEG: an error."""
    lossy = [f for f in files if f.suffix.lower() in LOSSY_LABEL_SUFFIXES]
    if lossy:
        source = f"{lossy[0]} ({len(lossy)} of the {len(files)} {source} are JPEG)"
    if lossy or (image is not None and image.format in _LOSSY_FORMATS):
        raise InvalidInputError(
            f"{source}: label file is JPEG, whose lossy compression changes label values (pixels near edges get "
            f"values of no class); re-export the labels as PNG"
        )


def check_class_index_mode(image: Image.Image, source: str) -> None:
    refuse_lossy(image, source)
    if image.mode not in INDEX_MODES:
        colour = image.mode in ("RGB", "RGBA")
        raise InvalidInputError(
            f"{source}: semantic annotation has mode {image.mode}; expected a single-channel class-index PNG (one "
            f"class id per pixel){' or, for colour-coded masks, ' + PALETTE_HINT if colour else ''}"
        )


def decode_semantic(
    image: Image.Image, *, reduce_labels: bool, ignore_index: int, source: str, palette: Palette | None = None
) -> np.ndarray:
    """Class ids (uint8, int32 above 255): by colour with a ``palette``, else the values under the convention."""
    if palette is not None:
        refuse_lossy(image, source)
        return palette.decode(image, ignore_index=ignore_index, source=source)
    check_class_index_mode(image, source)
    raw = np.asarray(image)
    if raw.dtype == np.uint8:
        # NOTE: 8-bit maps go through a 256-entry table: one gather, no int64 copies; same values as below.
        table = _reduce(np.arange(256), ignore_index) if reduce_labels else np.arange(256)
        if table.max() <= 255:
            return table.astype(np.uint8)[raw]
    labels = raw.astype(np.int64)
    if reduce_labels:
        labels = _reduce(labels, ignore_index)
    return labels.astype(np.uint8 if labels.max(initial=0) <= 255 else np.int32)


def binary_mask_warning(values, *, reduce_labels: bool, ignore_index: int, source: str) -> str | None:
    """A warning when the raw label values are only 0 and 255 (a binary mask whose 255 would be ignored)."""
    values = {int(v) for v in values}
    if not values or not values <= {0, 255} or 255 not in values or ignore_index != 255:
        return None
    meaning = (
        "both 0 ('other' under --label_convention ade) and 255 are ignored: nothing is left to learn"
        if reduce_labels
        else "255 means 'ignored', so this trains one class (0) that is always right"
    )
    return (
        f"{source}: the label maps hold only the values 0 and 255; {meaning}. For a binary mask (255 = the "
        f"object) map 255 to 1 in the files, or pass --palette FILE with "
        f'{{"background": [0, 0, 0], "object": [255, 255, 255]}}'
    )


def warn_if_binary(
    annotations: Sequence, *, reduce_labels: bool, ignore_index: int, source: str, count: int = 8
) -> None:
    """`binary_mask_warning` on ``count`` annotations spread over the list."""
    if not len(annotations):
        return
    picks = sorted({round(i * (len(annotations) - 1) / max(count - 1, 1)) for i in range(count)})
    values: set[int] = set()
    for index in picks:
        annotation = annotations[index]
        where = str(annotation) if isinstance(annotation, (str, os.PathLike)) else f"{source}, row {index}"
        image = open_image(annotation, where)
        refuse_lossy(image, where)
        if image.mode in INDEX_MODES:
            values.update(present_labels(np.asarray(image)).tolist())
    sampled = f"{source} ({len(picks)} label maps sampled)"
    warning = binary_mask_warning(values, reduce_labels=reduce_labels, ignore_index=ignore_index, source=sampled)
    if warning:
        logger.warning(warning)


def decode_class_and_instance(
    image: Image.Image, *, reduce_labels: bool, stuff_ids: Sequence[int], ignore_index: int, source: str
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """transformers' ``run_instance_segmentation.py`` format (R = class, G = instance id, 0 = none) -> like
    `decode_panoptic`. A class in ``stuff_ids`` is one segment whatever G says; other pixels with G = 0 are void but
    keep their class in ``semantic``. Segment id = (R x 256 + G) + 1."""
    refuse_lossy(image, source)
    if image.mode not in ("RGB", "RGBA"):
        raise InvalidInputError(
            f"{source}: expected an RGB annotation (R = class, G = instance id, as in transformers' "
            f"instance-segmentation example), got mode {image.mode}"
        )
    rgb = np.asarray(image)
    red, green = rgb[..., 0], rgb[..., 1]
    classes = red.astype(np.int32) - 1 if reduce_labels else red.astype(np.int32)  # (H, W)
    valid = red > 0 if reduce_labels else np.ones(red.shape, dtype=bool)
    semantic = np.where(valid, classes, ignore_index)
    semantic = semantic.astype(np.uint8 if max(ignore_index, int(semantic.max(initial=0))) <= 255 else np.int32)
    stuff = np.isin(classes, np.asarray(list(stuff_ids), dtype=np.int32)) & valid
    key = (red.astype(np.int32) << 8 | green) + 1  # (H, W), unique per (class, instance)
    key = np.where(stuff, (red.astype(np.int32) << 8) + 1, key)  # a stuff class is one segment
    ids = np.where(valid & (stuff | (green > 0)), key, 0).astype(np.int32)
    counts = np.bincount(ids.reshape(-1), minlength=1)
    segments = [
        {
            "id": int(i),
            "category_id": int(((i - 1) >> 8) - (1 if reduce_labels else 0)),
            "iscrowd": 0,
            "area": int(counts[i]),
        }
        for i in np.flatnonzero(counts[1:]) + 1
    ]
    return ids, segments, semantic


def require_label_convention(reduce_labels: bool | None, source: str) -> bool:
    if reduce_labels is None:
        raise InvalidInputError(
            f"{source}: semantic annotations: say how to read the pixel values. ADE20K's convention "
            f"(0 = 'other', ignored; 1..K are the classes): reduce_labels=True, on the command line "
            f"--label_convention ade. Values used as they are (0..K-1 are the classes, 255 = ignored): "
            f"reduce_labels=False, --label_convention as_is."
        )
    return reduce_labels


def _reduce(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """ADE20K's convention: 0 -> ignore_index, ignore_index stays, k -> k - 1."""
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
    check_segments(segments_info, source, category_to_label)
    segments = [{**s, "category_id": category_to_label[s["category_id"]]} for s in segments_info]
    listed = {s["id"] for s in segments}
    present = set(np.unique(ids).tolist()) - {0}
    if listed - present:
        raise InvalidInputError(
            f"{source}: segment id(s) {sorted(listed - present)} in segments_info are absent from the PNG"
        )
    if present - listed:
        raise InvalidInputError(
            f"{source}: segment id(s) {sorted(present - listed)} in the PNG are missing from segments_info"
        )
    semantic = np.full(ids.shape, ignore_index, dtype=np.uint8 if ignore_index <= 255 else np.int32)
    for segment in segments:
        semantic[ids == segment["id"]] = segment["category_id"]
    return ids, segments, semantic


def scan_num_labels(annotations, reduce_labels: bool, ignore_index: int) -> int:
    """The number of classes the largest raw label implies (ignore_index excluded)."""
    top = -1
    total = len(annotations) if hasattr(annotations, "__len__") else None
    for number, annotation in enumerate(load_progress(annotations, total=total, desc="counting classes", unit="file")):
        source = str(annotation) if isinstance(annotation, (str, os.PathLike)) else f"row {number}"
        image = open_image(annotation, source)
        check_class_index_mode(image, source)
        labels = np.unique(np.asarray(image)).astype(np.int64)
        labels = labels[labels != ignore_index]
        largest = int(labels.max(initial=-1))
        if largest > ignore_index >= 0:
            raise InvalidInputError(
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


def read_json(json_path: Path) -> Any:
    """A JSON file, with a progress bar (COCO's are hundreds of MB)."""
    json_path, data = Path(json_path), bytearray()
    bar = load_progress(total=os.path.getsize(json_path), desc=f"reading {json_path.name}", unit="B", unit_scale=True)
    with open(json_path, "rb") as file, bar:
        while chunk := file.read(1 << 22):
            data += chunk
            bar.update(len(chunk))
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{json_path}: not valid JSON ({error}); the file is damaged or truncated") from error


_COCO_FIELDS = {
    "images": ("id", "file_name"),
    "annotations": ("image_id", "file_name", "segments_info"),
    "categories": ("id", "name"),
}


def check_coco_fields(json_path: Path, payload, fields: dict[str, tuple[str, ...]], hint: str = "") -> dict:
    """``payload`` is a JSON object whose lists ``fields`` hold entries with those keys."""
    if not isinstance(payload, dict):
        raise InvalidInputError(f"{json_path}: expected a JSON object with {', '.join(map(repr, fields))}")
    for key, required in fields.items():
        if not isinstance(payload.get(key), list):
            raise InvalidInputError(f"{json_path}: no {key!r} list (keys: {sorted(payload)}){hint}")
        for number, entry in enumerate(payload[key]):
            missing = [f for f in required if not isinstance(entry, dict) or f not in entry]
            if missing:
                name = (
                    next((f"{p}{entry[k]}" for k, p in _ENTRY_NAMES if k in entry), "?")
                    if isinstance(entry, dict)
                    else repr(entry)
                )
                raise InvalidInputError(
                    f"{json_path}: {key}[{number}] ({name}) has no {', '.join(map(repr, missing))}"
                )
    return payload


_ENTRY_NAMES = (("file_name", ""), ("image_id", "image id "), ("id", "id "), ("name", ""))


def read_coco_panoptic_json(json_path: Path) -> dict:
    """A COCO panoptic JSON, checked: fields, one annotation per image, segment ids listed once."""
    payload = check_coco_fields(json_path, read_json(json_path), _COCO_FIELDS)
    if not payload["annotations"]:
        raise InvalidInputError(f"{json_path}: empty 'annotations' list")
    seen_images = set()
    annotations = load_progress(payload["annotations"], desc=f"checking {json_path.name}", unit="annotation")
    for number, annotation in enumerate(annotations):
        where = f"{json_path}: annotations[{number}] ({annotation['file_name']})"
        if annotation["image_id"] in seen_images:
            raise InvalidInputError(f"{where}: a second annotation for image id {annotation['image_id']}")
        seen_images.add(annotation["image_id"])
        if not isinstance(annotation["segments_info"], list):
            raise InvalidInputError(f"{where}: 'segments_info' must be a list")
        check_segments(annotation["segments_info"], where)
    return payload


def check_segments(segments_info: list, where: str, category_to_label: dict[int, int] | None = None) -> None:
    """Every segment has an 'id' and a (known) 'category_id', and each id is listed once."""
    for segment in segments_info:
        missing = [f for f in ("id", "category_id") if not isinstance(segment, dict) or f not in segment]
        if missing:
            raise InvalidInputError(f"{where}: a segment without {', '.join(map(repr, missing))}: {segment}")
        if category_to_label is not None and segment["category_id"] not in category_to_label:
            raise InvalidInputError(f"{where}: unknown category id {segment['category_id']} in segments_info")
    duplicates = sorted(i for i, count in Counter(s["id"] for s in segments_info).items() if count > 1)
    if duplicates:
        raise InvalidInputError(f"{where}: segment id(s) {duplicates} listed more than once in segments_info")
