"""Writers of predictions in the formats other tools import, one per task, usable from your own code.

    from modeling_maskformer.inference.prediction_writers import ImageRecord, PanopticWriter

    writer = PanopticWriter("predictions/panoptic", model.config.id2label, thing_ids=[0, 1])
    result = processor.post_process_panoptic_segmentation(outputs, target_sizes=[(h, w)])[0]
    writer.add(ImageRecord(image_id=1, file_name="street.jpg", key="street", height=h, width=w), image, result)
    writer.flush()  # writes the JSON file(s) (again, with what was added since); returns the paths written

- `SemanticWriter`: a class-index PNG per image, `masks/<key>.png`: 8-bit grayscale when the model has at most
  255 classes (values 0..K-1, so 255 never occurs), else 16-bit grayscale. PIL, OpenCV (`IMREAD_UNCHANGED`) and
  numpy read the class ids straight back.
- `PanopticWriter`: COCO panoptic, as the COCO panoptic ground truth is laid out: `predictions_panoptic/<key>.png`
  (segment id = R + 256 G + 256^2 B, 0 = no segment) and `predictions_panoptic.json` ("images", "annotations"
  with `segments_info` (id, category_id, area, bbox, iscrowd, plus our `score`), "categories" with `isthing`).
  panopticapi (`pq_compute`, `rgb2id`), detectron2 and datumaro/CVAT read it.
- `InstanceWriter`: `results.json`, COCO's results format (image_id, category_id, RLE segmentation with `counts`
  as a string, score), what `pycocotools.coco.COCO.loadRes` and `COCOeval` take; and `instances.json`, a
  COCO instances dataset (images, categories, annotations with RLE, area, bbox, iscrowd 0 and score) that CVAT
  ("COCO 1.0"), datumaro, detectron2's `register_coco_instances` and pycocotools import. Only thing classes.

Each writer also draws the overlay (`modeling_maskformer.inference.visualization.draw`) as `overlays/<key>.png`.

NOTE: COCO category ids are the model's class ids + 1 (`CATEGORY_ID_OFFSET`). COCO numbers categories from 1, and
CVAT's importer (datumaro) reads category id 0 as "no class", which would drop the label of every class-0 object.
The class-index PNGs keep the model's ids 0..K-1; each JSON's "categories" names every id it uses.
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
from ..data.synthetic import id_to_rgb
from .visualization import draw

CATEGORY_ID_OFFSET = 1  # COCO category id = class id + 1 (see the module docstring)
PANOPTIC_NAME = "predictions_panoptic"  # the JSON file and, as in COCO, the PNG folder of the same name
INSTANCES_FILE, RESULTS_FILE = "instances.json", "results.json"


@dataclass(frozen=True)
class ImageRecord:
    """One input image: `image_id` (COCO's integer id), `file_name` (its path relative to the input root, COCO's
    "file_name"), `key` (the output name without suffix: `<key>.png`; may contain "/"), size in pixels."""

    image_id: int
    file_name: str
    key: str
    height: int
    width: int

    def coco_image(self) -> dict[str, Any]:
        return {"id": self.image_id, "file_name": self.file_name, "height": self.height, "width": self.width}


def coco_categories(
    id2label: Mapping[int, str], thing_ids: Iterable[int] | None, *, things_only: bool = False
) -> list[dict[str, Any]]:
    """COCO "categories" for the model's classes (`thing_ids` None: every class is a thing)."""
    things = set(id2label) if thing_ids is None else {int(c) for c in thing_ids}
    return [
        {
            "id": c + CATEGORY_ID_OFFSET,
            "name": str(id2label[c]),
            "supercategory": "",
            "isthing": int(c in things),
        }
        for c in sorted(id2label)
        if c in things or not things_only
    ]


