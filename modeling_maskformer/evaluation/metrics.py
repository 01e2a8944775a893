"""mIoU, PQ and COCO mask AP: the one implementation behind `evaluate_model`, `SegmentationMetrics` (Trainer) and
the shipped `evaluate` modules. Each has `update(...)` per image, `compute()` (plain values, `None` where undefined,
ready for `json.dump`), `reset()` and `all_reduce(sum)` (mask AP: `all_gather`) over processes.
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

from ..errors import InvalidInputError

ArrayLike = Tensor | np.ndarray | Sequence


def _as_long(x: ArrayLike) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    return (t.round() if t.is_floating_point() else t).long()


def _finite_or_none(x: float | Tensor) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _label(id2label: Mapping[int, str] | None, class_id: int) -> str:
    # Per-class results are keyed by a string so that they survive a JSON round trip unchanged.
    return str(id2label[class_id]) if id2label is not None and class_id in id2label else str(class_id)


def read_segment(segment: Mapping[str, Any]) -> tuple[int, int]:
    """(id, category) of a segment in COCO's format (`category_id`) or post-processing's (`label_id`)."""
    category = segment.get("category_id", segment.get("label_id"))
    if segment.get("id") is None or category is None:
        raise InvalidInputError(f"every segment needs an 'id' and a 'category_id' (or 'label_id'), got {segment}")
    return int(segment["id"]), int(category)


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None, strict=False):
    """(K+1, K+1) pixel counts, rows target, columns prediction, without target `ignore_index`; row / column K counts
    labels outside [0, K) as the canonical `mean_iou` does, which `strict=True` refuses (a label-set mismatch)."""
    pred, target = _as_long(pred), _as_long(target)
    if pred.shape != target.shape:
        raise InvalidInputError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} shapes differ")
    target = target.to(pred.device)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    k = num_classes
    for name, t in (("pred", pred), ("target", target)) if strict else ():
        outside = t[(t < 0) | (t >= k)]
        if outside.numel():
            raise InvalidInputError(
                f"{name} holds label {int(outside[0])}, outside [0, {k}) (ignore_index={ignore_index}); "
                "check num_classes and the label mapping"
            )
    pred, target = (torch.where((t >= 0) & (t < k), t, k) for t in (pred, target))
    counts = torch.bincount(target * (k + 1) + pred, minlength=(k + 1) ** 2)
    return counts.reshape(k + 1, k + 1).cpu()  # (K+1, K+1)


def class_scores(confusion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class IoU and accuracy (recall), NaN where undefined, and pixel accuracy, from `confusion_matrix`."""
    cm = confusion.double()
    tp, target_area, pred_area = cm.diag()[:-1], cm[:-1].sum(1), cm[:, :-1].sum(0)  # (K,) each
    return tp / (target_area + pred_area - tp), tp / target_area, tp.sum() / target_area.sum()


