"""Test oracle: COCO's `panopticapi.evaluation.pq_compute` run on random scenes written as a COCO panoptic
folder (PNG id maps + JSON), and the generator of those scenes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [{"id": c, "name": f"c{c}", "isthing": int(c < 3)} for c in range(6)]  # 0-2 things, 3-5 stuff


def _rectangle(rng: np.random.Generator, height: int, width: int) -> tuple[slice, slice]:
    top, left = rng.integers(0, height - 4), rng.integers(0, width - 4)
    return slice(top, top + rng.integers(4, height // 2 + 4)), slice(left, left + rng.integers(4, width // 2 + 4))


def random_scene(rng: np.random.Generator, height: int = 24, width: int = 32, *, panopticapi_only: bool = True):
    """(gt map, gt segments, pred map, pred segments): rectangles painted in order over VOID (0), predictions
    jittered copies of the ground truth (class changed 1 time in 5) plus spurious ones. With
    `panopticapi_only`, also cases where panopticapi's rules are particular: a ground-truth id missing from
    its segments_info, a listed ground-truth segment without pixels, two crowd regions of one category."""
    gt_map = np.zeros((height, width), dtype=np.int64)
    boxes, gt_segments = [], []
    for _ in range(rng.integers(3, 7)):
        segment_id = int(rng.integers(1, 2**20))
        category = int(rng.integers(0, 6))
        box = _rectangle(rng, height, width)
        gt_map[box] = segment_id
        boxes.append((segment_id, category, box))
    seen_crowd: set[int] = set()
    for segment_id, category, _ in boxes:
        area = int((gt_map == segment_id).sum())
        if area == 0 or any(s["id"] == segment_id for s in gt_segments):
            continue
        crowd = int(category < 3 and rng.random() < 0.25 and (panopticapi_only or category not in seen_crowd))
        seen_crowd |= {category} if crowd else set()
        gt_segments.append({"id": segment_id, "category_id": category, "iscrowd": crowd, "area": area})
    if panopticapi_only and gt_segments and rng.random() < 0.5:
        gt_segments.pop(int(rng.integers(len(gt_segments))))  # its pixels stay in the map, unlisted
    if panopticapi_only and rng.random() < 0.3:
        gt_segments.append({"id": 2**21, "category_id": int(rng.integers(0, 6)), "iscrowd": 0, "area": 0})

    pred_map = np.zeros_like(gt_map)
    categories = {}
    for k, (_, category, box) in enumerate(boxes + [(0, int(rng.integers(0, 6)), _rectangle(rng, height, width))]):
        shift = rng.integers(-3, 4, size=2)
        rows = slice(max(box[0].start + shift[0], 0), max(box[0].stop + shift[0], 0))
        cols = slice(max(box[1].start + shift[1], 0), max(box[1].stop + shift[1], 0))
        pred_map[rows, cols] = 100 + k
        categories[100 + k] = category if rng.random() < 0.8 else int(rng.integers(0, 6))
    pred_segments = [{"id": i, "category_id": categories[i]} for i in np.unique(pred_map).tolist() if i]
    return gt_map, gt_segments, pred_map, pred_segments


def _id_to_rgb(id_map: np.ndarray) -> np.ndarray:
    return np.stack([id_map % 256, id_map // 256 % 256, id_map // 256**2], axis=-1).astype(np.uint8)


def panopticapi_pq(scenes, folder: Path, categories=CATEGORIES) -> dict:
    """panopticapi's `pq_compute` results on `scenes` (as `random_scene` returns them)."""
    from panopticapi.evaluation import pq_compute

    annotations = {"gt": [], "pred": []}
    for side in annotations:
        (folder / side).mkdir(parents=True, exist_ok=True)
    for image_id, (gt_map, gt_segments, pred_map, pred_segments) in enumerate(scenes):
        for side, id_map, segments in (("gt", gt_map, gt_segments), ("pred", pred_map, pred_segments)):
            Image.fromarray(_id_to_rgb(id_map)).save(folder / side / f"{image_id}.png")
            annotations[side].append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
    for side in annotations:
        (folder / f"{side}.json").write_text(json.dumps({"annotations": annotations[side], "categories": categories}))
    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute(str(folder / "gt.json"), str(folder / "pred.json"), str(folder / "gt"), str(folder / "pred"))
