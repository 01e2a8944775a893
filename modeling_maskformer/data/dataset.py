"""The item every source yields (`SegmentationItem`: ``semantic`` class ids, ``panoptic_ids`` with contiguous
``category_id``s, or ``instances``), the dataset base class with its label metadata, and the model's targets."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal, TypedDict

import cv2
import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from .splits import HoldOut

Task = Literal["semantic", "panoptic", "instance"]


class InstanceAnnotations(TypedDict):
    """The objects of one image (COCO instance annotations), N of them, in the JSON's order."""

    masks: np.ndarray  # bool (N, H, W): each object's full mask; objects may overlap
    labels: np.ndarray  # int64 (N,): contiguous class ids
    iscrowd: np.ndarray  # uint8 (N,): 1 = a crowd region (no training target; absorbs detections in mask AP)
    areas: np.ndarray  # float64 (N,): COCO's "area" (mask AP's small / medium / large ranges use it)


class _OptionalItemKeys(TypedDict, total=False):
    instances: InstanceAnnotations | None  # instance data only


class SegmentationItem(_OptionalItemKeys):
    image: Image.Image
    semantic: np.ndarray | None
    panoptic_ids: np.ndarray | None
    segments_info: list[dict] | None
    image_id: str


class SegmentationDataset(Sequence):
    """Label metadata and the checks every source shares: a source gives ``records`` and implements ``_load``."""

    task: Task = "semantic"
    decode_images: bool = True  # False: images read for their header only (`header_only()`, the data check)
    needs_check: bool = True  # False: generated items, nothing for `checks.check_dataset` to find
    held_out: HoldOut | None = None  # what was held out of the training subset (training records it)
    # Where ``reduce_labels`` came from, for the log: "argument", what in the data fixed it, or None (a JSON's classes)
    convention_from: str | None = "argument"

    def __init__(
        self,
        *,
        records: Sequence = (),
        id2label: dict[int, str],
        thing_ids: Sequence[int] = (),
        ignore_index: int = 255,
        reduce_labels: bool = False,
        label_to_category_id: dict[int, int] | None = None,
        held_out: HoldOut | None = None,
    ):
        if sorted(id2label) != list(range(len(id2label))):
            raise InvalidInputError(f"id2label keys must be contiguous 0..K-1, got {sorted(id2label)[:10]}...")
        if 0 <= ignore_index < len(id2label):
            raise InvalidInputError(f"ignore_index {ignore_index} collides with a class id (K={len(id2label)})")
        self.records = records
        self.id2label = dict(id2label)
        self.thing_ids = sorted(thing_ids)
        self.ignore_index = ignore_index
        self.reduce_labels = reduce_labels
        self.label_to_category_id = label_to_category_id or {i: i for i in self.id2label}
        self.held_out = held_out

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int) -> SegmentationItem:
        raise NotImplementedError

    def _source(self, index: int) -> str:
        return self._load(index)["image_id"]

    def __getitem__(self, index: int) -> SegmentationItem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        item = {"semantic": None, "panoptic_ids": None, "segments_info": None, **self._load(index)}
        size = item["image"].size  # (W, H)
        for key in ("semantic", "panoptic_ids"):
            if item[key] is not None and item[key].shape != (size[1], size[0]):
                raise InvalidInputError(
                    f"{self._source(index)}: annotation size {item[key].shape[1]}x{item[key].shape[0]} (WxH) differs "
                    f"from image size {size[0]}x{size[1]}"
                )
        instances = item.get("instances")
        if instances is not None and instances["masks"].shape[1:] != (size[1], size[0]):
            raise InvalidInputError(
                f"{self._source(index)}: image size {size[0]}x{size[1]} (WxH) but instance masks of size "
                f"{instances['masks'].shape[2]}x{instances['masks'].shape[1]}"
            )
        if item["semantic"] is not None:
            labels = present_labels(item["semantic"])
            bad = labels[(labels >= self.num_labels) & (labels != self.ignore_index)]
            if bad.size:
                raise InvalidInputError(
                    f"{self._source(index)}: label(s) {bad.tolist()} outside 0..{self.num_labels - 1} "
                    f"(ignore_index {self.ignore_index}); wrong reduce_labels (--label_convention) or num_labels?"
                )
        return item

    def header_only(self) -> SegmentationDataset:
        """A shallow copy whose images are opened for their header only (the data checked, not kept)."""
        copied = copy.copy(self)
        copied.decode_images = False
        return copied

    def subset(self, indices: Sequence[int]) -> SubsetDataset:
        return SubsetDataset(self, indices)


