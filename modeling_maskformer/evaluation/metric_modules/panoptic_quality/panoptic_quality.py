"""Panoptic quality (PQ, SQ, RQ) with the rules and numbers of COCO's reference `panopticapi.pq_compute`.

Self-contained (numpy, datasets, evaluate) so that this folder can be pushed to the Hub as a community
metric. Load it offline with `modeling_maskformer.evaluation.load_metric("panoptic_quality")` or
`evaluate.load("<path to this folder>")`.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{kirillov2019panoptic,
  title={Panoptic Segmentation},
  author={Kirillov, Alexander and He, Kaiming and Girshick, Ross and Rother, Carsten and Doll{\\'a}r, Piotr},
  booktitle={CVPR},
  year={2019}
}
"""

_DESCRIPTION = """\
Panoptic quality (Kirillov et al., CVPR 2019): a predicted and a ground-truth segment of the same category
match when their IoU exceeds 0.5; per category PQ = (sum of matched IoUs) / (TP + FP/2 + FN/2), which is
SQ (mean matched IoU) x RQ (an F1 score). Averaged over the categories that occur, overall and for things
and stuff. VOID pixels (id 0) and crowd regions are handled as in COCO's panopticapi.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[dict]`): per image, `{"segmentation": (H, W) int array of segment ids (0 = no segment),
        "segments_info": [{"id": int, "category_id": int}, ...]}`. `label_id` may stand for `category_id`
        (the output of transformers' `post_process_panoptic_segmentation`). Every non-zero id of the map must
        be listed and every listed segment must have pixels.
    references (`List[dict]`): per image, the same with `"iscrowd": 0/1` per segment (optional, default 0).
        Id 0 is VOID: predicted pixels there count for nothing.
    categories (`List[dict]`): `[{"id": int, "isthing": 0/1}, ...]`, as in a COCO panoptic JSON.
Returns:
    `pq`, `sq`, `rq` (`float`): averages over the categories with a TP, FP or FN; `n`: their number.
    `pq_things`, `sq_things`, `rq_things`, `n_things` and `pq_stuff`, `sq_stuff`, `rq_stuff`, `n_stuff`: the
        same over things and over stuff. An average over no category is `None`.
    `per_category` (`dict`): `{category_id: {"pq", "sq", "rq", "tp", "fp", "fn"}}` (0.0 for a category that
        never occurs, as panopticapi reports it).
Examples:
    >>> import numpy as np
    >>> from modeling_maskformer.evaluation import load_metric
    >>> panoptic_quality = load_metric("panoptic_quality")
    >>> reference = {"segmentation": np.array([[1, 1, 2, 2]]), "segments_info": [{"id": 1, "category_id": 0},
    ...                                                                          {"id": 2, "category_id": 1}]}
    >>> prediction = {"segmentation": np.array([[5, 5, 5, 6]]), "segments_info": [{"id": 5, "category_id": 0},
    ...                                                                           {"id": 6, "category_id": 1}]}
    >>> results = panoptic_quality.compute(predictions=[prediction], references=[reference],
    ...                                    categories=[{"id": 0, "isthing": 1}, {"id": 1, "isthing": 0}])
    >>> round(results["pq"], 4), results["per_category"][1]["fn"]
    (0.3333, 1)
"""

_SEGMENT = {"id": datasets.Value("int64"), "category_id": datasets.Value("int64")}
_MAP = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))


def _standard(image: dict, with_crowd: bool) -> dict:
    """One image in the stored form: an (H, W) int64 id map and segments with exactly the schema's keys."""
    segmentation = image["segmentation"]
    segmentation = np.asarray(segmentation.cpu() if hasattr(segmentation, "cpu") else segmentation, dtype=np.int64)
    segments = []
    for segment in image["segments_info"]:
        category = segment.get("category_id", segment.get("label_id"))
        if segment.get("id") is None or category is None:
            raise ValueError(f"every segment needs an 'id' and a 'category_id' (or 'label_id'), got {segment}")
        segments.append({"id": int(segment["id"]), "category_id": int(category)})
        if with_crowd:
            segments[-1]["iscrowd"] = int(segment.get("iscrowd", 0))
    return {"segmentation": segmentation, "segments_info": segments}


def _read_segments(segments_info: list[dict], known: dict[int, bool], what: str) -> tuple[np.ndarray, ...]:
    """Ids, categories and crowd flags of one map's segments, in listed order."""
    ids, categories, crowd = [], [], []
    for segment in segments_info:
        if segment["category_id"] not in known:
            raise ValueError(
                f"{what}: segment {segment['id']} has category {segment['category_id']}, not in `categories`"
            )
        ids.append(segment["id"])
        categories.append(segment["category_id"])
        crowd.append(bool(segment.get("iscrowd")))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what}: duplicate segment ids {sorted(ids)}")
    if 0 in ids:
        raise ValueError(f"{what}: segment id 0 is reserved for VOID")
    return np.array(ids, dtype=np.int64), np.array(categories, dtype=np.int64), np.array(crowd, dtype=bool)


