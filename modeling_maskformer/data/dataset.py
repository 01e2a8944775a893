"""Dataset loaders with one item format for every source.

Every dataset here is a map-style sequence (``len(ds)``, ``ds[i]``, usable by a torch DataLoader) of
``SegmentationItem`` dicts::

    {"image": PIL RGB, "semantic": uint8 (H, W) | None, "panoptic_ids": int32 (H, W) | None,
     "segments_info": list[dict] | None, "image_id": str, "instances": InstanceAnnotations (optional)}

and carries dataset-level ``id2label`` (contiguous class ids 0..K-1), ``thing_ids``, ``ignore_index``,
``reduce_labels``, ``task`` ("semantic", "panoptic" or "instance") and ``held_out`` (the validation split held
out of its training subset, `splits.HoldOut`, or None when none was). Sources: ``load_ade_folder``,
``load_coco_panoptic_folder``, ``load_coco_instances`` (COCO instance JSON), ``load_hf_dataset``,
``load_synthetic``; ``build_dataset(source, split)`` picks one.

Label conventions (the loaders convert; what they return is always the same):

- ``semantic`` holds class ids 0..K-1 and ``ignore_index`` (255) for pixels that are excluded from
  targets and metrics.
- ADE20K (folders and scene_parse_150-like HF data) stores 0 = "other" and classes 1..150. With
  ``reduce_labels=True`` (chosen explicitly: no loader guesses) the loader maps 0 -> 255 and k -> k - 1, and
  keeps an existing 255 at 255 (transformers' ``do_reduce_labels`` turns it into 254). The reduction is
  done here, once: do NOT also pass ``do_reduce_labels=True`` to the image processor.
  ``dataset.reduce_labels`` records whether it was applied.
- COCO panoptic stores segment id = R + 256 G + 256^2 B in an RGB PNG, 0 = void. ``panoptic_ids`` holds
  those ids (0 = void); ``segments_info`` keeps COCO's entries with ``category_id`` remapped from COCO's
  sparse ids to contiguous 0..K-1 (``dataset.label_to_category_id`` maps back for evaluation).
  ``semantic`` is derived from the panoptic map: each segment's class (crowd segments included),
  void -> 255.
- COCO instance JSON (task "instance") gives ``instances``: one full binary mask per object, so objects may
  overlap (an object's mask is never cut by another's), with contiguous labels, ``iscrowd`` flags and COCO's
  ``area``; ``semantic`` and ``panoptic_ids`` are None (pixels outside every object have no class).
  ``instance_masks(item)`` gives the training targets: the non-crowd objects' masks and classes.
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

import copy
from collections.abc import Sequence
from typing import Literal, TypedDict

import cv2
import numpy as np
from PIL import Image

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
    """Base class: label metadata plus the checks shared by all sources.

    Subclasses implement ``__len__`` and ``_load(index) -> SegmentationItem``; ``__getitem__`` adds
    the consistency checks.
    """

    task: Task = "semantic"
    # False: `_load` opens images for their header and checks their data cheaply (`decoding.open_image`'s
    # `decode=False`) instead of decoding them: what `checks.check_dataset` reads. See `header_only()`.
    decode_images: bool = True
    # False: the items are generated, not read from user files (nothing for `checks.check_dataset` to find).
    needs_check: bool = True
    # The validation split held out of the source's training subset (`splits.plan_split`), when these items are
    # one of its two parts: what training records in the model folder (config.validation_held_out).
    held_out: HoldOut | None = None
    # Where the label convention (``reduce_labels``) of these items came from, for the log: "argument" (the caller's
    # ``reduce_labels``: --label_convention, or a model's record), what in the data fixed it ("VOC's format", "the
    # colours of labelmap.txt"), or None where no convention applies (the classes come from a JSON's categories).
    convention_from: str | None = "argument"

    def __init__(
        self,
        *,
        id2label: dict[int, str],
        thing_ids: Sequence[int] = (),
        ignore_index: int = 255,
        reduce_labels: bool = False,
        label_to_category_id: dict[int, int] | None = None,
        held_out: HoldOut | None = None,
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
        self.held_out = held_out

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
        instances = item.get("instances")
        if instances is not None and instances["masks"].shape[1:] != (size[1], size[0]):
            raise ValueError(
                f"{self._source(index)}: image size {size[0]}x{size[1]} (WxH) but instance masks of size "
                f"{instances['masks'].shape[2]}x{instances['masks'].shape[1]}"
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
        """Read every item (raising on the first malformed one); returns the number checked. See also
        `checks.check_dataset`, which reports every problem at once, on every core."""
        for index in range(len(self)):
            self[index]
        return len(self)

    def header_only(self) -> SegmentationDataset:
        """A shallow copy whose items hold images opened for their header only (size and mode; the data checked
        for damage but not kept): everything else is read and checked as `__getitem__` does."""
        copied = copy.copy(self)
        copied.decode_images = False
        return copied

    def subset(self, indices: Sequence[int]) -> SubsetDataset:
        """The items at `indices`, with this dataset's label metadata."""
        return SubsetDataset(self, indices)


class SubsetDataset(SegmentationDataset):
    """Some items of a `SegmentationDataset` (e.g. those `check_dataset(..., skip_bad_items=True)` kept), with its
    metadata; other attributes (e.g. ``category_to_label``) are read from the parent."""

    def __init__(self, parent: SegmentationDataset, indices: Sequence[int]):
        self.parent = parent
        self.indices = [int(i) for i in indices]
        self.task, self.needs_check = parent.task, parent.needs_check
        for name in (
            "id2label",
            "thing_ids",
            "ignore_index",
            "reduce_labels",
            "label_to_category_id",
            "held_out",
            "convention_from",
        ):
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
    """The sorted distinct values of an integer map (`np.unique`'s result)."""
    if labels.dtype == np.uint8 and labels.ndim == 2 and labels.size:
        # NOTE: OpenCV's histogram is ~20x faster than np.unique's sort (and ~9x than np.bincount, which widens
        # to int64 first); only whether a count is 0 matters, so its float32 counts are exact enough.
        counts = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [256], [0, 256])
        return np.flatnonzero(counts.reshape(-1)).astype(np.uint8)
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2 and labels.size:
        return np.flatnonzero(np.bincount(labels.reshape(-1))).astype(labels.dtype)
    return np.unique(labels)


def instance_masks(item: SegmentationItem) -> tuple[np.ndarray, np.ndarray]:
    """The training targets of an instance item: (masks bool (N, H, W), classes int64 (N,)) of its non-crowd
    objects, each with its full mask (overlaps kept). Crowd regions are no target, as in COCO's training."""
    instances = item["instances"]
    keep = instances["iscrowd"] == 0
    return instances["masks"][keep], instances["labels"][keep]


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
            raise ValueError(f"{item['image_id']}: {len(segments)} segments collide with ignore_index {ignore_index}")
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
        raise ValueError(f"{item['image_id']}: {len(classes)} classes collide with ignore_index {ignore_index}")
    dtype = np.uint8 if compact and max(ignore_index, len(classes)) <= 255 else np.int32
    lookup = np.full(max(int(labels[-1]) if labels.size else 0, ignore_index) + 1, ignore_index, dtype=dtype)
    lookup[classes] = np.arange(1, len(classes) + 1)
    mapping = {i + 1: c for i, c in enumerate(classes)}
    if semantic.dtype == np.uint8 and lookup.dtype == np.uint8 and len(lookup) == 256:
        return cv2.LUT(semantic, lookup), mapping  # NOTE: ~10x faster than numpy's fancy indexing for uint8
    return lookup[semantic], mapping
