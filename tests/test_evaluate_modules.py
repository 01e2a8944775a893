"""The `evaluate` metric modules shipped in the package (`load_metric`): offline loading, the canonical
`mean_iou`'s documented algorithm and card example, panopticapi's `pq_compute`, pycocotools' documented
file-based path, and README cards in the format of `evaluate` community metrics."""

from __future__ import annotations

import contextlib
import doctest
import io
import re

import evaluate
import numpy as np
import pytest
import torch
import yaml
from panoptic_reference import CATEGORIES, panopticapi_pq, random_scene

from modeling_maskformer.evaluation import METRIC_NAMES, load_metric, metric_module_path


@pytest.fixture(scope="module")
def modules():
    return {name: load_metric(name, keep_in_memory=True) for name in METRIC_NAMES}


def test_load_metric_gives_evaluation_modules_offline(modules, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, module in modules.items():
        assert isinstance(module, evaluate.EvaluationModule) and module.name == name
    with pytest.raises(ValueError, match="unknown metric 'miou'.*mean_iou"):
        load_metric("miou")


def test_every_module_file_is_package_data():
    """pyproject ships `metric_modules/*/*` of modeling_maskformer.evaluation: no deeper files, no stray ones."""
    root = metric_module_path("mean_iou").parent
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert all(len(p.parts) == 2 for p in files), files
    for name in METRIC_NAMES:
        assert {p.name for p in files if p.parts[0] == name} == {
            f"{name}.py",
            "README.md",
            "app.py",
            "requirements.txt",
        }


# ----------------------------------------------------------------------------------------------------------
# mean_iou
# ----------------------------------------------------------------------------------------------------------

# The canonical `mean_iou` card's example and the results it documents.
CARD_PREDICTIONS = [
    np.array([[1, 2], [3, 4], [5, 255]]),
    np.array([[2, 7], [9, 2], [3, 6]]),
    np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]]),
]
CARD_REFERENCES = [
    np.array([[0, 3], [5, 4], [6, 255]]),
    np.array([[1, 7], [9, 2], [3, 6]]),
    np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]]),
]


