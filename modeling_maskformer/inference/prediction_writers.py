"""Writers of predictions in formats other tools import, one per task, each also drawing `overlays/<key>.png`:
class-index PNGs `masks/<key>.png` (semantic); COCO panoptic PNGs and `predictions_panoptic.json` with scores
(panopticapi, detectron2, CVAT); COCO `results.json` (pycocotools' `loadRes`) and `instances.json` (a COCO dataset
with scores: CVAT, datumaro, detectron2) of thing classes (instance).

NOTE: COCO category ids are the model's class ids + 1 (`CATEGORY_ID_OFFSET`): COCO numbers categories from 1, and
CVAT's importer (datumaro) reads category id 0 as "no class". The class-index PNGs keep the model's ids 0..K-1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from ..data.labels import drop_stuff
from ..data.progress import write_json
from ..data.synthetic import id_to_rgb
from ..errors import InvalidInputError
from .visualization import draw, to_numpy

CATEGORY_ID_OFFSET = 1  # COCO category id = class id + 1 (see the module docstring)
PANOPTIC_NAME = "predictions_panoptic"  # the JSON file and, as in COCO, the PNG folder of the same name
INSTANCES_FILE, RESULTS_FILE = "instances.json", "results.json"


@dataclass(frozen=True)
class ImageRecord:
    """One input image: COCO's `image_id` and `file_name`, `key` (the output name without suffix; may contain "/")."""

    image_id: int
    file_name: str
    key: str
    height: int
    width: int

    def coco_image(self) -> dict[str, Any]:
        return {"id": self.image_id, "file_name": self.file_name, "height": self.height, "width": self.width}


