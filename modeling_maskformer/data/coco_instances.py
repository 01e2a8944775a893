"""COCO instance JSON (polygons, RLE, crowd regions) as COCO and the labelling tools export it, read like detectron2's
`load_coco_json`: one JSON or an exporter's folder (`COCO_LAYOUT_MARKERS`). Items hold every object's full mask
(pycocotools); box-only annotations and Roboflow's grouping category are left out (logged); images are turned upright
by their EXIF orientation, as detectron2 reads them."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps
from pycocotools import mask as mask_utils

from ..errors import InvalidInputError, MissingInputError
from .dataset import InstanceAnnotations, SegmentationDataset, SegmentationItem, Task
from .decoding import category_metadata, check_coco_fields, open_image, read_json
from .splits import RecordedHoldOut, plan_split

logger = logging.getLogger(__name__)

# The layouts `coco_instances_layout` detects: (name, the files that mark it).
_LAYOUTS = {
    "coco_instances": ("official COCO layout", "annotations/instances_<subset>.json + <subset>/, e.g. val2017/"),
    "cvat_coco": ("CVAT 'COCO 1.0' export", "annotations/instances_<subset>.json + images/"),
    "roboflow_coco": ("Roboflow COCO export", "<subset>/_annotations.coco.json, e.g. train/, valid/"),
    "label_studio": ("Label Studio COCO export", "result.json + images/"),
}
COCO_LAYOUT_MARKERS = {layout: f"{marker} ({name})" for layout, (name, marker) in _LAYOUTS.items()}
_INSTANCES_JSON = re.compile(r"instances_(.+)\.json")
_ROBOFLOW_JSON = "_annotations.coco.json"
_ORIENTATION = ExifTags.Base.Orientation
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class CocoImage:
    path: Path
    info: dict  # the JSON's entry in "images"
    annotations: tuple[dict, ...]  # those with a mask


class CocoInstancesDataset(SegmentationDataset):
    """Images + COCO instance annotations; items carry ``instances``."""

    task: Task = "instance"
    convention_from = None  # the classes come from the JSON's categories

    def __init__(
        self,
        records: list[CocoImage],
        category_to_label: dict[int, int],
        json_path: Path,
        image_dirs: Sequence[Path],
        **metadata,
    ):
        super().__init__(records=records, **metadata)
        self.category_to_label = category_to_label
        self.json_path = json_path
        self.image_dirs = tuple(image_dirs)

    def _source(self, index: int) -> str:
        record = self.records[index]
        return f"{record.path} (image id {record.info['id']} of {self.json_path})"

    def _load(self, index: int) -> SegmentationItem:
        record = self.records[index]
        if not record.path.is_file():
            raise MissingInputError(
                f"{self._source(index)}: image not found (file_name {str(record.info['file_name'])!r}, looked "
                f"up in {', '.join(map(str, self.image_dirs))})"
            )
        image = open_image(record.path, decode=self.decode_images)
        orientation = image.getexif().get(_ORIENTATION, 1)
        size = image.size[::-1] if orientation in _TRANSPOSED else image.size  # (W, H) upright
        if self.decode_images:
            image = (ImageOps.exif_transpose(image) if orientation != 1 else image).convert("RGB")
        elif orientation in _TRANSPOSED:
            image = Image.new("1", size)  # NOTE: the header-only item needs the upright size, not the pixels
        width, height = size
        json_size = tuple(int(record.info[k]) if record.info.get(k) else None for k in ("width", "height"))
        if json_size not in (size, (None, None)):
            hint = ""
            if json_size == size[::-1] and orientation in _TRANSPOSED:
                hint = (
                    f"; its EXIF orientation ({orientation}) turns it, and the JSON has the size before turning: "
                    f"re-export from a tool that applies the orientation, or save the image upright"
                )
            raise InvalidInputError(
                f"{self._source(index)}: the image is {width}x{height} (WxH) but the JSON says "
                f"{json_size[0]}x{json_size[1]}{hint}"
            )
        where = f"{self.json_path}: annotation(s) of image {record.path.name} (id {record.info['id']})"
        rles = [
            annotation_rle(a.get("segmentation"), height, width, f"{where}, annotation id {a.get('id')}")
            for a in record.annotations
        ]
        masks = (
            np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1)).view(bool)  # (H, W, N) -> (N, H, W)
            if rles
            else np.zeros((0, height, width), dtype=bool)
        )
        areas = [
            float(a["area"]) if a.get("area") is not None else float(mask_utils.area(rle))
            for a, rle in zip(record.annotations, rles)
        ]
        instances: InstanceAnnotations = {
            "masks": masks,
            "labels": np.array([self.category_to_label[a["category_id"]] for a in record.annotations], dtype=np.int64),
            "iscrowd": np.array([int(bool(a.get("iscrowd", 0))) for a in record.annotations], dtype=np.uint8),
            "areas": np.array(areas, dtype=np.float64),
        }
        return {"image": image, "image_id": str(record.info["id"]), "instances": instances}


def annotation_rle(segmentation, height: int, width: int, where: str) -> dict:
    """One object's mask as a compressed RLE, as `COCO.annToRLE`."""
    if isinstance(segmentation, list):
        if any(not isinstance(p, list) or len(p) % 2 for p in segmentation):
            raise InvalidInputError(
                f"{where}: a polygon must be a flat list of x, y pairs, got {str(segmentation)[:80]}"
            )
        # NOTE: fewer than 3 points enclose nothing; pycocotools would also read a 4-number first polygon as a box.
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
        if not polygons:
            raise InvalidInputError(f"{where}: no polygon with 3 or more points")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise InvalidInputError(
                f"{where}: RLE size {segmentation['size']} (HxW) differs from the image's [{height}, {width}]"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed
            if sum(counts) != height * width:
                raise InvalidInputError(
                    f"{where}: uncompressed RLE counts sum to {sum(counts)}, not height x width = {height * width}"
                )
            return mask_utils.frPyObjects(segmentation, height, width)
        if isinstance(counts, str | bytes):
            return {
                "size": [height, width],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
    raise InvalidInputError(f"{where}: 'segmentation' is neither polygons nor RLE: {str(segmentation)[:80]}")


def has_mask(annotation: dict) -> bool:
    """Not a box only (Label Studio and CVAT write boxes with an empty segmentation)."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        # malformed polygons are kept, to be reported
        return any(not isinstance(p, list) or len(p) >= 6 or len(p) % 2 for p in segmentation)
    return bool(segmentation)


_FIELDS = {"images": ("id", "file_name"), "annotations": ("image_id", "category_id"), "categories": ("id", "name")}


def _check_fields(json_path: Path, payload) -> None:
    annotations = payload.get("annotations") if isinstance(payload, dict) else None
    first = annotations[0] if isinstance(annotations, list) and annotations else None
    if isinstance(first, dict) and "segments_info" in first:
        raise InvalidInputError(
            f"{json_path}: a COCO panoptic JSON (its annotations hold 'segments_info'), not COCO instances; "
            f"give the folder with annotations/panoptic_<subset>.json and its PNGs instead"
        )
    check_coco_fields(json_path, payload, _FIELDS, "; is it a COCO instances file?")
    if not payload["categories"]:
        raise InvalidInputError(f"{json_path}: empty 'categories' list")
    for key in ("images", "categories"):
        repeated = [i for i, count in Counter(e["id"] for e in payload[key]).items() if count > 1]
        if repeated:
            raise InvalidInputError(f"{json_path}: {key} id(s) {repeated[:5]} listed more than once")


def _exists(path: Path, listings: dict[Path, frozenset[str]]) -> bool:
    """Whether ``path`` exists, from one listing per folder (not one stat per image)."""
    if path.parent not in listings:
        listings[path.parent] = frozenset(os.listdir(path.parent)) if path.parent.is_dir() else frozenset()
    return path.name in listings[path.parent]


def _image_path(file_name: str, image_dirs: Sequence[Path], listings: dict) -> Path:
    """Under the first image folder that has ``file_name`` (as written, else its base name: Label Studio writes
    Windows separators or upload folders into it); else the path it should have."""
    relative = file_name.replace("\\", "/")
    for folder in image_dirs:
        for candidate in (folder / relative, folder / Path(relative).name):
            if _exists(candidate, listings):
                return candidate
    return image_dirs[0] / relative


def load_coco_instances(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    ignore_index: int = 255,
) -> CocoInstancesDataset:
    """A COCO instance JSON and the folder(s) its images are looked up in, in order. Structural problems raise here,
    an image's or segmentation's when the item is read."""
    json_path = Path(json_file)
    if not json_path.is_file():
        raise MissingInputError(f"COCO instances: annotation file {json_path} not found")
    image_dirs = [Path(image_root)] if isinstance(image_root, str | os.PathLike) else [Path(d) for d in image_root]
    payload = read_json(json_path)
    _check_fields(json_path, payload)
    images = {image["id"]: image for image in payload["images"]}
    categories = payload["categories"]
    unknown_images = [a for a in payload["annotations"] if a["image_id"] not in images]
    if unknown_images:
        raise InvalidInputError(
            f"{json_path}: {len(unknown_images)} annotation(s) refer to image ids not in 'images', e.g. "
            f"annotation id {unknown_images[0].get('id')} -> image id {unknown_images[0]['image_id']}"
        )
    used = {a["category_id"] for a in payload["annotations"]}
    parents = {c.get("supercategory") for c in categories} - {None, "", "none"}
    grouping = [c for c in categories if c["name"] in parents and c["id"] not in used]  # Roboflow's root category
    if grouping:
        names = ", ".join(f"{c['name']!r} (id {c['id']})" for c in grouping)
        logger.info(
            f"{json_path}: category {names} is the supercategory of the others and no annotation uses it "
            "(Roboflow's grouping category): not a class"
        )
        categories = [c for c in categories if c not in grouping]
    metadata = category_metadata(categories)
    category_to_label = metadata.pop("category_to_label")
    unknown = sorted(used - set(category_to_label), key=str)
    if unknown:
        raise InvalidInputError(
            f"{json_path}: annotations use category id(s) {unknown[:10]} that 'categories' does not list"
        )

    by_image: dict = {image_id: [] for image_id in images}
    masked = [annotation for annotation in payload["annotations"] if has_mask(annotation)]
    for annotation in masked:
        by_image[annotation["image_id"]].append(annotation)
    boxes_only = len(payload["annotations"]) - len(masked)
    listings: dict[Path, frozenset[str]] = {}
    records = [
        CocoImage(_image_path(str(image["file_name"]), image_dirs, listings), image, tuple(by_image[image["id"]]))
        for image in payload["images"]
    ]
    if not records:
        raise InvalidInputError(f"{json_path}: empty 'images' list")
    if not any(_exists(record.path, listings) for record in records):
        raise MissingInputError(
            f"{json_path}: none of its {len(records)} images is in {', '.join(map(str, image_dirs))} "
            f"(file_name {str(records[0].info['file_name'])!r} is not {records[0].path}); give the folder that "
            f"holds them (--image_root DIR, or image_root=...)"
        )
    if boxes_only:
        logger.warning(
            f"{json_path}: {boxes_only} annotation(s) have no mask (a box only, empty 'segmentation'): left out "
            "of training and evaluation, this is instance segmentation"
        )
    return CocoInstancesDataset(
        records, category_to_label, json_path, image_dirs, ignore_index=ignore_index, **metadata
    )


@dataclass(frozen=True)
class CocoSubset:
    name: str  # as the export names it: "val2017", "valid", "default", "result"
    json_path: Path
    image_dirs: tuple[Path, ...]


def coco_instances_layout(root: str | os.PathLike) -> str | None:
    root = Path(root)
    annotations = root / "annotations"
    if annotations.is_dir() and any(_INSTANCES_JSON.fullmatch(p.name) for p in annotations.iterdir()):
        return "cvat_coco" if (root / "images").is_dir() else "coco_instances"
    if any((p / _ROBOFLOW_JSON).is_file() for p in root.iterdir() if p.is_dir()) or (root / _ROBOFLOW_JSON).is_file():
        return "roboflow_coco"
    if (root / "result.json").is_file() and (root / "images").is_dir():
        return "label_studio"
    return None


def coco_subsets(root: Path, layout: str) -> list[CocoSubset]:
    if layout == "label_studio":
        return [CocoSubset("result", root / "result.json", (root, root / "images"))]
    if layout == "roboflow_coco":
        single = (root / _ROBOFLOW_JSON).is_file()  # one split exported on its own
        folders = [root] if single else [p for p in sorted(root.iterdir()) if (p / _ROBOFLOW_JSON).is_file()]
        return [CocoSubset(p.name, p / _ROBOFLOW_JSON, (p,)) for p in folders]
    files = [p for p in sorted((root / "annotations").iterdir()) if _INSTANCES_JSON.fullmatch(p.name)]
    return [
        CocoSubset(n, p, (root / n, root / "images" / n, root / "images"))
        for p, n in zip(files, map(json_file_subset, files))
    ]


def load_coco_instances_folder(
    root: str | os.PathLike,
    split: str = "train",
    *,
    train_val_split: float | RecordedHoldOut | None = None,
    ignore_index: int = 255,
):
    root = Path(root)
    layout = coco_instances_layout(root)
    if layout is None:
        markers = "; ".join(f"{name}: {marker}" for name, marker in COCO_LAYOUT_MARKERS.items())
        raise InvalidInputError(f"{root}: not a COCO instance folder (layouts: {markers})")
    where = f"{root} ({_LAYOUTS[layout][0]})"
    return _load_split(coco_subsets(root, layout), split, train_val_split, where, root, ignore_index)


def json_file_subset(json_file: str | os.PathLike) -> str:
    """``instances_val2017.json`` -> ``val2017``, Roboflow's ``valid/_annotations.coco.json`` -> ``valid``."""
    path = Path(json_file)
    match = _INSTANCES_JSON.fullmatch(path.name)
    if match:
        return match.group(1)
    return path.parent.name if path.name == _ROBOFLOW_JSON else path.stem


def load_coco_instances_file(
    json_file: str | os.PathLike,
    split: str = "train",
    *,
    image_root: str | os.PathLike | None = None,
    train_val_split: float | RecordedHoldOut | None = None,
    ignore_index: int = 255,
):
    """One COCO instance JSON (``--dataset FILE.json``), its images in ``image_root`` (default: the JSON's folder)."""
    json_path = Path(json_file).expanduser()
    if not json_path.is_file():
        raise MissingInputError(f"COCO instances: annotation file {json_path} not found")
    image_dir = Path(image_root).expanduser() if image_root is not None else json_path.parent
    if not image_dir.is_dir():
        raise MissingInputError(f"COCO instances {json_path}: image folder {image_dir} not found (--image_root)")
    subset = CocoSubset(json_file_subset(json_path), json_path, (image_dir,))
    return _load_split([subset], split, train_val_split, f"COCO instances {json_path}", json_path.parent, ignore_index)


def _load_split(
    subsets: list[CocoSubset],
    split: str,
    train_val_split: float | RecordedHoldOut | None,
    where: str,
    root: Path,
    ignore_index: int,
) -> CocoInstancesDataset:
    by_name = {subset.name: subset for subset in subsets}
    plan = plan_split(split, list(by_name), train_val_split, where)
    subset = by_name[plan.subset]
    dataset = load_coco_instances(subset.json_path, subset.image_dirs, ignore_index=ignore_index)
    found = sorted({str(_relative(r.path.parent, root)) for r in dataset.records})
    held_out = plan.held_out(len(dataset))
    indices = plan.select(len(dataset))
    crowd = sum(bool(a.get("iscrowd", 0)) for i in indices for a in dataset.records[i].annotations)
    if len(indices) != len(dataset):
        dataset = dataset.subset(indices)
    dataset.held_out = held_out
    part = plan.slice if plan.part == "all" else f" ({plan.part} part)"
    logger.info(
        f"{where}: split {split!r} = {_relative(subset.json_path, root)}{part} ({len(dataset)} images, "
        f"{dataset.num_labels} classes), images in {', '.join(found[:3])}"
    )
    if crowd:  # this split's own count (a held-out part has its share of the file's)
        logger.info(
            f"{where}: split {split!r}: {crowd} crowd region(s) (iscrowd=1) are no training target, as in COCO; "
            "mask AP lets them absorb detections (CVAT exports brush masks so: see docs/data-coco.md)"
        )
    return dataset


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path