def test_mean_iou_reproduces_the_canonical_card_example(modules):
    r = modules["mean_iou"].compute(
        predictions=CARD_PREDICTIONS,
        references=CARD_REFERENCES,
        num_labels=10,
        ignore_index=255,
        reduce_labels=False,
    )
    assert r["mean_iou"] == pytest.approx(0.47750000000000004, abs=1e-15)
    assert r["mean_accuracy"] == pytest.approx(0.5916666666666666, abs=1e-15)
    assert r["overall_accuracy"] == pytest.approx(0.5263157894736842, abs=1e-15)
    np.testing.assert_allclose(r["per_category_iou"], [0.0, 0.0, 0.375, 0.4, 0.5, 0.0, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(
        r["per_category_accuracy"], [0.0, 0.0, 0.75, 2 / 3, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0], rtol=1e-8
    )


def canonical_mean_iou(
    predictions, references, num_labels, ignore_index, nan_to_num=None, label_map=None, reduce_labels=False
):
    """The canonical metric's documented algorithm (after mmsegmentation's `intersect_and_union`): per image,
    relabel, reduce, drop ignored pixels, then class histograms with `np.histogram(bins=K, range=(0, K-1))`
    summed over images in float64; IoU = I / U, accuracy = I / area, NaN-means, optional nan_to_num."""
    totals = np.zeros((4, num_labels))
    for prediction, label in zip(predictions, references):
        prediction, label = np.array(prediction), np.array(label)
        if label_map is not None:
            original = label.copy()
            for old_id, new_id in label_map.items():
                label[original == old_id] = new_id
        if reduce_labels:
            label[label == 0] = 255
            label = label - 1
            label[label == 254] = 255
        keep = label != ignore_index
        prediction, label = prediction[keep], label[keep]
        hist = [
            np.histogram(x, bins=num_labels, range=(0, num_labels - 1))[0]
            for x in (prediction[prediction == label], prediction, label)
        ]
        totals += [hist[0], hist[1] + hist[2] - hist[0], hist[1], hist[2]]
    intersect, union, _, area_label = totals
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, accuracy = intersect / union, intersect / area_label
        results = {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(accuracy),
            "overall_accuracy": intersect.sum() / area_label.sum(),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
    if nan_to_num is not None:
        results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
    return results


@pytest.mark.parametrize(
    "options",
    [
        {"num_labels": 10, "ignore_index": 255},
        {"num_labels": 10, "ignore_index": 255, "reduce_labels": True},
        {"num_labels": 12, "ignore_index": 255, "nan_to_num": -1},  # classes 10, 11 never occur
        {"num_labels": 10, "ignore_index": 0, "label_map": {3: 5, 7: 0}},
        {"num_labels": 10, "ignore_index": 255, "label_map": {9: 255, 2: 4}, "reduce_labels": True},
        {"num_labels": 1, "ignore_index": 255},
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's NaN means
def test_mean_iou_matches_the_canonical_algorithm(modules, options):
    rng = np.random.default_rng(len(str(options)))
    predictions, references = [], []
    for height, width in ((17, 23), (8, 8), (30, 11)):  # images of different sizes
        predictions.append(rng.integers(0, 12, size=(height, width)))  # includes labels >= num_labels
        reference = rng.integers(0, 10, size=(height, width))
        reference[rng.random((height, width)) < 0.1] = 255
        references.append(reference)
    expected = canonical_mean_iou(predictions, references, **options)
    got = modules["mean_iou"].compute(predictions=predictions, references=references, **options)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, equal_nan=True, err_msg=key)
        assert np.asarray(got[key]).shape == np.asarray(value).shape


def test_mean_iou_label_map_applies_all_pairs_at_once(modules):
    prediction, reference = np.array([[1, 1, 2, 2]]), np.array([[2, 2, 1, 1]])
    r = modules["mean_iou"].compute(
        predictions=[prediction], references=[reference], num_labels=3, ignore_index=255, label_map={1: 2, 2: 1}
    )
    assert r["mean_iou"] == 1.0


def test_mean_iou_errors_name_the_problem(modules):
    with pytest.raises(ValueError, match="image 0: prediction \\(1, 2\\) and reference \\(2, 1\\)"):
        modules["mean_iou"].compute(
            predictions=[np.zeros((1, 2))], references=[np.zeros((2, 1))], num_labels=2, ignore_index=255
        )


# ----------------------------------------------------------------------------------------------------------
# panoptic_quality
# ----------------------------------------------------------------------------------------------------------


def _pq_inputs(scenes):
    predictions = [{"segmentation": pred, "segments_info": info} for _, _, pred, info in scenes]
    references = [{"segmentation": gt, "segments_info": info} for gt, info, _, _ in scenes]
    return predictions, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_quality_gives_panopticapi_numbers(modules, tmp_path, seed):
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(10)]  # VOID, crowd, unlisted and absent ground-truth ids
    expected = panopticapi_pq(scenes, tmp_path)
    predictions, references = _pq_inputs(scenes)
    got = modules["panoptic_quality"].compute(predictions=predictions, references=references, categories=CATEGORIES)
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for key in ("pq", "sq", "rq"):
            assert got[key + suffix] == pytest.approx(expected[group][key], abs=1e-12), key + suffix
        assert got["n" + suffix] == expected[group]["n"]
    assert 0 < got["pq"] < 1 and got["n_things"] > 0 and got["n_stuff"] > 0
    for category, values in expected["per_class"].items():
        assert {k: got["per_category"][category][k] for k in values} == pytest.approx(values, abs=1e-12)


def test_panoptic_quality_keeps_panopticapi_crowd_rule(modules, tmp_path):
    """panopticapi forgives a prediction on crowd only for the LAST crowd segment listed for its category."""
    gt_map = np.array([[1, 1, 1, 1, 2, 2, 3, 3]])
    gt_segments = [
        {"id": 1, "category_id": 0, "iscrowd": 1, "area": 4},
        {"id": 2, "category_id": 0, "iscrowd": 1, "area": 2},
        {"id": 3, "category_id": 3, "iscrowd": 0, "area": 2},
    ]
    pred_map = np.array([[5, 5, 5, 5, 0, 0, 6, 6]])
    pred_segments = [{"id": 5, "category_id": 0}, {"id": 6, "category_id": 3}]
    scenes = [(gt_map, gt_segments, pred_map, pred_segments)]
    expected = panopticapi_pq(scenes, tmp_path)
    predictions, references = _pq_inputs(scenes)
    got = modules["panoptic_quality"].compute(predictions=predictions, references=references, categories=CATEGORIES)
    assert got["per_category"][0]["fp"] == 1 and got["n_things"] == expected["Things"]["n"] == 1
    assert (got["pq"], got["pq_things"], got["pq_stuff"]) == pytest.approx(
        (expected["All"]["pq"], expected["Things"]["pq"], expected["Stuff"]["pq"])
    )


def test_panoptic_quality_takes_transformers_post_processing_output(modules):
    reference = {
        "segmentation": torch.tensor([[1, 1, 2, 2]]),
        "segments_info": [{"id": 1, "category_id": 0, "iscrowd": 0, "area": 2}, {"id": 2, "category_id": 3}],
    }
    prediction = {
        "segmentation": torch.tensor([[4, 4, 7, 7]], dtype=torch.int32),
        "segments_info": [
            {"id": 4, "label_id": 0, "was_fused": False, "score": 0.9},
            {"id": 7, "label_id": 3, "was_fused": True, "score": 0.8},
        ],
    }
    r = modules["panoptic_quality"].compute(predictions=[prediction], references=[reference], categories=CATEGORIES)
    assert (r["pq"], r["pq_things"], r["pq_stuff"], r["n"]) == (1.0, 1.0, 1.0, 2)


def test_panoptic_quality_refuses_what_panopticapi_refuses(modules):
    reference = {"segmentation": np.array([[1, 1]]), "segments_info": [{"id": 1, "category_id": 0}]}
    compute = modules["panoptic_quality"].compute
    cases = {
        "segment ids \\[5\\] in the map are not listed": {
            "segmentation": np.array([[5, 0]]),
            "segments_info": [],
        },
        "listed segments \\[6\\] have no pixel": {
            "segmentation": np.array([[0, 0]]),
            "segments_info": [{"id": 6, "category_id": 0}],
        },
        "category 9, not in `categories`": {
            "segmentation": np.array([[6, 6]]),
            "segments_info": [{"id": 6, "category_id": 9}],
        },
        "needs an 'id' and a 'category_id'": {
            "segmentation": np.array([[6, 6]]),
            "segments_info": [{"id": 6}],
        },
    }
    for message, prediction in cases.items():
        with pytest.raises(ValueError, match=message):
            compute(predictions=[prediction], references=[reference], categories=CATEGORIES)


# ----------------------------------------------------------------------------------------------------------
# mask_ap
# ----------------------------------------------------------------------------------------------------------


def _box(y0, y1, x0, x1, size=32):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def pycocotools_reference(predictions, references, tmp_path) -> np.ndarray:
    """`COCOeval.stats` the way the COCO API documents it: ground truth from a JSON file, detections through
    `COCO.loadRes`, `iouType="segm"`."""
    import json

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    images, annotations, detections = [], [], []
    for image_id, (prediction, reference) in enumerate(zip(predictions, references), start=1):
        images.append({"id": image_id, "height": 32, "width": 32})
        for mask, label in zip(reference["masks"], reference["labels"]):
            r = rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "iscrowd": 0,
                    "segmentation": r,
                    "area": float(mask_utils.area(r)),
                    "bbox": mask_utils.toBbox(r).tolist(),
                }
            )
        for mask, label, score in zip(prediction["masks"], prediction["labels"], prediction["scores"]):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": rle(mask),
                    "score": float(score),
                }
            )
    categories = sorted({a["category_id"] for a in annotations + detections})
    (tmp_path / "gt.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": c} for c in categories]})
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(tmp_path / "gt.json"))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_mask_ap_gives_pycocotools_numbers(modules, tmp_path):
    generator = torch.Generator().manual_seed(0)
    predictions, references = [], []
    for _ in range(4):
        gt = torch.stack([_box(2, 12, 2, 12), _box(16, 30, 16, 30), _box(2, 8, 20, 30), _box(20, 31, 0, 9)])
        shifts = torch.randint(0, 4, (4,), generator=generator).tolist()
        masks = torch.stack([torch.roll(m, s, dims=1) for m, s in zip(gt, shifts)] + [_box(0, 5, 0, 5)])
        predictions.append(
            {
                "masks": masks,
                "labels": torch.tensor([0, 1, 0, 2, 1]),
                "scores": torch.rand(5, generator=generator),
            }
        )
        references.append({"masks": gt, "labels": torch.tensor([0, 1, 1, 2])})
    expected = pycocotools_reference(predictions, references, tmp_path)
    got = modules["mask_ap"].compute(predictions=predictions, references=references)
    names = [
        "ap",
        "ap50",
        "ap75",
        "ap_small",
        "ap_medium",
        "ap_large",
        "ar1",
        "ar10",
        "ar100",
        "ar_small",
        "ar_medium",
        "ar_large",
    ]
    assert [got[k] if got[k] is not None else -1.0 for k in names] == pytest.approx(expected.tolist(), abs=1e-12)
    assert 0 < got["ap"] < 1 and got["ap_medium"] is None  # no medium objects: COCO's -1


