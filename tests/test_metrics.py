"""Metrics against hand-computed answers, against COCO's panopticapi, and against torchmetrics where both follow
the same definition."""

import json
import math

import numpy as np
import pytest
import torch
from panoptic_reference import panopticapi_pq, random_scene

from modeling_maskformer.evaluation import (
    MaskAPMetric,
    PanopticQualityMetric,
    SemanticSegmentationMetric,
    format_table,
)

# ----------------------------------------------------------------------------------------------------------
# Semantic segmentation
# ----------------------------------------------------------------------------------------------------------

TARGET = torch.tensor(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 2, 2],
        [2, 2, 2, 2],
    ]
)
PRED = torch.tensor(
    [
        [0, 0, 0, 1],
        [0, 0, 1, 1],
        [2, 2, 1, 2],
        [2, 2, 2, 2],
    ]
)


def test_miou_by_hand():
    # class 0: 4 target px, all predicted 0; plus (0,2) predicted 0  -> I 4, U 5, IoU 4/5, acc 4/4
    # class 1: 4 target px, 3 predicted 1; plus (2,2) predicted 1    -> I 3, U 5, IoU 3/5, acc 3/4
    # class 2: 8 target px, 7 predicted 2; no extra                   -> I 7, U 8, IoU 7/8, acc 7/8
    metric = SemanticSegmentationMetric(num_classes=3, id2label={0: "a", 1: "b", 2: "c"})
    metric.update(PRED, TARGET)
    r = metric.compute()
    assert r["per_class_iou"] == pytest.approx({"a": 4 / 5, "b": 3 / 5, "c": 7 / 8})
    assert r["mean_iou"] == pytest.approx((4 / 5 + 3 / 5 + 7 / 8) / 3)
    assert r["per_class_accuracy"] == pytest.approx({"a": 1.0, "b": 3 / 4, "c": 7 / 8})
    assert r["mean_accuracy"] == pytest.approx((1 + 3 / 4 + 7 / 8) / 3)
    assert r["pixel_accuracy"] == pytest.approx(14 / 16)


def test_ignore_index_pixels_are_excluded():
    # last row ignored: predictions there (all 0, all wrong) must not count.
    # class 0: I 4, U 5; class 1: I 3, U 5; class 2: 4 target px, 3 right, no extra -> I 3, U 4
    target = TARGET.clone()
    target[3] = 255
    pred = PRED.clone()
    pred[3] = 0
    metric = SemanticSegmentationMetric(num_classes=3, ignore_index=255)
    metric.update(pred.numpy(), target.numpy())  # ndarrays accepted too
    r = metric.compute()
    assert r["per_class_iou"] == pytest.approx({"0": 4 / 5, "1": 3 / 5, "2": 3 / 4})
    assert r["pixel_accuracy"] == pytest.approx(10 / 12)
    assert int(metric.confusion_matrix.sum()) == 12


def test_class_absent_from_both_is_left_out_of_the_mean():
    metric = SemanticSegmentationMetric(num_classes=4)  # class 3 never appears
    metric.update(PRED, TARGET)
    r = metric.compute()
    assert r["per_class_iou"]["3"] is None and r["per_class_accuracy"]["3"] is None
    assert r["mean_iou"] == pytest.approx((4 / 5 + 3 / 5 + 7 / 8) / 3)  # not /4, and no 0 or 1 for class 3
    assert r["mean_accuracy"] == pytest.approx((1 + 3 / 4 + 7 / 8) / 3)


def test_class_only_in_prediction_scores_zero_and_counts():
    pred = PRED.clone()
    pred[3, 3] = 3  # target there is 2
    # class 2: 8 target px, 6 right, no extra -> I 6, U 8; class 3: I 0, U 1 -> IoU 0
    metric = SemanticSegmentationMetric(num_classes=4)
    metric.update(pred, TARGET)
    r = metric.compute()
    assert r["per_class_iou"]["3"] == 0.0
    assert r["per_class_accuracy"]["3"] is None  # no target pixels: recall undefined
    assert r["mean_iou"] == pytest.approx((4 / 5 + 3 / 5 + 6 / 8 + 0) / 4)


