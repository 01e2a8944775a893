"""Dataset loaders with one item format for every source.

Every dataset here is a map-style sequence (``len(ds)``, ``ds[i]``, usable by a torch DataLoader) of
``SegmentationItem`` dicts::

    {"image": PIL RGB, "semantic": uint8 (H, W) | None, "panoptic_ids": int32 (H, W) | None,
     "segments_info": list[dict] | None, "image_id": str}

and carries dataset-level ``id2label`` (contiguous class ids 0..K-1), ``thing_ids``, ``ignore_index``
and ``reduce_labels``. Sources: ``load_ade_folder``, ``load_coco_panoptic_folder``, ``load_hf_dataset``,
``load_synthetic``; ``build_dataset(source, split)`` picks one.

Label conventions (the loaders convert; what they return is always the same):

- ``semantic`` holds class ids 0..K-1 and ``ignore_index`` (255) for pixels that are excluded from
  targets and metrics.
- ADE20K (folders and scene_parse_150-like HF data) stores 0 = "other" and classes 1..150. With
  ``reduce_labels=True`` (the default for semantic PNGs) the loader maps 0 -> 255 and k -> k - 1, and
  keeps an existing 255 at 255 (transformers' ``do_reduce_labels`` turns it into 254). The reduction is
  done here, once: do NOT also pass ``do_reduce_labels=True`` to the image processor.
  ``dataset.reduce_labels`` records whether it was applied.
- COCO panoptic stores segment id = R + 256 G + 256^2 B in an RGB PNG, 0 = void. ``panoptic_ids`` holds
  those ids (0 = void); ``segments_info`` keeps COCO's entries with ``category_id`` remapped from COCO's
  sparse ids to contiguous 0..K-1 (``dataset.label_to_category_id`` maps back for evaluation).
  ``semantic`` is derived from the panoptic map: each segment's class (crowd segments included),
  void -> 255.
- ``to_instance_targets(item)`` turns an item into the image processor's instance format: an int32 map
  with instance ids 1..N and ``ignore_index`` for void (and crowd) pixels, plus
  ``instance_id_to_semantic_id`` {1..N: class id}. Feed both to the processor with
  ``ignore_index=255, do_reduce_labels=False``. Semantic items may instead feed ``semantic`` to
  ``segmentation_maps`` directly.

Malformed data raises ``FileNotFoundError`` / ``ValueError`` naming the file: missing or empty folders,
images without annotations, colour (RGB) semantic annotations, labels that collide with ``ignore_index``,
invalid COCO JSON (missing fields, a segment id listed twice for one image) at construction; undecodable
(truncated) images, size mismatches, labels out of range and segment/PNG disagreements when an item is read. ``dataset.validate()`` reads every item to surface
all of these up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypedDict

import cv2
import numpy as np
from PIL import Image

Task = Literal["semantic", "panoptic"]


class SegmentationItem(TypedDict):
    image: Image.Image
    semantic: np.ndarray | None
    panoptic_ids: np.ndarray | None
    segments_info: list[dict] | None
    image_id: str


class SegmentationDataset(Sequence):
    """Base class: label metadata plus the checks shared by all sources.

    Subclasses implement ``__len__`` and ``_load(index) -> SegmentationItem``; ``__getitem__`` adds
    the consistency checks.
    """

    task: Task = "semantic"

    def __init__(
        self,
        *,
        id2label: dict[int, str],
        thing_ids: Sequence[int] = (),
        ignore_index: int = 255,
        reduce_labels: bool = False,
        label_to_category_id: dict[int, int] | None = None,
    ):
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"id2label keys must be contiguous 0..K-1, got {sorted(id2label)[:10]}...")
        if 0 <= ignore_index < len(id2label):
            raise ValueError(f"ignore_index {ignore_index} collides with a class id (K={len(id2label)})")
        self.id2label = dict(id2label)
        self.thing_ids = sorted(thing_ids)
        self.ignore_index = ignore_index
        self.reduce_labels = reduce_labels
        self.label_to_category_id = label_to_category_id or {i: i for i in self.id2label}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> SegmentationItem:
        raise NotImplementedError

    def _source(self, index: int) -> str:
        """Where item `index` comes from, for error messages (subclasses name the annotation file)."""
        return self._load(index)["image_id"]

    def __getitem__(self, index: int) -> SegmentationItem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        item = self._load(index)
        size = item["image"].size  # (W, H)
        for key in ("semantic", "panoptic_ids"):
            if item[key] is not None and item[key].shape != (size[1], size[0]):
                raise ValueError(
                    f"{self._source(index)}: image size {size[0]}x{size[1]} (WxH) but {key} annotation size "
                    f"{item[key].shape[1]}x{item[key].shape[0]}"
                )
        if item["semantic"] is not None:
            labels = present_labels(item["semantic"])
            bad = labels[(labels >= self.num_labels) & (labels != self.ignore_index)]
            if bad.size:
                raise ValueError(
                    f"{self._source(index)}: label(s) {bad.tolist()} outside 0..{self.num_labels - 1} "
                    f"(ignore_index {self.ignore_index}); wrong reduce_labels (--label_convention) or num_labels?"
                )
        return item

    def validate(self) -> int:
        """Read every item (raising on the first malformed one); returns the number checked."""
        for index in range(len(self)):
            self[index]
        return len(self)


def present_labels(labels: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer map (`np.unique`'s result)."""
    if labels.dtype == np.uint8 and labels.ndim == 2 and labels.size:
        # NOTE: OpenCV's histogram is ~20x faster than np.unique's sort (and ~9x than np.bincount, which widens
        # to int64 first); only whether a count is 0 matters, so its float32 counts are exact enough.
        counts = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [256], [0, 256])
        return np.flatnonzero(counts.reshape(-1)).astype(np.uint8)
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2 and labels.size:
        return np.flatnonzero(np.bincount(labels.reshape(-1))).astype(labels.dtype)
    return np.unique(labels)