def test_mask_ap_input_formats_agree(modules):
    gt = {"masks": torch.stack([_box(2, 12, 2, 12), _box(16, 30, 16, 30)]), "labels": [0, 1]}
    masks = torch.stack([_box(3, 12, 2, 12), _box(16, 28, 16, 30)])
    as_masks = {"masks": masks.numpy(), "labels": np.array([0, 1]), "scores": [0.875, 0.5]}
    id_map = torch.zeros(32, 32, dtype=torch.int32)
    id_map[masks[0]], id_map[masks[1]] = 3, 4
    as_id_map = {
        "segmentation": id_map,
        "segments_info": [{"id": 3, "label_id": 0, "score": 0.875}, {"id": 4, "label_id": 1, "score": 0.5}],
    }
    as_binary = {"segmentation": masks.float(), "segments_info": as_id_map["segments_info"]}
    results = [modules["mask_ap"].compute(predictions=[p], references=[gt]) for p in (as_masks, as_id_map, as_binary)]
    assert results[0] == results[1] == results[2] and 0 < results[0]["ap"] < 1


def test_mask_ap_crowd_and_empty_cases(modules):
    gt = {
        "masks": torch.stack([_box(2, 12, 2, 12), _box(16, 30, 16, 30)]),
        "labels": [0, 0],
        "iscrowd": [0, 1],
    }
    prediction = {"masks": gt["masks"], "labels": [0, 0], "scores": [0.5, 0.9]}
    assert modules["mask_ap"].compute(predictions=[prediction], references=[gt])["ap"] == pytest.approx(1.0)
    nothing = {"masks": torch.zeros(0, 32, 32), "labels": [], "scores": []}
    assert modules["mask_ap"].compute(predictions=[nothing], references=[gt])["ap"] == 0.0
    no_truth = modules["mask_ap"].compute(predictions=[prediction], references=[{"masks": [], "labels": []}])
    assert no_truth["ap"] is None and no_truth["per_category_ap"] == {}