def test_all_ignore_target():
    metric = SemanticSegmentationMetric(num_classes=3)
    metric.update(PRED, torch.full((4, 4), 255))
    r = metric.compute()
    assert r["mean_iou"] is None and r["mean_accuracy"] is None and r["pixel_accuracy"] is None
    assert all(v is None for v in r["per_class_iou"].values())
    metric.update(PRED, TARGET)  # later images are unaffected
    assert metric.compute()["mean_iou"] == pytest.approx((4 / 5 + 3 / 5 + 7 / 8) / 3)


def test_bad_labels_raise():
    metric = SemanticSegmentationMetric(num_classes=3)
    with pytest.raises(ValueError, match="pred holds label 3"):
        metric.update(torch.full((4, 4), 3), TARGET)
    with pytest.raises(ValueError, match="target holds label 7"):
        metric.update(PRED, torch.full((4, 4), 7))
    with pytest.raises(ValueError, match="shapes differ"):
        metric.update(PRED[:2], TARGET)
    with pytest.raises(ValueError, match="ignore_index"):
        SemanticSegmentationMetric(num_classes=3, ignore_index=0)


def test_semantic_matches_torchmetrics_and_merges():
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_jaccard_index

    g = torch.Generator().manual_seed(0)
    k = 6  # class 5 never drawn: absent from both
    target = torch.randint(0, 5, (3, 32, 32), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.6,
        target.clamp(max=4),
        torch.randint(0, 5, target.shape, generator=g),
    )
    whole = SemanticSegmentationMetric(num_classes=k)
    whole.update(pred, target)  # a batch at once
    r = whole.compute()
    ref_miou = multiclass_jaccard_index(pred, target, num_classes=k, average="macro", ignore_index=255)
    ref_iou = multiclass_jaccard_index(pred, target, num_classes=k, average="none", ignore_index=255)
    ref_acc = multiclass_accuracy(pred, target, num_classes=k, average="micro", ignore_index=255)
    assert r["mean_iou"] == pytest.approx(float(ref_miou), abs=1e-6)
    assert [r["per_class_iou"][str(c)] for c in range(5)] == pytest.approx(ref_iou[:5].tolist(), abs=1e-6)
    assert r["pixel_accuracy"] == pytest.approx(float(ref_acc), abs=1e-6)

    # per-image accumulation and the sum of two "processes" (all_reduce, as the evaluator's) give the same matrix
    a, b = SemanticSegmentationMetric(num_classes=k), SemanticSegmentationMetric(num_classes=k)
    a.update(pred[0], target[0])
    b.update(pred[1], target[1])
    b.update(pred[2], target[2])
    a.all_reduce(lambda t: t + b.confusion_matrix)  # the hook accelerate's reduce plugs into
    assert torch.equal(a.confusion_matrix, whole.confusion_matrix)


# ----------------------------------------------------------------------------------------------------------
# Panoptic quality. Things: category 1 (and 3); stuff: category 2 (and 4). Id 0 in a map = VOID / unlabelled.
# ----------------------------------------------------------------------------------------------------------