def write_json(path: str | os.PathLike, payload: Any, *, indent: int | None = None) -> Path:
    """`payload` as JSON, written to a temporary file and renamed: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=indent))
    os.replace(temporary, path)
    return path


def write_class_index_png(path: str | os.PathLike, class_map: torch.Tensor | np.ndarray, num_labels: int) -> Path:
    """An (H, W) map of class ids 0..num_labels-1 as a grayscale PNG: 8-bit for up to 255 classes, else 16-bit."""
    class_map = class_map.cpu().numpy() if isinstance(class_map, torch.Tensor) else np.asarray(class_map)
    if num_labels > 65535:
        raise ValueError(f"{num_labels} classes do not fit a 16-bit class-index PNG (at most 65535)")
    if class_map.size and (class_map.min() < 0 or class_map.max() >= num_labels):
        raise ValueError(f"class map values {class_map.min()}..{class_map.max()} are outside 0..{num_labels - 1}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(class_map.astype(np.uint8 if num_labels <= 255 else np.uint16)).save(path)
    return path


def write_panoptic_png(path: str | os.PathLike, segmentation: torch.Tensor | np.ndarray) -> Path:
    """An (H, W) map of segment ids (0 = none) as a COCO panoptic PNG (id = R + 256 G + 256^2 B)."""
    segmentation = segmentation.cpu().numpy() if isinstance(segmentation, torch.Tensor) else np.asarray(segmentation)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id_to_rgb(segmentation)).save(path)
    return path


def encode_mask(mask: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """An (H, W) bool mask -> its COCO compressed RLE (`counts` as str, JSON-ready), `area` and `bbox` ([x, y,
    width, height]), all from pycocotools."""
    mask = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {
        "rle": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


def segments_table(result: Any, task: str, id2label: Mapping[int, str]) -> list[dict[str, Any]]:
    """Per segment of a post-processing result: id, label_id, label, score (None for semantic), area in pixels
    and as a fraction of the image. Semantic: one row per class present (id = its position)."""
    if task == "semantic":
        ids, counts = torch.unique(result.cpu(), return_counts=True)
        rows = [(index, int(i), None, int(c)) for index, (i, c) in enumerate(zip(ids, counts))]
        total = result.numel()
    else:
        segmentation = result["segmentation"].cpu()
        binary = segmentation.ndim == 3  # instance, return_binary_maps: (N, H, W)
        total = segmentation.shape[-2] * segmentation.shape[-1]
        if binary:
            areas = segmentation.flatten(1).sum(1).tolist() if len(segmentation) else []
        else:
            areas = [int((segmentation == s["id"]).sum()) for s in result["segments_info"]]
        rows = [
            (s["id"], s["label_id"], float(s["score"]), int(area)) for s, area in zip(result["segments_info"], areas)
        ]
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
    task: str

    def __init__(
        self,
        folder: str | os.PathLike,
        id2label: Mapping,
        *,
        thing_ids: Iterable[int] | None = None,
        overlays: bool = True,
    ):
        self.folder = Path(folder)
        self.id2label = {int(k): v for k, v in id2label.items()}
        # None: every class is a thing
        self.thing_ids = None if thing_ids is None else {int(c) for c in thing_ids}
        self.overlays = overlays

    def _overlay(self, record: ImageRecord, image: Image.Image, result: Any) -> str | None:
        if not self.overlays:
            return None
        path = self.folder / "overlays" / f"{record.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(image, result, self.id2label, task=self.task).save(path)
        return str(path)

    def flush(self) -> list[Path]:
        """Write the JSON file(s) of every image added so far; returns the files (none for a writer without)."""
        return []

    def resume(self, image_ids: Iterable[int]) -> set[int]:
        """Take back, from the JSON file(s) an earlier run wrote in this folder, the images `image_ids`; returns
        those found (all, for a writer without JSON)."""
        return set(image_ids)

    def _earlier(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {"images": [], "annotations": []}
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); remove it or start over") from error


class SemanticWriter(_Writer):
    """Class-index PNGs (`masks/<key>.png`) and overlays of `post_process_semantic_segmentation` maps."""

    task = "semantic"

    def add(self, record: ImageRecord, image: Image.Image, result: torch.Tensor) -> dict[str, Any]:
        mask = write_class_index_png(self.folder / "masks" / f"{record.key}.png", result, len(self.id2label))
        return {
            "overlay": self._overlay(record, image, result),
            "mask": str(mask),
            "segments": segments_table(result, self.task, self.id2label),
        }


class PanopticWriter(_Writer):
    """COCO panoptic PNGs and JSON of `post_process_panoptic_segmentation` results (see the module docstring).
    `thing_ids`: the thing classes, for the categories' `isthing` (None: every class)."""

    task = "panoptic"

    def __init__(self, folder, id2label, *, thing_ids: Iterable[int] | None = None, overlays: bool = True):
        super().__init__(folder, id2label, thing_ids=thing_ids, overlays=overlays)
        self.categories = coco_categories(self.id2label, self.thing_ids)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, record: ImageRecord, image: Image.Image, result: Mapping[str, Any]) -> dict[str, Any]:
        segmentation = result["segmentation"].cpu()
        # NOTE: panopticapi refuses a listed segment without pixels; post-processing lists none, but a user's
        # result might.
        present = set(torch.unique(segmentation).tolist())
        segments = [s for s in result["segments_info"] if s["id"] in present]
        encoded = [encode_mask(segmentation == s["id"]) for s in segments]  # one at a time: memory stays O(H W)
        png = write_panoptic_png(self.folder / PANOPTIC_NAME / f"{record.key}.png", segmentation)
        self.images.append(record.coco_image())
        self.annotations.append(
            {
                "image_id": record.image_id,
                "file_name": f"{record.key}.png",
                "segments_info": [
                    {
                        "id": int(s["id"]),
                        "category_id": int(s["label_id"]) + CATEGORY_ID_OFFSET,
                        "area": e["area"],
                        "bbox": e["bbox"],
                        "iscrowd": 0,
                        "score": round(float(s["score"]), 6),
                    }
                    for s, e in zip(segments, encoded)
                ],
            }
        )
        kept = {"segmentation": segmentation, "segments_info": segments}
        return {
            "overlay": self._overlay(record, image, kept),
            "png": str(png),
            "segments": segments_table(kept, self.task, self.id2label),
        }

    def resume(self, image_ids: Iterable[int]) -> set[int]:
        wanted, earlier = set(image_ids), self._earlier(f"{PANOPTIC_NAME}.json")
        self.images = [i for i in earlier["images"] if i["id"] in wanted]
        self.annotations = [a for a in earlier["annotations"] if a["image_id"] in wanted]
        return {i["id"] for i in self.images} & {a["image_id"] for a in self.annotations}

    def flush(self) -> list[Path]:
        payload = {
            "images": sorted(self.images, key=lambda i: i["id"]),
            "annotations": sorted(self.annotations, key=lambda a: a["image_id"]),
            "categories": self.categories,
        }
        return [write_json(self.folder / f"{PANOPTIC_NAME}.json", payload)]


