"""Evaluation metrics for semantic, panoptic and instance segmentation.

Three accumulators with the same life cycle, `update(...)` per image, `compute() -> dict`, `reset()`:

- `SemanticSegmentationMetric`: mIoU, per-class IoU and accuracy, pixel accuracy (a K×K confusion matrix).
- `PanopticQualityMetric`: PQ, SQ and RQ (Kirillov et al., "Panoptic Segmentation", CVPR 2019, Sec. 4),
  overall and split into things and stuff, following the reference `panopticapi` implementation.
- `MaskAPMetric`: COCO mask AP via pycocotools' `COCOeval(iouType="segm")`.

All results are fractions in [0, 1] (papers print them ×100), and every `compute()` returns plain Python
floats, ints, strings and `None` (never NaN), so results go straight into `json.dump`. `None` means
"undefined", e.g. the IoU of a class absent from both prediction and ground truth.

Distributed evaluation: each process accumulates its shard, then before `compute()`
- the two tensor metrics sum their state across processes with
  `metric.all_reduce(lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum"))`;
- `MaskAPMetric` gathers its per-image records with `metric.all_gather(accelerate.utils.gather_object)`.
`merge(other)` does the same for two metrics in one process.

Shape legend: H×W image size, K classes, N instances or segments.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _as_long(x: ArrayLike) -> Tensor:
    """A label or id map as an int64 tensor (post-processing may hand back float id maps)."""
    t = torch.as_tensor(x)
    if t.is_floating_point():
        t = t.round()
    return t.long()


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _label(id2label: Mapping[int, str] | None, class_id: int) -> str:
    """Per-class results are keyed by a string so that they survive a JSON round trip unchanged."""
    if id2label is not None and class_id in id2label:
        return str(id2label[class_id])
    return str(class_id)


# ----------------------------------------------------------------------------------------------------------
# Semantic segmentation
# ----------------------------------------------------------------------------------------------------------


class SemanticSegmentationMetric:
    """mIoU, mean class accuracy and pixel accuracy from a confusion matrix accumulated over images.

    `confusion_matrix[t, p]` counts pixels of target class t predicted as p; pixels whose target is
    `ignore_index` are left out. A class absent from both prediction and target (union 0) has IoU `None` and
    is excluded from `mean_iou`; a class present only in the prediction has IoU 0 and counts. Per-class
    accuracy (recall) is `None` for classes without target pixels and is excluded from `mean_accuracy`.

    NOTE: the matrix is one `torch.bincount` instead of torchmetrics' `MulticlassJaccardIndex`. Its macro
    mean drops absent classes correctly (the tests use it as the reference), but `average="none"` reports
    absent classes as `zero_division` (0), not undefined, we need per-class accuracy from the same counts,
    and its input validation runs `torch.unique` over every pixel. The `mean_iou` evaluate module
    (`load_metric`) keeps the canonical metric's interface, but moves every map through Arrow as lists.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, id2label: Mapping[int, str] | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} lies inside the class range [0, {num_classes}); "
                "map ignored pixels to a value outside it (e.g. 255)"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.id2label = id2label
        self.reset()

    def reset(self) -> None:
        # (K, K) int64: rows = target class, columns = predicted class
        self.confusion_matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one map or a batch: `pred` and `target` are integer class maps of the same shape ((H, W) or
        (B, H, W)). Raises ValueError for predicted labels outside [0, K) (a model/label-set mismatch) and
        for target labels that are neither a class nor `ignore_index`."""
        pred, target = _as_long(pred), _as_long(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        target = target.to(pred.device)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        pred, target = pred.flatten(), target.flatten()
        if pred.numel() == 0:
            return
        k = self.num_classes
        for name, t in (("pred", pred), ("target", target)):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= k:
                raise ValueError(
                    f"{name} holds label {lo if lo < 0 else hi}, outside [0, {k}) "
                    f"(ignore_index={self.ignore_index}); check num_classes and the label mapping"
                )
        counts = torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)  # (K, K)
        self.confusion_matrix += counts.cpu()

    def merge(self, other: SemanticSegmentationMetric) -> None:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge metrics over {other.num_classes} and {self.num_classes} classes")
        self.confusion_matrix += other.confusion_matrix.cpu()

    def all_reduce(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        """Sum the confusion matrix across processes with `reduce_sum` (e.g. accelerate's `reduce`)."""
        self.confusion_matrix = reduce_sum(self.confusion_matrix).cpu().long()

    def compute(self) -> dict[str, Any]:
        cm = self.confusion_matrix.double()
        tp = cm.diag()
        target_area, pred_area = cm.sum(1), cm.sum(0)
        union = target_area + pred_area - tp
        nan = torch.full_like(tp, float("nan"))
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        acc = torch.where(target_area > 0, tp / target_area.clamp(min=1), nan)
        total = cm.sum()
        return {
            "mean_iou": _finite_or_none(iou.nanmean()),
            "mean_accuracy": _finite_or_none(acc.nanmean()),
            "pixel_accuracy": _finite_or_none(tp.sum() / total) if total > 0 else None,
            "per_class_iou": {_label(self.id2label, c): _finite_or_none(v) for c, v in enumerate(iou.tolist())},
            "per_class_accuracy": {_label(self.id2label, c): _finite_or_none(v) for c, v in enumerate(acc.tolist())},
        }


# ----------------------------------------------------------------------------------------------------------
# Panoptic quality
# ----------------------------------------------------------------------------------------------------------


def _segment_category(segment: Mapping[str, Any]) -> int:
    """Category of a segment in COCO format (`category_id`) or our post-processing format (`label_id`)."""
    if "category_id" in segment:
        return int(segment["category_id"])
    if "label_id" in segment:
        return int(segment["label_id"])
    raise KeyError(f"segment {segment.get('id')} has neither 'category_id' nor 'label_id'")


class PanopticQualityMetric:
    """PQ = SQ × RQ per category, averaged over categories, overall and for things and stuff.

    Follows `panopticapi`'s `pq_compute` (the COCO reference; tested against it):
    - id 0 is VOID;
    - a predicted and a ground-truth segment of the same category match when IoU > 0.5 (strict), where the
      union leaves out the predicted pixels that fall on ground-truth VOID (but not the ground-truth pixels
      the prediction leaves unlabelled); crowd ground truth (`iscrowd=1`) is never matched;
    - TP adds its IoU to the category's `iou_sum`; unmatched non-crowd ground truth is an FN; an unmatched
      prediction is an FP unless more than half of it lies on VOID plus crowd regions of its category;
    - SQ = iou_sum / TP, RQ = TP / (TP + FP/2 + FN/2); categories with TP + FP + FN = 0 are left out of
      the averages.
    Three deviations, for inputs COCO data does not have: ids of a map missing from its `segments_info` are
    VOID (panopticapi rejects them in predictions and ignores them in ground truth), segments listed with no
    pixel are skipped (panopticapi rejects them in predictions and counts an FN in ground truth), and a
    prediction's overlap with several crowd regions of its category is summed (panopticapi keeps the last).
    The `panoptic_quality` evaluate module (`load_metric`) follows panopticapi in these cases too.

    NOTE: not torchmetrics' `PanopticQuality`: it also removes the ground-truth pixels the prediction leaves
    unlabelled from the union and forgives ground-truth segments mostly left unlabelled (so an empty-ish
    prediction scores high), has no crowd regions, and loops in Python over every segment pair. On maps
    without VOID or crowd both agree (tested). Here the pairwise intersections of an image are a single
    `bincount` over `gt_index * (P + 1) + pred_index`.

    The state, `tp`, `fp`, `fn` (int64) and `iou_sum` (float64), one entry per category in
    `category_ids` order, sums across processes (`all_reduce`).
    """

    def __init__(
        self,
        thing_ids: Sequence[int],
        stuff_ids: Sequence[int],
        id2label: Mapping[int, str] | None = None,
    ):
        things, stuff = sorted({int(c) for c in thing_ids}), sorted({int(c) for c in stuff_ids})
        if set(things) & set(stuff):
            raise ValueError(f"categories listed as both thing and stuff: {sorted(set(things) & set(stuff))}")
        if not things and not stuff:
            raise ValueError("thing_ids and stuff_ids are both empty")
        self.category_ids = things + stuff
        self.is_thing = torch.tensor([True] * len(things) + [False] * len(stuff))
        self._index_of = {c: i for i, c in enumerate(self.category_ids)}
        self.id2label = id2label
        self.reset()

    def reset(self) -> None:
        c = len(self.category_ids)
        self.tp = torch.zeros(c, dtype=torch.long)
        self.fp = torch.zeros(c, dtype=torch.long)
        self.fn = torch.zeros(c, dtype=torch.long)
        self.iou_sum = torch.zeros(c, dtype=torch.float64)

    def _index_segments(
        self, seg_map: Tensor, segments_info: Sequence[Mapping[str, Any]], what: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Map segment ids to 1..N (0 = VOID) in id order; return that map with each segment's category
        index and crowd flag."""
        ids = [int(s["id"]) for s in segments_info]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate segment ids in the {what} segments_info: {ids}")
        cats = []
        for s in segments_info:
            cat = _segment_category(s)
            if cat not in self._index_of:
                raise ValueError(f"{what} segment {s['id']} has category {cat}, in neither thing_ids nor stuff_ids")
            cats.append(self._index_of[cat])
        order = sorted(range(len(ids)), key=ids.__getitem__)
        sorted_ids = torch.tensor([ids[i] for i in order], dtype=torch.long, device=seg_map.device)
        category = torch.tensor([cats[i] for i in order], dtype=torch.long)
        crowd = torch.tensor([bool(segments_info[i].get("iscrowd", 0)) for i in order], dtype=torch.bool)
        if not ids:
            return torch.zeros_like(seg_map), category, crowd
        pos = torch.searchsorted(sorted_ids, seg_map).clamp(max=len(ids) - 1)
        index = torch.where(sorted_ids[pos] == seg_map, pos + 1, 0)
        return index, category, crowd

    def update(
        self,
        pred_segmentation: ArrayLike,
        pred_segments_info: Sequence[Mapping[str, Any]],
        gt_segmentation: ArrayLike,
        gt_segments_info: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image. Maps are (H, W) segment-id maps; `*_segments_info` list `{"id", "category_id" or
        "label_id"}` per segment (ground truth may add `"iscrowd"`). Both sides must use the same category ids
        (those of `thing_ids` / `stuff_ids`)."""
        pred_map, gt_map = _as_long(pred_segmentation), _as_long(gt_segmentation)
        if pred_map.shape != gt_map.shape:
            raise ValueError(f"prediction and ground-truth maps differ in shape: {pred_map.shape} vs {gt_map.shape}")
        gt_map = gt_map.to(pred_map.device)
        gt_index, gt_cat, gt_crowd = self._index_segments(gt_map.flatten(), gt_segments_info, "ground-truth")
        pred_index, pred_cat, _ = self._index_segments(pred_map.flatten(), pred_segments_info, "prediction")
        g, p = len(gt_cat), len(pred_cat)

        # (G+1, P+1) pixel counts of every (ground truth, prediction) pair; row / column 0 is VOID
        inter = torch.bincount(gt_index * (p + 1) + pred_index, minlength=(g + 1) * (p + 1))
        inter = inter.reshape(g + 1, p + 1).cpu()
        gt_area, pred_area = inter[1:].sum(1), inter[:, 1:].sum(0)  # (G,), (P,)
        pair = inter[1:, 1:]  # (G, P)
        pred_on_void = inter[0, 1:]  # (P,)
        union = gt_area[:, None] + pred_area[None, :] - pair - pred_on_void[None, :]  # (G, P)
        same_cat = gt_cat[:, None] == pred_cat[None, :]  # (G, P)
        # NOTE: IoU > 0.5 as integers (2·I > U) so that IoU exactly 0.5 is never a match; it also makes the
        # matching unique, since segments within a map do not overlap (Kirillov et al., Theorem 1).
        match = same_cat & ~gt_crowd[:, None] & (2 * pair > union)  # (G, P)
        gi, pi = match.nonzero(as_tuple=True)
        num_cat = len(self.category_ids)
        self.tp += torch.bincount(gt_cat[gi], minlength=num_cat)
        self.iou_sum.index_add_(0, gt_cat[gi], pair[gi, pi].double() / union[gi, pi].double())

        fn = ~match.any(1) & ~gt_crowd & (gt_area > 0)
        self.fn += torch.bincount(gt_cat[fn], minlength=num_cat)

        # pixels of each prediction on VOID or on a crowd region of its own category, (P,)
        ignored = pred_on_void + (pair * (same_cat & gt_crowd[:, None])).sum(0)
        fp = ~match.any(0) & (pred_area > 0) & (2 * ignored <= pred_area)
        self.fp += torch.bincount(pred_cat[fp], minlength=num_cat)

    def merge(self, other: PanopticQualityMetric) -> None:
        if other.category_ids != self.category_ids:
            raise ValueError("cannot merge panoptic metrics over different categories")
        for name in ("tp", "fp", "fn", "iou_sum"):
            getattr(self, name).add_(getattr(other, name).cpu())

    def all_reduce(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        """Sum `tp`, `fp`, `fn`, `iou_sum` across processes with `reduce_sum` (e.g. accelerate's `reduce`)."""
        for name in ("tp", "fp", "fn", "iou_sum"):
            state = getattr(self, name)
            setattr(self, name, reduce_sum(state).cpu().to(state.dtype))

    def compute(self) -> dict[str, Any]:
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        counted = (self.tp + self.fp + self.fn) > 0
        sq = torch.where(tp > 0, self.iou_sum / tp.clamp(min=1), 0.0)
        rq = torch.where(counted, tp / (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12), 0.0)
        pq = sq * rq
        results: dict[str, Any] = {}
        for suffix, subset in (
            ("", counted),
            ("_things", counted & self.is_thing),
            ("_stuff", counted & ~self.is_thing),
        ):
            n = int(subset.sum())
            for name, values in (("pq", pq), ("sq", sq), ("rq", rq)):
                results[name + suffix] = float(values[subset].mean()) if n else None
            results["n" + suffix] = n
        per_class = {}
        for i, cat in enumerate(self.category_ids):
            c = bool(counted[i])
            per_class[_label(self.id2label, cat)] = {
                "pq": float(pq[i]) if c else None,
                "sq": float(sq[i]) if c else None,
                "rq": float(rq[i]) if c else None,
                "tp": int(self.tp[i]),
                "fp": int(self.fp[i]),
                "fn": int(self.fn[i]),
                "isthing": bool(self.is_thing[i]),
            }
        results["per_class"] = per_class
        return results


# ----------------------------------------------------------------------------------------------------------
# COCO mask AP
# ----------------------------------------------------------------------------------------------------------

_AP_KEYS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")  # COCOeval.stats[0:6]


def _instances(instances: Mapping[str, Any], need_scores: bool) -> tuple[np.ndarray, list[int], list[Any]]:
    """(N, H, W) uint8 masks, labels and scores (or crowd flags) from either accepted format.

    - `{"masks": (N, H, W) bool, "labels": (N,), "scores": (N,)}` (ground truth: `"iscrowd"` optional);
    - `{"segmentation": Tensor, "segments_info": [{"id", "label_id" or "category_id", "score"}]}`: our (and
      transformers') instance post-processing output. `segmentation` is an (H, W) id map, or (N, H, W) binary
      maps in `segments_info` order (`return_binary_maps=True`).
    """
    if "masks" in instances:
        masks = torch.as_tensor(instances["masks"]).bool()
        labels = [int(v) for v in torch.as_tensor(instances["labels"]).reshape(-1).tolist()]
        key = "scores" if need_scores else "iscrowd"
        extra = instances.get(key)
        if extra is None and need_scores:
            raise KeyError("predictions need 'scores'")
        extra = [0] * len(labels) if extra is None else torch.as_tensor(extra).reshape(-1).tolist()
    elif "segmentation" in instances:
        seg = torch.as_tensor(instances["segmentation"])
        info = instances["segments_info"]
        labels = [_segment_category(s) for s in info]
        if need_scores:
            extra = [float(s["score"]) for s in info]
        else:
            extra = [int(s.get("iscrowd", 0)) for s in info]
        if seg.dim() == 3:
            masks = seg.bool()
        else:
            ids = torch.tensor([int(s["id"]) for s in info], dtype=torch.long, device=seg.device)
            masks = _as_long(seg)[None] == ids[:, None, None]  # (N, H, W)
    else:
        raise KeyError("expected 'masks' + 'labels' or 'segmentation' + 'segments_info'")
    if masks.dim() != 3 or masks.shape[0] != len(labels):
        raise ValueError(f"{masks.shape[0] if masks.dim() == 3 else 'no'} masks for {len(labels)} labels")
    return masks.cpu().numpy().astype(np.uint8), labels, extra


class MaskAPMetric:
    """COCO mask AP (AP@[.5:.95], AP50, AP75, AP small / medium / large) with pycocotools.

    Each image's masks are RLE-encoded on `update` (`pycocotools.mask.encode`) and kept per image; `compute`
    builds the ground-truth and detection COCO objects in memory and runs `COCOeval(iouType="segm")` with
    `maxDets=[1, 10, max_detections]`. As in COCO, a category without ground truth in the whole set is left out
    of the mean, so predictions of such a category cost nothing; crowd ground truth (`iscrowd=1`) absorbs
    detections without counting as a miss. A target may give each object's `"areas"` (COCO's `area` field,
    which `COCOeval` reads for the small / medium / large ranges); by default an object's area is its mask's.
    Results are in [0, 1] (`COCOeval.stats` without the ×100 of the
    papers) and `None` where COCO reports -1 (no ground truth in that area range). With no non-crowd ground
    truth at all, every value is `None` and a warning says why. pycocotools' printing is silenced unless
    `verbose=True`.
    """

    def __init__(self, id2label: Mapping[int, str] | None = None, max_detections: int = 100, verbose: bool = False):
        self.id2label = id2label
        self.max_detections = max_detections
        self.verbose = verbose
        self.reset()

    def reset(self) -> None:
        # one record per image: {"height", "width", "gt": [(rle, label, iscrowd, area)], "dt": [(rle, label, score)]}
        self.images: list[dict[str, Any]] = []

    def update(self, pred: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Add one image: `pred` and `target` as described in `_instances` (masks + labels (+ scores), or an
        id map / binary maps + segments_info; the target's masks may overlap, and may come with "areas"). An image
        without ground truth or without predictions is fine."""
        gt_masks, gt_labels, gt_crowd = _instances(target, need_scores=False)
        gt_rles = self._encode(gt_masks)
        areas = target.get("areas")
        areas = [float(mask_utils.area(rle)) for rle in gt_rles] if areas is None else [float(a) for a in areas]
        if len(areas) != len(gt_rles):
            raise ValueError(f"{len(areas)} areas for {len(gt_rles)} ground-truth masks")
        dt_masks, dt_labels, dt_scores = _instances(pred, need_scores=True)
        height, width = gt_masks.shape[1:]
        if dt_masks.shape[0] and dt_masks.shape[1:] != (height, width):
            raise ValueError(f"prediction masks are {dt_masks.shape[1:]}, ground truth {(height, width)}")
        self.images.append(
            {
                "height": int(height),
                "width": int(width),
                "gt": list(zip(gt_rles, gt_labels, [int(c) for c in gt_crowd], areas)),
                "dt": list(zip(self._encode(dt_masks), dt_labels, [float(s) for s in dt_scores])),
            }
        )

    @staticmethod
    def _encode(masks: np.ndarray) -> list[dict[str, Any]]:
        if masks.shape[0] == 0:
            return []
        return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))  # (H, W, N) Fortran order

    def merge(self, other: MaskAPMetric) -> None:
        self.images.extend(other.images)

    def all_gather(self, gather_object: Callable[[list], list]) -> None:
        """Collect every process's image records (e.g. `accelerate.utils.gather_object`)."""
        self.images = list(gather_object(self.images))

    def compute(self) -> dict[str, Any]:
        empty = {key: None for key in _AP_KEYS} | {"per_class_ap": {}}
        if not any(not gt[2] for image in self.images for gt in image["gt"]):
            warnings.warn("MaskAPMetric: no (non-crowd) ground-truth instances, so AP is undefined", stacklevel=2)
            return empty
        labels = sorted({entry[1] for image in self.images for key in ("gt", "dt") for entry in image[key]})
        cat_of = {lab: i + 1 for i, lab in enumerate(labels)}  # COCO ids from 1 (0 reads as "unmatched")
        images, gts, dts = [], [], []
        for image_id, image in enumerate(self.images, start=1):
            images.append({"id": image_id, "height": image["height"], "width": image["width"]})
            for rle, lab, crowd, area in image["gt"]:
                gts.append(
                    self._annotation(len(gts) + 1, image_id, cat_of[lab], rle) | {"iscrowd": crowd, "area": area}
                )
            for rle, lab, score in image["dt"]:
                dts.append(self._annotation(len(dts) + 1, image_id, cat_of[lab], rle) | {"iscrowd": 0, "score": score})
        categories = [{"id": i} for i in cat_of.values()]

        out = io.StringIO()
        with contextlib.redirect_stdout(out) if not self.verbose else contextlib.nullcontext():
            # NOTE: built in memory rather than with `COCO.loadRes`, which fails on an empty detection list.
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = {"images": images, "annotations": gts, "categories": categories}
            coco_dt.dataset = {"images": images, "annotations": dts, "categories": categories}
            coco_gt.createIndex()
            coco_dt.createIndex()
            evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
            evaluator.params.maxDets = [1, 10, self.max_detections]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        results: dict[str, Any] = {key: (float(v) if v >= 0 else None) for key, v in zip(_AP_KEYS, evaluator.stats)}
        precision = evaluator.eval["precision"]  # (T iou thresholds, R recall points, K, A areas, M maxDets)
        per_class = {}
        for k, lab in enumerate(labels):
            p = precision[:, :, k, 0, -1]
            per_class[_label(self.id2label, lab)] = float(p[p > -1].mean()) if (p > -1).any() else None
        results["per_class_ap"] = per_class
        return results

    @staticmethod
    def _annotation(ann_id: int, image_id: int, category_id: int, rle: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": ann_id,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": mask_utils.toBbox(rle).tolist(),
        }


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "-"
    return str(value)


def _grid(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(results: Mapping[str, Any]) -> str:
    """Render one `compute()` result as text: a table of the overall numbers, then a per-class table.

    Per-class entries are recognised by shape: a `{label: number}` dict becomes one column (`per_class_iou`
    → "iou"), a `{label: {metric: number}}` dict contributes its inner keys as columns. Values are printed
    as fractions (4 decimals); undefined ones as "-".
    """
    overall = [(k, v) for k, v in results.items() if not isinstance(v, Mapping)]
    columns: dict[str, dict[str, Any]] = {}
    for key, value in results.items():
        if not isinstance(value, Mapping):
            continue
        for label, entry in value.items():
            if isinstance(entry, Mapping):
                for metric, v in entry.items():
                    columns.setdefault(metric, {})[label] = v
            else:
                columns.setdefault(key.removeprefix("per_class_"), {})[label] = entry
    parts = [_grid(["metric", "value"], overall)] if overall else []
    if columns:
        labels = list(dict.fromkeys(label for col in columns.values() for label in col))
        rows = [[label, *(columns[c].get(label) for c in columns)] for label in labels]
        parts.append(_grid(["class", *columns], rows))
    return "\n\n".join(parts)