GT_INFO = [{"id": 1, "category_id": 1}, {"id": 9, "category_id": 2}]
GT_MAP = torch.tensor(
    [
        [1, 1, 1, 1],
        [9, 9, 9, 9],
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
)


def _pq(pred_map, pred_info, gt_map=GT_MAP, gt_info=GT_INFO, things=(1,), stuff=(2,)):
    metric = PanopticQualityMetric(thing_ids=things, stuff_ids=stuff)
    metric.update(torch.as_tensor(pred_map), pred_info, torch.as_tensor(gt_map), gt_info)
    return metric.compute()


def test_pq_perfect_match_with_other_ids_and_label_id_format():
    pred = torch.where(GT_MAP == 1, 7, 5)
    r = _pq(pred, [{"id": 7, "label_id": 1, "score": 0.9}, {"id": 5, "label_id": 2, "score": 0.8}])
    assert (r["pq"], r["sq"], r["rq"], r["n"]) == (1.0, 1.0, 1.0, 2)
    assert r["per_class"]["1"] == {
        "pq": 1.0,
        "sq": 1.0,
        "rq": 1.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
        "isthing": True,
    }


def test_pq_iou_exactly_half_is_not_a_match():
    pred = [
        [1, 1, 9, 9],  # thing: I 2, U 4 + 2 - 2 = 4 -> IoU 0.5 -> FN + FP
        [9, 9, 9, 9],  # stuff: I 12, U 12 + 14 - 12 = 14 -> IoU 6/7
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    r = _pq(pred, GT_INFO)
    assert r["per_class"]["1"] == {
        "pq": 0.0,
        "sq": 0.0,
        "rq": 0.0,
        "tp": 0,
        "fp": 1,
        "fn": 1,
        "isthing": True,
    }
    assert r["pq_stuff"] == pytest.approx(6 / 7)
    assert r["pq"] == pytest.approx((0 + 6 / 7) / 2)


def test_pq_unlabelled_prediction_pixels_still_count():
    # Same thing as above with the rest left unlabelled: panopticapi keeps the GT pixels the prediction
    # leaves VOID in the union (IoU 2/4, no match); torchmetrics drops them and would report PQ 1 here.
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[0, :2] = 1
    r = _pq(pred, [{"id": 1, "category_id": 1}])
    assert r["per_class"]["1"]["tp"] == 0 and r["per_class"]["1"]["fn"] == 1 and r["per_class"]["1"]["fp"] == 1
    assert r["per_class"]["2"]["fn"] == 1
    assert r["pq"] == 0.0


def test_pq_iou_two_thirds():
    pred = [
        [1, 1, 1, 1],  # thing: 6 px covering its 4 GT px -> I 4, U 6 -> IoU 2/3
        [1, 1, 9, 9],  # stuff: 10 px inside its 12 GT px -> I 10, U 12 -> IoU 5/6
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    r = _pq(pred, GT_INFO)
    assert r["sq_things"] == pytest.approx(2 / 3) and r["rq_things"] == 1.0 and r["pq_things"] == pytest.approx(2 / 3)
    assert r["pq_stuff"] == pytest.approx(5 / 6)
    assert r["pq"] == pytest.approx((2 / 3 + 5 / 6) / 2)


def test_pq_counts_fp_and_fn():
    gt = [
        [1, 1, 2, 2, 3, 3],  # three things of category 1 (ids 1, 2, 3), stuff 9 below
        [1, 1, 2, 2, 3, 3],
        [9, 9, 9, 9, 9, 9],
        [9, 9, 9, 9, 9, 9],
    ]
    gt_info = [{"id": i, "category_id": 1} for i in (1, 2, 3)] + [{"id": 9, "category_id": 2}]
    pred = [
        [5, 5, 0, 0, 6, 0],  # 5 = GT 1 exactly (TP, IoU 1); GT 2 unlabelled (FN)
        [5, 5, 0, 0, 6, 0],  # 6 covers half of GT 3: I 2, U 4 -> IoU 0.5 (FP, and GT 3 is FN)
        [9, 9, 9, 9, 7, 7],  # 7 is a thing on stuff (FP)
        [9, 9, 9, 9, 7, 7],  # stuff: I 8, U 12 -> IoU 2/3 (TP)
    ]
    pred_info = [
        {"id": 5, "label_id": 1},
        {"id": 6, "label_id": 1},
        {"id": 7, "label_id": 1},
        {"id": 9, "label_id": 2},
    ]
    r = _pq(pred, pred_info, gt, gt_info)
    things = r["per_class"]["1"]
    assert (things["tp"], things["fp"], things["fn"]) == (1, 2, 2)
    assert things["rq"] == pytest.approx(1 / (1 + 2 / 2 + 2 / 2))  # 1/3
    assert things["sq"] == 1.0
    assert r["pq_stuff"] == pytest.approx(2 / 3) and r["rq_stuff"] == 1.0
    assert (r["pq"], r["sq"], r["rq"]) == pytest.approx(((1 / 3 + 2 / 3) / 2, (1 + 2 / 3) / 2, (1 / 3 + 1) / 2))
    assert (r["n_things"], r["n_stuff"]) == (1, 1)


def test_pq_things_stuff_split_and_absent_classes():
    # categories 3 (thing) and 4 (stuff) appear nowhere: left out of every average, reported as None
    pred = [
        [1, 1, 1, 1],  # as in test_pq_iou_two_thirds: thing IoU 2/3, stuff IoU 5/6
        [1, 1, 9, 9],
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    r = _pq(pred, GT_INFO, things=(1, 3), stuff=(2, 4))
    assert (r["n"], r["n_things"], r["n_stuff"]) == (2, 1, 1)
    assert r["per_class"]["3"]["pq"] is None and r["per_class"]["4"]["pq"] is None
    assert r["pq_things"] == pytest.approx(2 / 3) and r["pq_stuff"] == pytest.approx(5 / 6)


def test_pq_void_ground_truth_is_not_penalised():
    gt = [
        [1, 1, 1, 1],  # thing
        [0, 0, 0, 0],  # VOID
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    pred = [
        [1, 1, 1, 1],  # thing covering its GT and the VOID row: U = 8 + 4 - 4 - 4 (on VOID) = 4 -> IoU 1
        [1, 1, 1, 1],
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    r = _pq(pred, [{"id": 1, "label_id": 1}, {"id": 9, "label_id": 2}], gt)
    assert (r["pq"], r["n"]) == (1.0, 2)

    pred = [
        [1, 1, 1, 1],  # exact thing (TP)
        [2, 2, 2, 3],  # 2: all on VOID -> ignored; 3: 1 of 2 px on VOID (ratio 0.5, not > 0.5) -> FP
        [9, 9, 9, 3],  # stuff: I 7, U 8 -> IoU 7/8
        [9, 9, 9, 9],
    ]
    info = [
        {"id": 1, "label_id": 1},
        {"id": 2, "label_id": 1},
        {"id": 3, "label_id": 1},
        {"id": 9, "label_id": 2},
    ]
    r = _pq(pred, info, gt)
    assert (r["per_class"]["1"]["tp"], r["per_class"]["1"]["fp"]) == (1, 1)
    assert r["pq_things"] == pytest.approx(1 / (1 + 0.5))
    assert r["pq_stuff"] == pytest.approx(7 / 8)


def test_pq_crowd_regions():
    gt = [
        [1, 1, 1, 1],  # thing 1, category 1
        [2, 2, 2, 2],  # crowd region of category 1
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    gt_info = [
        {"id": 1, "category_id": 1},
        {"id": 2, "category_id": 1, "iscrowd": 1},
        {"id": 9, "category_id": 2},
    ]
    pred = [
        [1, 1, 1, 1],
        [4, 4, 5, 5],  # 4: category 1 on its crowd -> neither TP nor FP; 5: category 3 on it -> FP
        [9, 9, 9, 9],
        [9, 9, 9, 9],
    ]
    info = [
        {"id": 1, "label_id": 1},
        {"id": 4, "label_id": 1},
        {"id": 5, "label_id": 3},
        {"id": 9, "label_id": 2},
    ]
    r = _pq(pred, info, gt, gt_info, things=(1, 3))
    assert r["per_class"]["1"] == {
        "pq": 1.0,
        "sq": 1.0,
        "rq": 1.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
        "isthing": True,
    }
    assert (r["per_class"]["3"]["fp"], r["per_class"]["3"]["pq"]) == (1, 0.0)


def test_pq_empty_prediction():
    # transformers' panoptic post-processing returns a map of -1 and no segments when nothing is kept
    r = _pq(torch.full((4, 4), -1.0), [])
    assert (r["pq"], r["n"]) == (0.0, 2)
    assert r["per_class"]["1"]["fn"] == 1 and r["per_class"]["2"]["fn"] == 1


def test_pq_bad_inputs_raise():
    with pytest.raises(ValueError, match="neither thing_ids nor stuff_ids"):
        _pq(GT_MAP, [{"id": 1, "label_id": 7}, {"id": 9, "label_id": 2}])
    with pytest.raises(ValueError, match="both thing and stuff"):
        PanopticQualityMetric(thing_ids=[1], stuff_ids=[1])


def _random_panoptic(g: torch.Generator, h: int = 24, w: int = 24):
    """A GT and a perturbed prediction without VOID: stuff 3 | 4 split, things of categories 1 / 2 on top."""

    def paint(split, boxes):
        ids = torch.where(torch.arange(w)[None, :].expand(h, w) < split, 1003, 1004)
        info = {1003: 3, 1004: 4}
        for i, (y, x, bh, bw, cat) in enumerate(boxes):
            ids[y : y + bh, x : x + bw] = i + 1
            info[i + 1] = cat
        info = {k: v for k, v in info.items() if (ids == k).any()}
        return ids, info

    def rnd(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    boxes = [(rnd(0, 18), rnd(0, 18), rnd(3, 7), rnd(3, 7), rnd(1, 3)) for _ in range(4)]
    pred_boxes = [
        (
            max(0, y + rnd(-2, 3)),
            max(0, x + rnd(-2, 3)),
            bh + rnd(-1, 2),
            bw + rnd(-1, 2),
            cat if rnd(0, 5) else 3 - cat,
        )
        for y, x, bh, bw, cat in boxes
        if rnd(0, 5)
    ]
    return paint(rnd(8, 16), pred_boxes), paint(12, boxes)


def test_pq_matches_torchmetrics_without_void():
    from torchmetrics.detection import PanopticQuality

    g = torch.Generator().manual_seed(0)
    ours = PanopticQualityMetric(thing_ids=[1, 2], stuff_ids=[3, 4])
    ref = PanopticQuality(things={1, 2}, stuffs={3, 4}, return_per_class=True, return_sq_and_rq=True)
    for _ in range(8):
        (pred, pred_info), (gt, gt_info) = _random_panoptic(g)
        ours.update(
            pred,
            [{"id": k, "label_id": c} for k, c in pred_info.items()],
            gt,
            [{"id": k, "category_id": c} for k, c in gt_info.items()],
        )

        def to_tm(ids, info):
            cat = torch.zeros_like(ids)
            for k, c in info.items():
                cat[ids == k] = c
            return torch.stack([cat, ids], dim=-1)[None]  # (1, H, W, 2): (category, instance)

        ref.update(to_tm(pred, pred_info), to_tm(gt, gt_info))
    r = ours.compute()
    ref_per_class = ref.compute()  # (4, 3): pq, sq, rq in things-then-stuff order
    assert torch.equal(ours.tp, ref.true_positives.long()) and torch.equal(ours.fp, ref.false_positives.long())
    assert torch.equal(ours.fn, ref.false_negatives.long())
    assert 0 < r["pq"] < 1 and ours.fp.sum() > 0 and ours.fn.sum() > 0  # a case that exercises everything
    for i, cat in enumerate([1, 2, 3, 4]):
        got = r["per_class"][str(cat)]
        # torchmetrics computes IoU in float32
        assert [got["pq"], got["sq"], got["rq"]] == pytest.approx(ref_per_class[i].tolist(), abs=1e-6)

    # shards summed by all_reduce (as the evaluator's) = one pass
    a, b = PanopticQualityMetric([1, 2], [3, 4]), PanopticQualityMetric([1, 2], [3, 4])
    g = torch.Generator().manual_seed(0)
    for i in range(8):
        (pred, pred_info), (gt, gt_info) = _random_panoptic(g)
        (a if i % 2 else b).update(
            pred,
            [{"id": k, "label_id": c} for k, c in pred_info.items()],
            gt,
            [{"id": k, "category_id": c} for k, c in gt_info.items()],
        )
    other = iter([b.tp, b.fp, b.fn, b.iou_sum])  # all_reduce's order
    a.all_reduce(lambda t: t + next(other))
    assert all(torch.equal(getattr(a, k), getattr(ours, k)) for k in ("tp", "fp", "fn"))
    assert torch.allclose(a.iou_sum, ours.iou_sum, rtol=1e-12)  # only the summation order differs


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("particular", [False, True])
def test_pq_gives_panopticapi_numbers(tmp_path, seed, particular):
    """COCO's reference `pq_compute` on random scenes with VOID and crowd regions; `particular`: also unlisted and
    absent ground-truth ids and two crowd regions of one category, where panopticapi's rules are particular."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, panopticapi_only=particular) for _ in range(10)]
    expected = panopticapi_pq(scenes, tmp_path)
    metric = PanopticQualityMetric(thing_ids=[0, 1, 2], stuff_ids=[3, 4, 5])
    for gt_map, gt_segments, pred_map, pred_segments in scenes:
        metric.update(torch.from_numpy(pred_map), pred_segments, torch.from_numpy(gt_map), gt_segments)
    got = metric.compute()
    assert any(s["iscrowd"] for scene in scenes for s in scene[1]) and 0 < got["pq"] < 1
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        assert [got[k + suffix] for k in ("pq", "sq", "rq")] == pytest.approx(
            [expected[group][k] for k in ("pq", "sq", "rq")], abs=1e-12
        )
        assert got["n" + suffix] == expected[group]["n"]


# ----------------------------------------------------------------------------------------------------------
# Mask AP
# ----------------------------------------------------------------------------------------------------------


def _box_mask(y0, y1, x0, x1, size=32):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _gt_image():
    masks = torch.stack([_box_mask(2, 12, 2, 12), _box_mask(16, 30, 16, 30), _box_mask(2, 8, 20, 30)])
    return {"masks": masks, "labels": torch.tensor([0, 1, 1])}


def _ap(preds, targets, **kwargs):
    metric = MaskAPMetric(**kwargs)
    for p, t in zip(preds, targets):
        metric.update(p, t)
    return metric.compute()


def test_ap_perfect_predictions():
    gt = _gt_image()
    pred = {"masks": gt["masks"], "labels": gt["labels"], "scores": torch.tensor([0.9, 0.8, 0.7])}
    r = _ap([pred, pred], [gt, gt])
    assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)
    assert r["per_class_ap"] == pytest.approx({"0": 1.0, "1": 1.0})


def test_ap_empty_and_wrong_class_predictions_score_zero():
    gt = _gt_image()
    empty = {
        "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
        "labels": torch.zeros(0),
        "scores": torch.zeros(0),
    }
    assert _ap([empty], [gt])["ap"] == 0.0
    wrong = {"masks": gt["masks"][:1], "labels": torch.tensor([5]), "scores": torch.tensor([0.9])}
    r = _ap([wrong], [{"masks": gt["masks"][:1], "labels": torch.tensor([0])}])
    assert r["ap"] == 0.0 and r["per_class_ap"]["0"] == 0.0
    assert r["per_class_ap"]["5"] is None  # no ground truth of class 5: undefined, as in COCO


def test_ap50_and_ap75_differ_at_iou_0_64():
    # GT 10x10 = 100 px, prediction an 8x8 square inside it: IoU 64/100 = 0.64, matched at thresholds
    # 0.50, 0.55, 0.60 of the 10 -> AP 3/10; 100 px is "small" (< 32^2)
    gt = {"masks": _box_mask(2, 12, 2, 12)[None], "labels": torch.tensor([0])}
    pred = {
        "masks": _box_mask(3, 11, 3, 11)[None],
        "labels": torch.tensor([0]),
        "scores": torch.tensor([0.9]),
    }
    r = _ap([pred], [gt])
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == 0.0
    assert r["ap"] == pytest.approx(0.3) and r["ap_small"] == pytest.approx(0.3)
    assert r["ap_medium"] is None and r["ap_large"] is None


def test_ap_without_ground_truth_is_undefined():
    pred = {
        "masks": _box_mask(2, 12, 2, 12)[None],
        "labels": torch.tensor([0]),
        "scores": torch.tensor([0.9]),
    }
    no_gt = {"masks": torch.zeros(0, 32, 32, dtype=torch.bool), "labels": torch.zeros(0)}
    with pytest.warns(UserWarning, match="no \\(non-crowd\\) ground-truth"):
        r = _ap([pred], [no_gt])
    assert all(r[k] is None for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"))
    with pytest.warns(UserWarning):
        assert MaskAPMetric().compute()["ap"] is None


def test_ap_accepts_post_processing_formats():
    gt = _gt_image()
    scores = [0.875, 0.5, 0.75]  # exact in float32, so no format changes the ranking
    # id map as transformers' instance post-processing returns it: float, -1 where no instance, ids from 0
    id_map = torch.full((32, 32), -1.0)
    for i, m in enumerate(gt["masks"]):
        id_map[m] = float(i)
    info = [{"id": i, "label_id": int(lab), "score": s} for i, (lab, s) in enumerate(zip(gt["labels"], scores))]
    from_map = {"segmentation": id_map, "segments_info": info}
    from_binary = {"segmentation": gt["masks"].float(), "segments_info": info}
    from_masks = {"masks": gt["masks"], "labels": gt["labels"], "scores": torch.tensor(scores)}
    target_map = {
        "segmentation": id_map + 1,
        "segments_info": [{"id": i + 1, "category_id": int(c)} for i, c in enumerate(gt["labels"])],
    }
    shifted = {
        "masks": torch.roll(gt["masks"], shifts=2, dims=2),
        "labels": gt["labels"],
        "scores": torch.tensor([0.625, 0.25, 0.375]),
    }
    r = _ap([from_map, shifted], [target_map, gt])
    assert _ap([from_binary, shifted], [gt, gt]) == r
    assert _ap([from_masks, shifted], [gt, target_map]) == r
    assert 0 < r["ap"] < 1


def test_ap_matches_torchmetrics_and_merges():
    from torchmetrics.detection import MeanAveragePrecision

    g = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for _ in range(3):
        gt = _gt_image()
        shift = torch.randint(0, 4, (3,), generator=g).tolist()
        masks = torch.stack([torch.roll(m, s, dims=1) for m, s in zip(gt["masks"], shift)])
        preds.append({"masks": masks, "labels": torch.tensor([0, 1, 0]), "scores": torch.rand(3, generator=g)})
        targets.append(gt)
    r = _ap(preds, targets)
    ref = MeanAveragePrecision(iou_type="segm", backend="pycocotools")
    ref.update(preds, targets)
    ref = ref.compute()
    assert [r[k] for k in ("ap", "ap50", "ap75", "ap_small")] == pytest.approx(
        [float(ref[k]) for k in ("map", "map_50", "map_75", "map_small")], abs=1e-6
    )
    a, b = MaskAPMetric(), MaskAPMetric()
    a.update(preds[0], targets[0])
    for p, t in zip(preds[1:], targets[1:]):
        b.update(p, t)
    a.all_gather(lambda images: images + b.images)  # the hook accelerate's gather_object plugs into
    assert a.compute() == r


def test_ap_crowd_ground_truth_absorbs_detections():
    gt = {
        "masks": torch.stack([_box_mask(2, 12, 2, 12), _box_mask(16, 30, 16, 30)]),
        "labels": torch.tensor([0, 0]),
        "iscrowd": torch.tensor([0, 1]),
    }
    pred = {"masks": gt["masks"], "labels": torch.tensor([0, 0]), "scores": torch.tensor([0.5, 0.9])}
    assert _ap([pred], [gt])["ap"] == pytest.approx(1.0)  # the higher-scored detection on the crowd is no FP


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def test_results_are_json_and_render_as_tables():
    sem = SemanticSegmentationMetric(num_classes=4, id2label={0: "sky", 1: "road", 2: "car", 3: "tree"})
    sem.update(PRED, TARGET)
    pq = PanopticQualityMetric(thing_ids=[1], stuff_ids=[2, 4], id2label={1: "car", 2: "sky", 4: "road"})
    pq.update(GT_MAP, GT_INFO, GT_MAP, GT_INFO)
    gt = _gt_image()
    ap = _ap(
        [{"masks": gt["masks"], "labels": gt["labels"], "scores": torch.ones(3)}],
        [gt],
        id2label={0: "cat", 1: "dog"},
    )
    for results in (sem.compute(), pq.compute(), ap):
        text = json.dumps(results, allow_nan=False)  # raises on NaN
        assert json.loads(text) == results
        table = format_table(results)
        assert isinstance(table, str) and "class" in table
    table = format_table(sem.compute())
    assert "mean_iou" in table and "tree" in table and "iou" in table and "accuracy" in table
    tree_row = next(line for line in table.splitlines() if line.startswith("tree"))
    assert tree_row.split()[1:] == ["-", "-"]  # absent class shown as undefined
    assert "pq_things" in format_table(pq.compute()) and "road" in format_table(pq.compute())
    assert math.isclose(sem.compute()["mean_iou"], (4 / 5 + 3 / 5 + 7 / 8) / 3)


def test_semantic_metric_on_a_full_size_batch():
    # a 512x512, 150-class batch of 4 with ignored pixels (speed is not asserted here: timed tests flake under load)
    metric = SemanticSegmentationMetric(num_classes=150)
    pred = torch.randint(0, 150, (4, 512, 512))
    target = torch.from_numpy(np.where(np.random.default_rng(0).random((4, 512, 512)) < 0.1, 255, pred.numpy()))
    metric.update(pred, target)
    assert metric.compute()["pixel_accuracy"] == 1.0