class SemanticSegmentationMetric:
    """mIoU, mean class accuracy and pixel accuracy from a confusion matrix summed over images (the canonical
    `mean_iou`'s numbers); a class absent from prediction and target has IoU `None`, left out of the mean.

    NOTE: one `torch.bincount`, not torchmetrics' `MulticlassJaccardIndex` (the same mean, tested), whose per-class
    values give absent classes 0 rather than undefined, and whose input checks run `torch.unique` on every pixel.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, id2label: Mapping[int, str] | None = None):
        if num_classes < 1:
            raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise InvalidInputError(
                f"ignore_index={ignore_index} lies inside the class range [0, {num_classes}); "
                "map ignored pixels to a value outside it (e.g. 255)"
            )
        self.num_classes, self.ignore_index, self.id2label = num_classes, ignore_index, id2label
        self.reset()

    def reset(self) -> None:
        self.confusion_matrix = torch.zeros(self.num_classes + 1, self.num_classes + 1, dtype=torch.long)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add class maps of one shape, (H, W) or (B, H, W)."""
        self.confusion_matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index, strict=True)

    def all_reduce(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        self.confusion_matrix = reduce_sum(self.confusion_matrix).cpu().long()

    def compute(self) -> dict[str, Any]:
        iou, accuracy, pixel_accuracy = class_scores(self.confusion_matrix)
        return {
            "mean_iou": _finite_or_none(iou.nanmean()),
            "mean_accuracy": _finite_or_none(accuracy.nanmean()),
            "pixel_accuracy": _finite_or_none(pixel_accuracy),
            "per_class_iou": {_label(self.id2label, c): _finite_or_none(v) for c, v in enumerate(iou)},
            "per_class_accuracy": {_label(self.id2label, c): _finite_or_none(v) for c, v in enumerate(accuracy)},
        }


class PanopticQualityMetric:
    """PQ = SQ × RQ per category (Kirillov et al., CVPR 2019), averaged over the categories that occur, overall and
    for things and stuff, with the rules of `panopticapi.pq_compute` (tested against it): ground-truth id 0 is VOID;
    segments of one category match when IoU > 0.5, the union leaving out the predicted pixels on VOID; crowd ground
    truth is never matched nor missed; an unmatched prediction is no FP when more than half of it lies on VOID plus
    the last listed crowd region of its category; a ground-truth id `segments_info` does not list is ignored (not
    VOID). A prediction's unlisted id means "no segment" (post-processing writes -1) and a listed segment without
    pixels is skipped; `strict=True` refuses both, as panopticapi does.

    NOTE: not torchmetrics' `PanopticQuality` (the same numbers without VOID and crowd, tested), which also drops
    from the union the ground-truth pixels the prediction leaves unlabelled, and loops over segment pairs in Python.
    """

    def __init__(self, thing_ids: Sequence[int], stuff_ids: Sequence[int], id2label=None, *, strict: bool = False):
        things, stuff = sorted({int(c) for c in thing_ids}), sorted({int(c) for c in stuff_ids})
        if set(things) & set(stuff):
            raise InvalidInputError(f"categories listed as both thing and stuff: {sorted(set(things) & set(stuff))}")
        if not things and not stuff:
            raise InvalidInputError("thing_ids and stuff_ids are both empty")
        self.category_ids = things + stuff
        self.is_thing = torch.tensor([True] * len(things) + [False] * len(stuff))
        self._index_of = {c: i for i, c in enumerate(self.category_ids)}
        self.id2label, self.strict = id2label, strict
        self.reset()

    def reset(self) -> None:
        self.tp, self.fp, self.fn = (torch.zeros(len(self.category_ids), dtype=torch.long) for _ in range(3))
        self.iou_sum = torch.zeros(len(self.category_ids), dtype=torch.float64)

    def _index(self, ids_map: Tensor, segments_info: Sequence[Mapping], unlisted: int) -> tuple[Tensor, ...]:
        """Each pixel's segment as 1..N (0: id 0, `unlisted`: not listed), each segment's category index and crowd."""
        fields = [read_segment(s) for s in segments_info]
        position = {segment_id: n for n, (segment_id, _) in enumerate(fields, start=1)} | {0: 0}
        if len(position) != len(fields) + 1:
            raise InvalidInputError(f"duplicate segment ids or id 0 (VOID) in segments_info: {[i for i, _ in fields]}")
        unknown = [c for _, c in fields if c not in self._index_of]
        if unknown:
            raise InvalidInputError(
                f"a segment has category {unknown[0]}, not in `categories` (neither thing_ids nor stuff_ids)"
            )
        values, inverse = torch.unique(ids_map, return_inverse=True)
        index = torch.tensor([position.get(v, unlisted) for v in values.tolist()], dtype=torch.long)
        category = torch.tensor([self._index_of[c] for _, c in fields], dtype=torch.long)
        crowd = torch.tensor([bool(s.get("iscrowd", 0)) for s in segments_info], dtype=torch.bool)
        return index.to(ids_map.device)[inverse], category, crowd

    def update(self, pred_segmentation, pred_segments_info, gt_segmentation, gt_segments_info) -> None:
        """Add one image: (H, W) segment-id maps and their `segments_info` (`read_segment`; ground truth may add
        `"iscrowd"`)."""
        pred_map, gt_map = _as_long(pred_segmentation), _as_long(gt_segmentation)
        if pred_map.shape != gt_map.shape:
            raise InvalidInputError(
                f"prediction {tuple(pred_map.shape)} and reference {tuple(gt_map.shape)} shapes differ"
            )
        pred_map, gt_map = pred_map.flatten(), gt_map.flatten().to(pred_map.device)
        g, p = len(gt_segments_info), len(pred_segments_info)
        gt_index, gt_cat, gt_crowd = self._index(gt_map, gt_segments_info, g + 1)
        pred_index, pred_cat, _ = self._index(pred_map, pred_segments_info, -1)
        if self.strict and (pred_index < 0).any():
            unlisted = pred_map[pred_index < 0].unique().tolist()
            raise InvalidInputError(f"prediction: segment ids {unlisted} in the map are not listed in segments_info")
        # (G+3, P+1) pixel counts of (ground truth, prediction) pairs. Rows: VOID, the listed segments, unlisted
        # ids, none (empty); column 0: no predicted segment.
        counts = torch.bincount(gt_index * (p + 1) + pred_index.clamp(min=0), minlength=(g + 3) * (p + 1))
        counts = counts.reshape(g + 3, p + 1).cpu()
        gt_area, pred_area = counts[1 : g + 1].sum(1), counts[:, 1:].sum(0)  # (G,), (P,)
        if self.strict and not pred_area.all():
            absent = [read_segment(pred_segments_info[i])[0] for i in (pred_area == 0).nonzero().flatten().tolist()]
            raise InvalidInputError(f"prediction: listed segments {absent} have no pixel in the map")
        pair, pred_on_void = counts[1 : g + 1, 1:], counts[0, 1:]  # (G, P), (P,)
        union = gt_area[:, None] + pred_area[None, :] - pair - pred_on_void[None, :]  # (G, P)
        same_cat = gt_cat[:, None] == pred_cat[None, :]  # (G, P)
        # NOTE: IoU > 0.5 as integers (2·I > U), so IoU exactly 0.5 never matches; the matching is unique since
        # the segments of one map do not overlap (Kirillov et al., Theorem 1).
        match = same_cat & ~gt_crowd[:, None] & (2 * pair > union)  # (G, P)
        gi, pi = match.nonzero(as_tuple=True)
        num_categories = len(self.category_ids)
        self.tp += torch.bincount(gt_cat[gi], minlength=num_categories)
        self.iou_sum.index_add_(0, gt_cat[gi], pair[gi, pi].double() / union[gi, pi].double())
        self.fn += torch.bincount(gt_cat[~match.any(1) & ~gt_crowd], minlength=num_categories)
        crowd_row = torch.full((num_categories,), g + 2)  # the empty row where a category has no crowd region
        for i in gt_crowd.nonzero().flatten().tolist():
            crowd_row[gt_cat[i]] = i + 1  # the last listed wins, as in panopticapi
        ignored = pred_on_void + counts[crowd_row[pred_cat], torch.arange(1, p + 1)]  # on VOID or crowd, (P,)
        fp = ~match.any(0) & (pred_area > 0) & (2 * ignored <= pred_area)
        self.fp += torch.bincount(pred_cat[fp], minlength=num_categories)

    def all_reduce(self, reduce_sum: Callable[[Tensor], Tensor]) -> None:
        for name in ("tp", "fp", "fn", "iou_sum"):
            state = getattr(self, name)
            setattr(self, name, reduce_sum(state).cpu().to(state.dtype))

    def compute(self) -> dict[str, Any]:
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        counted = (self.tp + self.fp + self.fn) > 0
        denominator = (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12)
        sq = torch.where(tp > 0, self.iou_sum / tp.clamp(min=1), 0.0)
        scores = {"pq": self.iou_sum / denominator, "sq": sq, "rq": tp / denominator}  # (C,) each
        results: dict[str, Any] = {}
        groups = {"": counted, "_things": counted & self.is_thing, "_stuff": counted & ~self.is_thing}
        for suffix, subset in groups.items():
            results |= {k + suffix: float(v[subset].mean()) if subset.any() else None for k, v in scores.items()}
            results["n" + suffix] = int(subset.sum())
        results["per_class"] = {
            _label(self.id2label, category): {k: float(v[i]) if counted[i] else None for k, v in scores.items()}
            | {"tp": int(self.tp[i]), "fp": int(self.fp[i]), "fn": int(self.fn[i]), "isthing": bool(self.is_thing[i])}
            for i, category in enumerate(self.category_ids)
        }
        return results


_STATS = "ap ap50 ap75 ap_small ap_medium ap_large ar1 ar10 ar{} ar_small ar_medium ar_large".split()  # COCOeval.stats


def _rles(masks: Any) -> list[dict[str, Any]]:
    """COCO RLEs of binary masks given as (N, H, W), a list of (H, W), or already as RLE dicts."""
    if isinstance(masks, list | tuple):
        if not masks or isinstance(masks[0], Mapping):
            return [dict(m) for m in masks]
        masks = torch.stack([torch.as_tensor(m) for m in masks])
    masks = torch.as_tensor(masks)
    if masks.dim() != 3:
        raise InvalidInputError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    if not len(masks):
        return []
    return mask_utils.encode(np.asfortranarray(masks.bool().permute(1, 2, 0).cpu().numpy().astype(np.uint8)))


def encode_instances(instances: Mapping[str, Any], key: str) -> tuple[list[dict], list[int], list]:
    """COCO RLEs, labels and `key` values ("scores" or "iscrowd") of one image's instances: `{"masks": (N, H, W)
    (or a list of masks or RLEs), "labels", key}` or instance post-processing's `{"segmentation": (H, W) id map or
    (N, H, W), "segments_info"}`."""
    if "segments_info" in instances:
        fields = [read_segment(s) for s in instances["segments_info"]]
        labels = [category for _, category in fields]
        field, default = ("score", None) if key == "scores" else ("iscrowd", 0)
        values = [s.get(field, default) for s in instances["segments_info"]]
        masks = torch.as_tensor(instances["segmentation"])
        if masks.dim() == 2:
            ids = torch.tensor([i for i, _ in fields], dtype=torch.long, device=masks.device)
            masks = _as_long(masks)[None] == ids[:, None, None]  # (N, H, W)
    elif "masks" in instances:
        masks, labels = instances["masks"], [int(v) for v in torch.as_tensor(instances["labels"]).reshape(-1).tolist()]
        values = instances.get(key, None if key == "scores" else [0] * len(labels))
        values = None if values is None else torch.as_tensor(values).reshape(-1).tolist()
    else:
        raise InvalidInputError("instances need 'masks' and 'labels', or 'segmentation' and 'segments_info'")
    if values is None or None in values:
        raise InvalidInputError("every prediction needs a score ('scores', or 'score' in segments_info)")
    rles = _rles(masks)
    if not len(rles) == len(labels) == len(values):
        raise InvalidInputError(f"{len(rles)} masks, {len(labels)} labels and {len(values)} {key} differ in number")
    return rles, labels, [float(v) if key == "scores" else int(v) for v in values]


class MaskAPMetric:
    """COCO mask AP (AP@[.5:.95], AP50, AP75, small / medium / large) and AR: pycocotools' `COCOeval(iouType="segm")`
    with `maxDets=[1, 10, max_detections]` on the RLE-encoded masks. As in COCO, a category without ground truth is
    left out of the mean, crowd ground truth absorbs detections, and a target may give COCO's `"areas"` (which the
    size ranges read; default: the mask areas). `None` where COCO reports -1 (no ground truth in that range).
    """

    def __init__(self, id2label: Mapping[int, str] | None = None, max_detections: int = 100):
        self.id2label, self.max_detections = id2label, max_detections
        self.reset()

    def reset(self) -> None:
        # per image: {"height", "width", "gt": [COCO annotation], "dt": [...]}
        self.images: list[dict[str, Any]] = []

    def update(self, pred: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Add one image, as `encode_instances` reads it (the target's masks may overlap)."""
        gt, gt_labels, crowd = encode_instances(target, "iscrowd")
        dt, dt_labels, scores = encode_instances(pred, "scores")
        sizes = {tuple(int(v) for v in rle["size"]) for rle in gt + dt}
        if len(sizes) > 1:
            raise InvalidInputError(f"masks of different sizes in one image: {sorted(sizes)}")
        areas = [float(a) for a in target["areas"]] if target.get("areas") is not None else mask_utils.area(gt)
        if len(areas) != len(gt):
            raise InvalidInputError(f"{len(areas)} areas for {len(gt)} ground-truth masks")
        height, width = sizes.pop() if sizes else (0, 0)
        image = {"height": height, "width": width, "gt": [], "dt": []}
        for key, rles, labels, values in (("gt", gt, gt_labels, crowd), ("dt", dt, dt_labels, scores)):
            for i, (rle, label, value) in enumerate(zip(rles, labels, values)):
                area = float(areas[i] if key == "gt" else mask_utils.area(rle))
                annotation = {"category_id": label, "segmentation": rle, "area": area}  # no bbox: "segm" reads none
                extra = {"iscrowd": value} if key == "gt" else {"iscrowd": 0, "score": value}
                image[key].append(annotation | extra)
        self.images.append(image)

    def all_gather(self, gather_object: Callable[[list], list]) -> None:
        self.images = list(gather_object(self.images))

    def compute(self) -> dict[str, Any]:
        names = [name.format(self.max_detections) for name in _STATS]
        if not any(not a["iscrowd"] for image in self.images for a in image["gt"]):
            warnings.warn("MaskAPMetric: no (non-crowd) ground-truth instances, so AP is undefined", stacklevel=2)
            return dict.fromkeys(names) | {"per_class_ap": {}}
        coco = {"gt": COCO(), "dt": COCO()}
        labels = sorted({a["category_id"] for image in self.images for key in coco for a in image[key]})
        images, annotations = [], {"gt": [], "dt": []}
        for image_id, image in enumerate(self.images, start=1):
            images.append({"id": image_id, "height": image["height"], "width": image["width"]})
            for key, listed in annotations.items():
                # NOTE: annotation ids from 1: COCOeval reads a match with id 0 as no match.
                listed += [a | {"id": len(listed) + 1 + i, "image_id": image_id} for i, a in enumerate(image[key])]
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and summary
            for key in coco:
                # NOTE: built in memory rather than with `COCO.loadRes`, which fails on an empty detection list.
                categories = [{"id": label} for label in labels]
                coco[key].dataset = {"images": images, "annotations": annotations[key], "categories": categories}
                coco[key].createIndex()
            evaluator = COCOeval(coco["gt"], coco["dt"], iouType="segm")
            evaluator.params.maxDets = [1, 10, self.max_detections]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        results: dict[str, Any] = {name: (float(v) if v >= 0 else None) for name, v in zip(names, evaluator.stats)}
        precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, K)
        results["per_class_ap"] = {
            _label(self.id2label, label): float(p[p > -1].mean()) if (p > -1).any() else None
            for label, p in zip(labels, precision.transpose(2, 0, 1))
        }
        return results


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _grid(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(results: Mapping[str, Any]) -> str:
    """One `compute()` result as text: the overall numbers, then a per-class table (`per_class_iou` → column "iou";
    a `{label: {metric: number}}` entry gives its inner keys as columns)."""
    overall = [(k, v) for k, v in results.items() if not isinstance(v, Mapping)]
    columns: dict[str, dict[str, Any]] = {}
    for key, value in results.items():
        for label, entry in value.items() if isinstance(value, Mapping) else ():
            inner = entry if isinstance(entry, Mapping) else {key.removeprefix("per_class_"): entry}
            for metric, v in inner.items():
                columns.setdefault(metric, {})[label] = v
    parts = [_grid(["metric", "value"], overall)] if overall else []
    if columns:
        labels = list(dict.fromkeys(label for col in columns.values() for label in col))
        parts.append(
            _grid(["class", *columns], [[label, *(columns[c].get(label) for c in columns)] for label in labels])
        )
    return "\n\n".join(parts)