def _save(path: Path, picture: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def coco_categories(
    id2label: Mapping[int, str], thing_ids: Iterable[int] | None, *, things_only: bool = False
) -> list[dict[str, Any]]:
    """COCO "categories" for the model's classes (`thing_ids` None: every class is a thing)."""
    things = set(id2label) if thing_ids is None else {int(c) for c in thing_ids}
    return [
        {"id": c + CATEGORY_ID_OFFSET, "name": str(id2label[c]), "supercategory": "", "isthing": int(c in things)}
        for c in sorted(id2label)
        if c in things or not things_only
    ]


def write_class_index_png(path: str | os.PathLike, class_map: torch.Tensor | np.ndarray, num_labels: int) -> Path:
    """An (H, W) map of class ids 0..num_labels-1 as a grayscale PNG: 8-bit for up to 255 classes, else 16-bit."""
    class_map = to_numpy(class_map)
    if num_labels > 65535:
        raise InvalidInputError(f"{num_labels} classes do not fit a 16-bit class-index PNG (at most 65535)")
    if class_map.size and (class_map.min() < 0 or class_map.max() >= num_labels):
        raise ValueError(f"class map values {class_map.min()}..{class_map.max()} are outside 0..{num_labels - 1}")
    return _save(Path(path), Image.fromarray(class_map.astype(np.uint8 if num_labels <= 255 else np.uint16)))


def write_panoptic_png(path: str | os.PathLike, segmentation: torch.Tensor | np.ndarray) -> Path:
    """An (H, W) map of segment ids (0 = none) as a COCO panoptic PNG (id = R + 256 G + 256^2 B)."""
    return _save(Path(path), Image.fromarray(id_to_rgb(to_numpy(segmentation))))


def encode_mask(mask: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """An (H, W) bool mask -> its COCO compressed RLE (`counts` as str), `area` and `bbox` (x, y, w, h)."""
    rle = mask_utils.encode(np.asfortranarray(to_numpy(mask), dtype=np.uint8))
    return {
        "rle": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


def _annotation(segment: Mapping[str, Any], mask: torch.Tensor, *, rle: bool = False) -> dict[str, Any]:
    encoded = encode_mask(mask)
    fields = {"category_id": int(segment["label_id"]) + CATEGORY_ID_OFFSET}
    fields |= {"segmentation": encoded["rle"]} if rle else {}
    return fields | {"score": round(float(segment["score"]), 6), "bbox": encoded["bbox"], "area": encoded["area"]}


def segments_table(result: Any, task: str, id2label: Mapping[int, str]) -> list[dict[str, Any]]:
    """Per segment (semantic: per class present) of a post-processing result: id, label_id, label, score, area in
    pixels and as a fraction of the image."""
    if task == "semantic":
        ids, counts = torch.unique(result.cpu(), return_counts=True)
        rows = [(index, int(i), None, int(c)) for index, (i, c) in enumerate(zip(ids, counts))]
        total = result.numel()
    else:
        segmentation, segments = result["segmentation"].cpu(), result["segments_info"]
        total = segmentation.shape[-2] * segmentation.shape[-1]
        if segmentation.ndim == 3:  # instance, return_binary_maps: (N, H, W)
            areas = segmentation.flatten(1).sum(1).tolist() if len(segmentation) else []
        else:
            areas = [int((segmentation == s["id"]).sum()) for s in segments]
        rows = [(s["id"], s["label_id"], float(s["score"]), int(area)) for s, area in zip(segments, areas)]
    return [
        {
            "id": index,
            "label_id": label,
            "label": str(id2label.get(label, label)),
            "score": score,
            "area": area,
            "area_fraction": area / total if total else 0.0,
        }
        for index, label, score, area in rows
    ]


class _Writer:
    """The folder, classes and overlays, and the COCO "images" and records its JSON file(s) hold. Subclasses write an
    image's files in `_write` (returning them and the result to draw) and their JSON in `flush`."""

    task: str
    json_file: str | None = None

    def __init__(self, folder, id2label: Mapping, *, thing_ids: Iterable[int] | None = None, overlays: bool = True):
        self.folder = Path(folder)
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.thing_ids = None if thing_ids is None else {int(c) for c in thing_ids}  # None: every class a thing
        self.overlays = overlays
        self.images: list[dict] = []
        self.records: list[dict] = []

    def add(self, record: ImageRecord, image: Image.Image, result: Any) -> dict[str, Any]:
        """Write one image's files; returns its entry in predictions.json (files and segments)."""
        files, result = self._write(record, result)
        picture = draw(image, result, self.id2label, task=self.task) if self.overlays else None
        overlay = picture and _save(self.folder / "overlays" / f"{record.key}.png", picture)
        segments = segments_table(result, self.task, self.id2label)
        return {"overlay": overlay and str(overlay), **{k: str(v) for k, v in files.items()}, "segments": segments}

    def flush(self) -> list[Path]:
        """Write the JSON file(s) of every image added so far; returns them."""
        return []

    def resume(self, image_ids: Iterable[int]) -> set[int]:
        """Take back the images `image_ids` from this folder's JSON file; returns those found."""
        wanted = set(image_ids)
        if self.json_file is None:
            return wanted
        path = self.folder / self.json_file
        try:
            earlier = json.loads(path.read_text())
        except FileNotFoundError:
            return set()
        except json.JSONDecodeError as error:
            raise InvalidInputError(f"{path}: not valid JSON ({error}); remove it or start over") from None
        self.images = [i for i in earlier["images"] if i["id"] in wanted]
        annotations = (a for a in earlier["annotations"] if a["image_id"] in wanted)
        self.records = [{k: v for k, v in a.items() if k not in ("id", "iscrowd")} for a in annotations]
        return {i["id"] for i in self.images}

    def _json(self, name: str, payload: Any) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / name, payload)
        return self.folder / name

    def _coco(self, annotations: list[dict], *, things_only: bool = False) -> dict[str, Any]:
        images = sorted(self.images, key=lambda i: i["id"])
        categories = coco_categories(self.id2label, self.thing_ids, things_only=things_only)
        return {"images": images, "annotations": annotations, "categories": categories}


class SemanticWriter(_Writer):
    """Class-index PNGs (`masks/<key>.png`) of `post_process_semantic_segmentation` maps."""

    task = "semantic"

    def _write(self, record: ImageRecord, result: torch.Tensor) -> tuple[dict[str, Path], Any]:
        mask = write_class_index_png(self.folder / "masks" / f"{record.key}.png", result, len(self.id2label))
        return {"mask": mask}, result


class PanopticWriter(_Writer):
    """COCO panoptic PNGs and JSON of `post_process_panoptic_segmentation` results."""

    task = "panoptic"
    json_file = f"{PANOPTIC_NAME}.json"

    def _write(self, record: ImageRecord, result: Mapping[str, Any]) -> tuple[dict[str, Path], Any]:
        segmentation = result["segmentation"].cpu()
        # NOTE: panopticapi refuses a listed segment without pixels; post-processing lists none, a user's result might.
        present = set(torch.unique(segmentation).tolist())
        segments = [s for s in result["segments_info"] if s["id"] in present]
        png = write_panoptic_png(self.folder / PANOPTIC_NAME / f"{record.key}.png", segmentation)
        self.images.append(record.coco_image())
        # NOTE: one mask at a time (memory stays O(H W)); panoptic segments carry no RLE: the PNG holds them.
        info = [{"id": int(s["id"]), **_annotation(s, segmentation == s["id"]), "iscrowd": 0} for s in segments]
        self.records.append({"image_id": record.image_id, "file_name": f"{record.key}.png", "segments_info": info})
        return {"png": png}, {"segmentation": segmentation, "segments_info": segments}

    def flush(self) -> list[Path]:
        return [self._json(self.json_file, self._coco(sorted(self.records, key=lambda a: a["image_id"])))]


class InstanceWriter(_Writer):
    """COCO results and instances JSON of `post_process_instance_segmentation(..., return_binary_maps=True)` results,
    thing classes only (`thing_ids` None: every class)."""

    task = "instance"
    json_file = INSTANCES_FILE

    def _write(self, record: ImageRecord, result: Mapping[str, Any]) -> tuple[dict[str, Path], Any]:
        segmentation = result["segmentation"].cpu()
        if segmentation.ndim != 3:
            raise InvalidInputError(
                "InstanceWriter needs binary maps: post_process_instance_segmentation(..., return_binary_maps=True)"
            )
        kept = {"segmentation": segmentation, "segments_info": result["segments_info"]}
        kept = kept if self.thing_ids is None else drop_stuff(kept, self.thing_ids)
        self.images.append(record.coco_image())
        for segment, mask in zip(kept["segments_info"], kept["segmentation"]):
            self.records.append({"image_id": record.image_id, **_annotation(segment, mask, rle=True)})
        return {}, kept

    def flush(self) -> list[Path]:
        found = sorted(self.records, key=lambda r: r["image_id"])  # stable: by score within an image
        # NOTE: no bbox in the results: pycocotools' loadRes would take the box's area for the mask's (COCO's results
        # format for segm has image_id, category_id, segmentation, score); it computes area and box from the RLE.
        results = [{k: r[k] for k in ("image_id", "category_id", "segmentation", "score")} for r in found]
        annotations = [{"id": n, **r, "iscrowd": 0} for n, r in enumerate(found, start=1)]
        return [
            self._json(RESULTS_FILE, results),
            self._json(INSTANCES_FILE, self._coco(annotations, things_only=True)),
        ]


WRITERS: dict[str, type[_Writer]] = {w.task: w for w in (SemanticWriter, PanopticWriter, InstanceWriter)}