def _positions(segment_map: np.ndarray, ids: np.ndarray, unlisted: int) -> np.ndarray:
    """Each pixel's segment as 1..N in `ids` order; 0 for id 0 (VOID); `unlisted` for any other id."""
    if len(ids) == 0:
        return np.where(segment_map == 0, 0, unlisted)
    order = np.argsort(ids)
    found = np.searchsorted(ids[order], segment_map).clip(max=len(ids) - 1)
    index = np.where(ids[order][found] == segment_map, order[found] + 1, unlisted)
    return np.where(segment_map == 0, 0, index)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PanopticQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"segmentation": _MAP, "segments_info": [_SEGMENT]},
                    "references": {
                        "segmentation": _MAP,
                        "segments_info": [_SEGMENT | {"iscrowd": datasets.Value("int64")}],
                    },
                }
            ),
            reference_urls=["https://github.com/cocodataset/panopticapi", "https://arxiv.org/abs/1801.00868"],
        )

    # NOTE: inputs are normalised before they are stored, so that extra keys (`score`, `was_fused`, `area`)
    # and `label_id` for `category_id` are accepted.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images (see the arguments below)."""
        if predictions is not None:
            predictions = [_standard(image, with_crowd=False) for image in predictions]
        if references is not None:
            references = [_standard(image, with_crowd=True) for image in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image (see the arguments below)."""
        if prediction is not None:
            prediction = _standard(prediction, with_crowd=False)
        if reference is not None:
            reference = _standard(reference, with_crowd=True)
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, categories):
        isthing = {}
        for category in categories:
            if "id" not in category or "isthing" not in category:
                raise ValueError(f"each category needs 'id' and 'isthing', got {category}")
            isthing[int(category["id"])] = bool(category["isthing"])
        stats = {c: np.zeros(4) for c in isthing}  # category -> [iou sum, tp, fp, fn]
        for image, (prediction, reference) in enumerate(zip(predictions, references)):
            self._add_image(stats, image, prediction, reference, isthing)
        return _summarise(stats, isthing)

    @staticmethod
    def _add_image(stats, image: int, prediction: dict, reference: dict, isthing: dict[int, bool]) -> None:
        pred_map = np.asarray(prediction["segmentation"], dtype=np.int64)
        gt_map = np.asarray(reference["segmentation"], dtype=np.int64)
        if pred_map.shape != gt_map.shape:
            raise ValueError(
                f"image {image}: prediction {pred_map.shape} and reference {gt_map.shape} differ in shape"
            )
        pred_ids, pred_cat, _ = _read_segments(prediction["segments_info"], isthing, f"image {image} prediction")
        gt_ids, gt_cat, gt_crowd = _read_segments(reference["segments_info"], isthing, f"image {image} reference")
        unknown = np.setdiff1d(np.unique(pred_map), np.append(pred_ids, 0))
        if unknown.size:
            raise ValueError(f"image {image} prediction: segment ids {unknown.tolist()} in the map are not listed")
        p, g = len(pred_ids), len(gt_ids)
        pred_index = _positions(pred_map, pred_ids, unlisted=0)
        # NOTE: a ground-truth id missing from segments_info is not VOID (panopticapi): it gets its own row g + 1.
        gt_index = _positions(gt_map, gt_ids, unlisted=g + 1)
        counts = np.bincount((gt_index * (p + 1) + pred_index).ravel(), minlength=(g + 2) * (p + 1))
        counts = counts.reshape(g + 2, p + 1)  # rows: VOID, segments, unlisted; columns: none, segments
        pred_area = counts[:, 1:].sum(0)  # (P,)
        absent = pred_ids[pred_area == 0]
        if absent.size:
            raise ValueError(f"image {image} prediction: listed segments {absent.tolist()} have no pixel in the map")
        gt_area = counts[1 : g + 1].sum(1)  # (G,)
        overlap = counts[1 : g + 1, 1:]  # (G, P)
        pred_on_void = counts[0, 1:]  # (P,)
        union = gt_area[:, None] + pred_area[None, :] - overlap - pred_on_void[None, :]
        same = gt_cat[:, None] == pred_cat[None, :]
        matched = same & ~gt_crowd[:, None] & (2 * overlap > union)  # IoU > 0.5, exactly
        for gi, pi in zip(*np.nonzero(matched)):
            stats[int(gt_cat[gi])] += [overlap[gi, pi] / union[gi, pi], 1, 0, 0]
        for gi in np.nonzero(~matched.any(1) & ~gt_crowd)[0]:
            stats[int(gt_cat[gi])][3] += 1
        crowd_of = {int(gt_cat[gi]): gi for gi in np.nonzero(gt_crowd)[0]}  # the last crowd segment per category
        for pi in np.nonzero(~matched.any(0))[0]:
            ignored = pred_on_void[pi]
            if int(pred_cat[pi]) in crowd_of:
                ignored += overlap[crowd_of[int(pred_cat[pi])], pi]
            if 2 * ignored <= pred_area[pi]:  # unmatched and not mostly on VOID / crowd of its category
                stats[int(pred_cat[pi])][2] += 1


def _summarise(stats: dict[int, np.ndarray], isthing: dict[int, bool]) -> dict:
    per_category, groups = {}, {"": [], "_things": [], "_stuff": []}
    for category, (iou, tp, fp, fn) in stats.items():
        entry = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": int(tp), "fp": int(fp), "fn": int(fn)}
        if tp + fp + fn > 0:
            denominator = tp + 0.5 * fp + 0.5 * fn
            entry.update(pq=float(iou / denominator), sq=float(iou / tp) if tp else 0.0, rq=float(tp / denominator))
            for suffix in ("", "_things" if isthing[category] else "_stuff"):
                groups[suffix].append(entry)
        per_category[category] = entry
    results = {}
    for suffix, entries in groups.items():
        for key in ("pq", "sq", "rq"):
            results[key + suffix] = float(np.mean([e[key] for e in entries])) if entries else None
        results["n" + suffix] = len(entries)
    results["per_category"] = per_category
    return results