def to_instance_targets(
    item: SegmentationItem, ignore_index: int = 255, *, compact: bool = False
) -> tuple[np.ndarray, dict[int, int]]:
    """(instance map int32 (H, W), instance_id_to_semantic_id) for the image processor; with `compact`, the map
    is uint8 when its ids and ``ignore_index`` fit (what `TrainingSet` augments: uint8 masks resize natively).

    Panoptic items: one instance per non-crowd segment, ids 1..N; void and crowd pixels get
    ``ignore_index``. Semantic items: one "instance" per class present (MaskFormer's semantic targets);
    ignored pixels keep ``ignore_index``.
    """
    if item["panoptic_ids"] is not None and item["segments_info"] is not None:
        ids = item["panoptic_ids"]
        segments = [s for s in item["segments_info"] if not s.get("iscrowd", 0)]
        if len(segments) >= ignore_index > 0:
            raise ValueError(
                f"{item['image_id']}: {len(segments)} segments collide with ignore_index {ignore_index}"
            )
        dtype = np.uint8 if compact and max(ignore_index, len(segments)) <= 255 else np.int32
        instance_map = np.full(ids.shape, ignore_index, dtype=dtype)
        if segments:
            # NOTE: one search of every pixel among the sorted segment ids, not one full-size pass per segment
            # (segment ids are unique per image: the loaders refuse duplicates).
            segment_ids = np.array([s["id"] for s in segments], dtype=np.int64)
            order = np.argsort(segment_ids)
            position = np.searchsorted(segment_ids[order], ids).clip(max=len(segments) - 1)
            found = segment_ids[order][position] == ids
            instance_map[found] = order[position[found]] + 1
        mapping = {i: int(segment["category_id"]) for i, segment in enumerate(segments, start=1)}
        return instance_map, mapping
    if item["semantic"] is None:
        raise ValueError(f"{item['image_id']}: item has neither a panoptic nor a semantic annotation")
    semantic = item["semantic"]
    labels = present_labels(semantic)
    classes = [int(c) for c in labels if c != ignore_index]
    if len(classes) >= ignore_index > 0:
        raise ValueError(
            f"{item['image_id']}: {len(classes)} classes collide with ignore_index {ignore_index}"
        )
    dtype = np.uint8 if compact and max(ignore_index, len(classes)) <= 255 else np.int32
    lookup = np.full(max(int(labels[-1]) if labels.size else 0, ignore_index) + 1, ignore_index, dtype=dtype)
    lookup[classes] = np.arange(1, len(classes) + 1)
    mapping = {i + 1: c for i, c in enumerate(classes)}
    if semantic.dtype == np.uint8 and lookup.dtype == np.uint8 and len(lookup) == 256:
        return cv2.LUT(semantic, lookup), mapping  # NOTE: ~10x faster than numpy's fancy indexing for uint8
    return lookup[semantic], mapping
