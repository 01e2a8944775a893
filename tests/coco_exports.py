"""COCO instance exports written the way each tool writes them (for tests/test_coco_instances.py and
tests/test_data_checks.py). Each writer reproduces one exporter's layout and JSON conventions:

- `write_official`: COCO 2017 (annotations/instances_{train,val}2017.json, images in train2017/, val2017/): sparse
  category ids (3, 17, 90), ids from 1, polygons for most objects, compressed RLE for some, uncompressed RLE for
  crowd regions, as in instances_val2017.json.
- `write_cvat`: CVAT's "COCO 1.0" export (datumaro's CocoExporter): annotations/instances_<subset>.json with images
  in images/<subset>/ (`flat=True`: images/ itself, the layout of older CVAT and of datumaro's --merge-images),
  `licenses`/`info` blocks, category ids 1..K with an empty supercategory, `attributes` per annotation, and brush
  masks as uncompressed RLE with iscrowd=1 (datumaro writes every mask shape so).
- `write_roboflow`: Roboflow's COCO export: {train,valid,test}/_annotations.coco.json with the images beside it,
  ids from 0, and the grouping category (id 0, the project's name, supercategory "none") that every class names as
  its supercategory and no annotation uses.
- `write_label_studio`: Label Studio's COCO export (label_studio_sdk converter `convert_to_coco`): result.json and
  images/, file_name "images\\<name>" with Windows separators (as written on Windows), ids from 0, categories without
  supercategory, polygons only, rectangles as boxes with an empty segmentation, an `ignore` field.

`save_tiny_model` and `train_argv`: a tiny model for these classes and a short training command line on an export.

The scenes: 64x64 (or given) grey images with class-coloured shapes (a square, a disc and a bar), some overlapping
(each object's mask is its whole shape), so that a tiny model can learn them in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from transformers import ConvNextConfig

from builders import STAGES, tiny_model

# name, colour, the COCO category id the official layout gives it (sparse, as COCO's own 1..90)
CLASSES = (("square", (220, 40, 40), 3), ("disc", (40, 200, 60), 17), ("bar", (50, 70, 230), 90))
ID2LABEL = {i: name for i, (name, _, _) in enumerate(CLASSES)}


def _polygon(mask: np.ndarray) -> list[float]:
    """A polygon around a shape: the box corners for the square and bar, 24 points on the disc's circle."""
    ys, xs = np.nonzero(mask)
    top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    if mask[top:bottom, left:right].all():  # a rectangle
        return [float(v) for v in (left, top, right, top, right, bottom, left, bottom)]
    cy, cx, r = (top + bottom) / 2, (left + right) / 2, (bottom - top) / 2
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return [float(v) for a in angles for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, written by hand as its spec says (column-major run lengths, starting with a run of
    zeros), not by pycocotools: the loader's decoding is checked against it."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def scene(seed: int, size: tuple[int, int] = (64, 64), *, crowd: bool = False) -> tuple[Image.Image, list[dict]]:
    """(image, objects): each object {"class": index into CLASSES, "mask": bool (H, W), "iscrowd": 0/1}. 1-3 shapes;
    the second, when there is one, overlaps the first; with `crowd`, a crowd region of discs in a corner."""
    rng = np.random.default_rng(seed)
    height, width = size
    pixels = np.full((height, width, 3), 128, np.float64) + rng.normal(0, 6, (height, width, 3))
    objects = []
    ys, xs = np.mgrid[:height, :width]
    for n in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(0, 3))
        side = int(rng.integers(max(height // 8, 12), height // 2))
        if n == 1:  # overlapping the first object
            first = np.argwhere(objects[0]["mask"]).mean(0)
            cy, cx = (int(v) for v in first + rng.integers(-side // 3, side // 3 + 1, 2))
        else:
            cy, cx = (
                int(rng.integers(side // 2, height - side // 2)),
                int(rng.integers(side // 2, width - side // 2)),
            )
        if cls == 1:
            mask = (ys - cy) ** 2 + (xs - cx) ** 2 <= (side / 2) ** 2
        else:
            half_w = side // 2 if cls == 0 else side // 5
            mask = (abs(ys - cy) < side // 2) & (abs(xs - cx) < max(half_w, 2))
        if mask.sum() < 16:
            continue
        objects.append({"class": cls, "mask": mask, "iscrowd": 0})
    if crowd:
        mask = np.zeros((height, width), bool)
        mask[: height // 5, : width // 5] = True
        objects.append({"class": 1, "mask": mask, "iscrowd": 1})
    for obj in objects:  # later objects drawn on top; the masks stay whole
        pixels[obj["mask"]] = np.array(CLASSES[obj["class"]][1]) + rng.normal(0, 6, 3)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), objects


def _annotation(ann_id: int, image_id: int, category_id: int, obj: dict, encoding: str) -> dict:
    mask = obj["mask"]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if encoding == "polygon":
        segmentation = [_polygon(mask)]
    elif encoding == "rle":
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    else:
        segmentation = uncompressed_rle(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": obj["iscrowd"],
    }


def _coco_json(
    entries: list[tuple[str, int, Image.Image, list[dict]]], category_id, encoding, first_id: int = 1
) -> dict:
    images, annotations = [], []
    for file_name, image_id, image, objects in entries:
        images.append({"id": image_id, "file_name": file_name, "height": image.height, "width": image.width})
        for obj in objects:
            annotations.append(
                _annotation(
                    len(annotations) + first_id,
                    image_id,
                    category_id(obj["class"]),
                    obj,
                    encoding(obj, len(annotations)),
                )
            )
    return {"images": images, "annotations": annotations}


def _official_encoding(obj: dict, number: int) -> str:
    return "uncompressed" if obj["iscrowd"] else "rle" if number % 3 == 2 else "polygon"


def write_official(root: Path, counts: dict[str, int], size=(64, 64), seed: int = 0) -> Path:
    """COCO 2017's layout; `counts`: images per subset, e.g. {"train2017": 24, "val2017": 8}."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for name, _, cid in CLASSES]
    for offset, (subset, count) in enumerate(counts.items()):
        (root / subset).mkdir(exist_ok=True)
        entries = []
        for i in range(count):
            image, objects = scene(seed + 1000 * offset + i, size, crowd=i % 4 == 3)
            name = f"{offset * 1000 + i + 1:012d}.jpg"
            image.save(root / subset / name, quality=95)
            entries.append((name, offset * 1000 + i + 1, image, objects))
        payload = _coco_json(entries, lambda c: CLASSES[c][2], _official_encoding)
        payload = {"info": {"description": "test"}, "licenses": [], **payload, "categories": categories}
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(payload))
    return root


def write_cvat(root: Path, counts: dict[str, int], size=(64, 64), seed: int = 0, *, flat: bool = False) -> Path:
    """CVAT's "COCO 1.0" export; `counts`: images per subset (a task export has one, "default")."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, (name, _, _) in enumerate(CLASSES)]
    for offset, (subset, count) in enumerate(counts.items()):
        folder = root / "images" if flat else root / "images" / subset
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for i in range(count):
            image, objects = scene(seed + 1000 * offset + i, size, crowd=i % 3 == 2)
            name = f"frame_{i:06d}.jpg"
            image.save(folder / name, quality=95)
            entries.append((name, i + 1, image, objects))
        # datumaro: polygons as polygons, mask shapes (the brush) as uncompressed RLE with iscrowd=1
        payload = _coco_json(entries, lambda c: c + 1, lambda obj, n: "uncompressed" if obj["iscrowd"] else "polygon")
        for annotation in payload["annotations"]:
            annotation["attributes"] = {"occluded": False}
        for image in payload["images"]:
            image.update(license=0, flickr_url="", coco_url="", date_captured=0)
        info = {
            "contributor": "",
            "date_created": "",
            "description": "",
            "url": "",
            "version": "",
            "year": "",
        }
        payload = {
            "licenses": [{"name": "", "id": 0, "url": ""}],
            "info": info,
            "categories": categories,
            **payload,
        }
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(payload))
    return root


def write_roboflow(root: Path, counts: dict[str, int], size=(64, 64), seed: int = 0) -> Path:
    """Roboflow's COCO export; `counts`: images per split folder, e.g. {"train": 8, "valid": 4, "test": 2}."""
    categories = [{"id": 0, "name": "shapes", "supercategory": "none"}]
    categories += [{"id": i + 1, "name": name, "supercategory": "shapes"} for i, (name, _, _) in enumerate(CLASSES)]
    for offset, (split, count) in enumerate(counts.items()):
        (root / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for i in range(count):
            image, objects = scene(seed + 1000 * offset + i, size)
            name = f"img{i:03d}_jpg.rf.{seed + offset * 1000 + i:032x}.jpg"
            image.save(root / split / name, quality=95)
            entries.append((name, i, image, objects))
        payload = _coco_json(entries, lambda c: c + 1, lambda obj, n: "polygon", first_id=0)
        payload = {
            "info": {"year": "2024"},
            "licenses": [{"id": 1, "name": "CC BY 4.0"}],
            "categories": categories,
            **payload,
        }
        (root / split / "_annotations.coco.json").write_text(json.dumps(payload))
    return root


def write_label_studio(root: Path, count: int, size=(64, 64), seed: int = 0, *, boxes: int = 1) -> Path:
    """Label Studio's COCO export of `count` images, the first `boxes` of them with one rectangle label too."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        image, objects = scene(seed + i, size)
        name = f"{seed + i:08x}-photo{i}.jpg"
        image.save(root / "images" / name, quality=95)
        entries.append((f"images\\{name}", i, image, objects))
    payload = _coco_json(entries, lambda c: c, lambda obj, n: "polygon", first_id=0)
    for annotation in payload["annotations"]:
        annotation["ignore"] = 0
    for i in range(boxes):
        payload["annotations"].append(
            {
                "id": len(payload["annotations"]),
                "image_id": i,
                "category_id": 0,
                "segmentation": [],
                "bbox": [2.0, 2.0, 10.0, 10.0],
                "ignore": 0,
                "iscrowd": 0,
                "area": 100.0,
            }
        )
    payload["categories"] = [{"id": i, "name": name} for i, (name, _, _) in enumerate(CLASSES)]
    payload["info"] = {
        "year": 2025,
        "version": "1.0",
        "description": "",
        "contributor": "Label Studio",
        "url": "",
        "date_created": "2025-01-01 00:00:00",
    }
    (root / "result.json").write_text(json.dumps(payload, indent=2))
    return root


# --------------------------------------------------------------------------------------------------
# Training on them.


def save_tiny_model(folder: Path) -> Path:
    """A tiny model for the three shape classes: LayerNorm backbone, no dropout."""
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=STAGES)
    model = tiny_model(
        backbone_config=backbone,
        num_labels=3,
        id2label=ID2LABEL,
        dropout=0.0,
        attention_dropout=0.0,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    model.save_pretrained(folder)
    return folder


def train_argv(dataset: Path, model: Path, output_dir: Path, steps: int, *extra) -> list:
    return [
        "--dataset",
        dataset,
        "--model_name_or_path",
        model,
        "--output_dir",
        output_dir,
        "--crop_size",
        64,
        "--min_scale",
        1.0,
        "--max_scale",
        1.25,
        "--recipe",
        "resnet",
        "--learning_rate",
        1e-3,
        "--backbone_lr_multiplier",
        1.0,
        "--per_device_train_batch_size",
        4,
        "--logging_steps",
        1,
        "--eval_steps",
        1000,
        "--max_train_steps",
        steps,
        *extra,
    ]