# ----------------------------------------------------------------------------------------------------------
# README cards and documented examples
# ----------------------------------------------------------------------------------------------------------

CARD_SECTIONS = [
    "## Metric Description",
    "## How to Use",
    "### Inputs",
    "### Output Values",
    "### Examples",
    "## Limitations and Bias",
    "## Citation",
    "## Further References",
]


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_module_card_has_the_community_metric_format(name):
    text = (metric_module_path(name) / "README.md").read_text()
    front = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert front, "the card must start with a YAML block"
    meta = yaml.safe_load(front.group(1))
    assert {"evaluate", "metric"} <= set(meta["tags"])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["title"] and meta["description"]
    positions = [text.find(section) for section in CARD_SECTIONS]
    assert -1 not in positions and positions == sorted(positions), dict(zip(CARD_SECTIONS, positions))
    assert f"# Metric Card for {meta['title']}" in text


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_documented_examples_are_true(modules, name):
    """The examples of the module's docstring and of its README card, run as doctests."""
    card = (metric_module_path(name) / "README.md").read_text()
    sources = {
        "inputs_description": modules[name].inputs_description,
        "README.md": "\n".join(re.findall(r"```python\n(>>>.*?)```", card, re.DOTALL)),
    }
    for where, text in sources.items():
        test = doctest.DocTestParser().get_doctest(text, {"np": np, name: modules[name]}, where, where, 0)
        assert test.examples, f"{name} {where} has no example"
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        runner.run(test)
        assert runner.failures == 0, f"{name} {where}: an example does not give what it shows"