class SubsetDataset(SegmentationDataset):
    """Some items of a `SegmentationDataset`; other attributes (its label metadata) are read from the parent."""

    def __init__(self, parent: SegmentationDataset, indices: Sequence[int]):
        self.parent = parent
        self.indices = [int(i) for i in indices]
        for name in ("task", "needs_check", "held_out", "convention_from"):  # class attributes: __getattr__ misses
            setattr(self, name, getattr(parent, name))

    def __getattr__(self, name: str):
        if name == "parent":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.parent, name)

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int) -> SegmentationItem:
        return self.parent._load(self.indices[index])

    def _source(self, index: int) -> str:
        return self.parent._source(self.indices[index])

    def header_only(self) -> SubsetDataset:
        return SubsetDataset(self.parent.header_only(), self.indices)


def present_labels(labels: np.ndarray) -> np.ndarray:
    """`np.unique` of an integer map, faster."""
    if labels.dtype == np.uint8 and labels.ndim == 2 and labels.size:
        # NOTE: OpenCV's histogram is ~20x faster than np.unique's sort (and ~9x than np.bincount, which widens
        # to int64 first); only whether a count is 0 matters, so its float32 counts are exact enough.
        counts = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [256], [0, 256])
        return np.flatnonzero(counts.reshape(-1)).astype(np.uint8)
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2 and labels.size:
        return np.flatnonzero(np.bincount(labels.reshape(-1))).astype(labels.dtype)
    return np.unique(labels)


def instance_masks(item: SegmentationItem) -> tuple[np.ndarray, np.ndarray]:
    """(masks bool (N, H, W), classes int64 (N,)) of an instance item's non-crowd objects (COCO trains no crowd)."""
    instances = item["instances"]
    keep = instances["iscrowd"] == 0
    return instances["masks"][keep], instances["labels"][keep]


def _instance_dtype(item: SegmentationItem, count: int, what: str, ignore_index: int, compact: bool) -> type:
    """The instance map's dtype for ``count`` instances (ids 1..count, ``ignore_index`` for the rest)."""
    if count >= ignore_index > 0:
        raise InvalidInputError(f"{item['image_id']}: {count} {what} collide with ignore_index {ignore_index}")
    return np.uint8 if compact and max(ignore_index, count) <= 255 else np.int32


def to_instance_targets(
    item: SegmentationItem, ignore_index: int = 255, *, compact: bool = False
) -> tuple[np.ndarray, dict[int, int]]:
    """(instance map (H, W), instance_id_to_semantic_id) for the image processor: one instance per non-crowd segment
    (void and crowd: ``ignore_index``), or per class of a semantic item. `compact`: uint8 when it fits."""
    if item["panoptic_ids"] is not None and item["segments_info"] is not None:
        ids = item["panoptic_ids"]
        segments = [s for s in item["segments_info"] if not s.get("iscrowd", 0)]
        dtype = _instance_dtype(item, len(segments), "segments", ignore_index, compact)
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
    dtype = _instance_dtype(item, len(classes), "classes", ignore_index, compact)
    lookup = np.full(max(int(labels[-1]) if labels.size else 0, ignore_index) + 1, ignore_index, dtype=dtype)
    lookup[classes] = np.arange(1, len(classes) + 1)
    mapping = {i + 1: c for i, c in enumerate(classes)}
    if semantic.dtype == np.uint8 and lookup.dtype == np.uint8 and len(lookup) == 256:
        return cv2.LUT(semantic, lookup), mapping  # NOTE: ~10x faster than numpy's fancy indexing for uint8
    return lookup[semantic], mapping