class InstanceWriter(_Writer):
    """COCO results and COCO instances JSON of `post_process_instance_segmentation(..., return_binary_maps=True)`
    results (see the module docstring). Instances of classes outside `thing_ids` are dropped (None: keep all)."""

    task = "instance"

    def __init__(self, folder, id2label, *, thing_ids: Iterable[int] | None = None, overlays: bool = True):
        super().__init__(folder, id2label, thing_ids=thing_ids, overlays=overlays)
        self.categories = coco_categories(self.id2label, self.thing_ids, things_only=True)
        self.images: list[dict] = []
        self.results: list[dict] = []

    def things(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """`result` without the instances of stuff classes, ids renumbered 0..N-1 (positions in the stack)."""
        segmentation = result["segmentation"].cpu()
        if segmentation.ndim != 3:
            raise ValueError(
                "InstanceWriter needs binary maps: post_process_instance_segmentation(..., return_binary_maps=True)"
            )
        kept = {"segmentation": segmentation, "segments_info": result["segments_info"]}
        return kept if self.thing_ids is None else drop_stuff(kept, self.thing_ids)

    def add(self, record: ImageRecord, image: Image.Image, result: Mapping[str, Any]) -> dict[str, Any]:
        kept = self.things(result)
        encoded = [encode_mask(mask) for mask in kept["segmentation"]]
        self.images.append(record.coco_image())
        self.results.extend(
            {
                "image_id": record.image_id,
                "category_id": int(s["label_id"]) + CATEGORY_ID_OFFSET,
                "segmentation": e["rle"],
                "score": round(float(s["score"]), 6),
                "bbox": e["bbox"],
                "area": e["area"],
            }
            for s, e in zip(kept["segments_info"], encoded)
        )
        return {
            "overlay": self._overlay(record, image, kept),
            "segments": segments_table(kept, self.task, self.id2label),
        }

    def resume(self, image_ids: Iterable[int]) -> set[int]:
        wanted, earlier = set(image_ids), self._earlier(INSTANCES_FILE)
        self.images = [i for i in earlier["images"] if i["id"] in wanted]
        fields = ("image_id", "category_id", "segmentation", "score", "bbox", "area")
        self.results = [{k: a[k] for k in fields} for a in earlier["annotations"] if a["image_id"] in wanted]
        return {i["id"] for i in self.images}

    def flush(self) -> list[Path]:
        found = sorted(self.results, key=lambda r: r["image_id"])  # stable: by score within an image
        # NOTE: no bbox in the results: pycocotools' loadRes would take the box's area for the mask's (COCO's results
        # format for segm has image_id, category_id, segmentation, score); it computes area and box from the RLE.
        results = [{k: r[k] for k in ("image_id", "category_id", "segmentation", "score")} for r in found]
        annotations = [
            {
                "id": n,
                **{k: r[k] for k in ("image_id", "category_id", "segmentation", "area", "bbox")},
                "iscrowd": 0,
                "score": r["score"],
            }
            for n, r in enumerate(found, start=1)
        ]
        dataset = {
            "images": sorted(self.images, key=lambda i: i["id"]),
            "annotations": annotations,
            "categories": self.categories,
        }
        return [
            write_json(self.folder / RESULTS_FILE, results),
            write_json(self.folder / INSTANCES_FILE, dataset),
        ]


WRITERS: dict[str, type[_Writer]] = {w.task: w for w in (SemanticWriter, PanopticWriter, InstanceWriter)}
