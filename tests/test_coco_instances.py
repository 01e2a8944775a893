"""COCO instance JSON for training and evaluation, as each exporter writes it (tests/coco_exports.py says which
layout each writer reproduces): layout detection and its messages, split names, decoding (polygons, compressed and
uncompressed RLE, crowd regions, overlapping objects, sparse category ids) against masks written independently,
whole objects through augmentation and collation, mask AP against pycocotools' COCOeval on the same predictions,
and the user's journeys through scripts/train_maskformer.py and scripts/evaluate_maskformer.py."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.ndimage import binary_dilation, binary_erosion

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.data import (
    Augmentation,
    MaskFormerCollator,
    TrainingSet,
    build_dataset,
    detect_folder_layout,
    load_coco_instances,
)
from modeling_maskformer.data.dataset import instance_masks
from modeling_maskformer.evaluation import Evaluator, instance_ground_truth
from modeling_maskformer.evaluation.metrics import MaskAPMetric

from coco_exports import (
    ID2LABEL,
    save_tiny_model,
    scene,
    train_argv,
    write_cvat,
    write_label_studio,
    write_official,
    write_roboflow,
)
from script_runs import run_script
from tiny_training import history, losses


@pytest.fixture
def one_thread():
    """One torch thread for a tiny model (on a busy machine a second one mostly spins)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# Layouts and splits.

WRITERS = {
    "coco_instances": lambda root: write_official(root, {"train2017": 5, "val2017": 3}),
    "cvat_coco": lambda root: write_cvat(root, {"train": 5, "val": 3}),
    "cvat_coco (images/ flat)": lambda root: write_cvat(root, {"train": 5, "val": 3}, flat=True),
    "roboflow_coco": lambda root: write_roboflow(root, {"train": 5, "valid": 3, "test": 2}),
}


@pytest.mark.parametrize("layout", list(WRITERS))
@pytest.mark.parametrize("split", ["val", "valid", "validation"])
def test_each_exporter_layout_is_detected_and_its_splits_found(layout, split, tmp_path):
    root = WRITERS[layout](tmp_path / "export")
    assert detect_folder_layout(root) == layout.split()[0]
    train, val = build_dataset(root, "train"), build_dataset(root, split)
    assert (len(train), len(val)) == (5, 3)
    assert train.task == val.task == "instance"
    assert train.id2label == val.id2label == ID2LABEL and train.thing_ids == [0, 1, 2]
    item = val[1]
    assert item["semantic"] is None and item["instances"]["masks"].shape[1:] == (64, 64)
    assert item["image"].size == (64, 64) and item["image"].mode == "RGB"


def test_a_one_file_export_holds_a_validation_split_out(tmp_path, caplog):
    """Label Studio's one result.json, like any source without a validation split (splits.plan_split): 15 % held
    out, seeded, logged; the file names "images\\x.jpg" (Windows separators) are found."""
    root = write_label_studio(tmp_path / "ls", 20)
    assert detect_folder_layout(root) == "label_studio"
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        train, val = build_dataset(root, "train"), build_dataset(root, "validation")
    assert (len(train), len(val)) == (17, 3) and train.id2label == val.id2label == ID2LABEL
    ids = {train[i]["image_id"] for i in range(17)} | {val[i]["image_id"] for i in range(3)}
    assert ids == {str(i) for i in range(20)}  # disjoint, together everything
    assert "1 annotation(s) have no mask" in caplog.text  # the rectangle label: a box is no instance mask
    assert "no validation split (only ['result'])" in caplog.text and "15% of 'result'" in caplog.text
    assert len(build_dataset(root, "result")) == 20
    assert len(build_dataset(root, "train", train_val_split=0.5)) == 10


def test_a_cvat_task_export_has_the_default_subset(tmp_path):
    root = write_cvat(tmp_path / "cvat", {"default": 10})
    assert len(build_dataset(root, "default")) == 10 and len(build_dataset(root, "default[:40%]")) == 4
    assert len(build_dataset(root, "train")) == 8 and len(build_dataset(root, "val")) == 2


def test_ambiguous_and_unknown_splits_name_the_subsets(tmp_path):
    root = write_official(tmp_path / "coco", {"train2014": 2, "train2017": 2, "val2017": 2})
    with pytest.raises(ValueError, match="ambiguous.*train2014.*train2017"):
        build_dataset(root, "train")
    assert len(build_dataset(root, "train2014")) == 2
    with pytest.raises(ValueError, match=r"official COCO layout\): no split 'dev'; it has .*val2017"):
        build_dataset(root, "dev")


def test_an_unknown_folder_lists_every_layout_and_a_coco_export_is_never_called_ade(tmp_path):
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "labels.json").write_text("{}")
    (root / "annotations" / "instances_default.json").write_text("{}")  # a CVAT export: not ADE
    assert detect_folder_layout(root) == "cvat_coco"
    for path in (root / "annotations").iterdir():
        path.rename(root / path.name)
    (root / "annotations").rmdir()  # images/ + two JSON files beside it: no known layout
    with pytest.raises(ValueError) as error:
        detect_folder_layout(root)
    for marker in (
        "annotations/panoptic_<subset>.json",
        "annotations/instances_<subset>.json",
        "<subset>/_annotations.coco.json",
        "result.json + images/",
        "images/ + annotations/",
        "dataset_dict.json",
    ):
        assert marker in str(error.value)


def test_a_broken_json_is_named(tmp_path):
    root = write_official(tmp_path / "coco", {"val2017": 2})
    path = root / "annotations" / "instances_val2017.json"
    payload = json.loads(path.read_text())
    payload["annotations"][0]["category_id"] = 5
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"instances_val2017.json: annotations use category id\(s\) \[5\]"):
        build_dataset(root, "val")
    path.write_text(path.read_text()[:-20])
    with pytest.raises(ValueError, match="instances_val2017.json: not valid JSON"):
        build_dataset(root, "val")


# --------------------------------------------------------------------------------------------------
# Decoding.


def test_every_encoding_decodes_to_the_masks_that_were_written(tmp_path):
    """Compressed RLE and uncompressed RLE (written by hand from its spec) decode exactly; polygons (rectangles and
    a 24-gon) within a pixel; overlapping objects keep their whole masks; crowd regions are flagged; sparse category ids
    (3, 17, 90) become labels 0..2 and map back."""
    root = write_official(tmp_path / "coco", {"val2017": 12})
    dataset = build_dataset(root, "val")
    assert dataset.label_to_category_id == {0: 3, 1: 17, 2: 90}
    payload = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    kinds, overlaps = set(), 0
    for index in range(len(dataset)):
        image, objects = scene(index, (64, 64), crowd=index % 4 == 3)  # the scene the writer drew
        annotations = [a for a in payload["annotations"] if a["image_id"] == index + 1]
        instances = dataset[index]["instances"]
        assert len(objects) == len(annotations) == len(instances["masks"])
        for obj, annotation, mask, label, crowd in zip(
            objects, annotations, instances["masks"], instances["labels"], instances["iscrowd"]
        ):
            assert label == obj["class"] and crowd == obj["iscrowd"]
            segmentation = annotation["segmentation"]
            kind = (
                "polygon"
                if isinstance(segmentation, list)
                else "rle"
                if isinstance(segmentation["counts"], str)
                else "uncompressed"
            )
            kinds.add(kind)
            if kind == "polygon":  # rasterised within a pixel of the shape (polygon vertices lie on pixel corners)
                assert (binary_erosion(obj["mask"]) <= mask).all() and (mask <= binary_dilation(obj["mask"])).all()
            else:
                assert np.array_equal(mask, obj["mask"]), kind
        if len(instances["masks"]) > 1:
            overlaps += int((instances["masks"][0] & instances["masks"][1]).any())
        assert np.array_equal(instance_masks(dataset[index])[1], instances["labels"][instances["iscrowd"] == 0])
    assert kinds == {"polygon", "rle", "uncompressed"} and overlaps >= 2


def test_a_plain_json_and_image_folder_like_register_coco_instances(tmp_path):
    root = write_official(tmp_path / "coco", {"val2017": 3})
    dataset = load_coco_instances(root / "annotations" / "instances_val2017.json", root / "val2017")
    assert len(dataset) == 3 and dataset[0]["instances"]["masks"].dtype == bool
    with pytest.raises(
        FileNotFoundError,
        match=r"instances_val2017.json: none of its 3 images is in .*file_name "
        r"'000000000001.jpg' is not .*--image_root DIR",
    ):
        load_coco_instances(root / "annotations" / "instances_val2017.json", tmp_path)
    (root / "val2017" / "000000000002.jpg").unlink()  # one missing: found by the data check (or when read)
    missing = load_coco_instances(root / "annotations" / "instances_val2017.json", root / "val2017")
    with pytest.raises(FileNotFoundError, match=r"000000000002.jpg.*image not found \(file_name '000000000002.jpg'"):
        missing[1]


def test_images_are_turned_upright_by_their_exif_orientation(tmp_path):
    root = write_official(tmp_path / "coco", {"val2017": 1}, size=(48, 64))
    path = root / "val2017" / "000000000001.jpg"
    upright = Image.open(path).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the viewer rotates it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)
    item = build_dataset(root, "val")[0]
    assert item["image"].size == (64, 48)
    assert np.abs(np.asarray(item["image"], float) - np.asarray(upright, float)).mean() < 4  # JPEG noise only
    assert build_dataset(root, "val").header_only()[0]["image"].size == (64, 48)


def test_overlapping_objects_stay_whole_through_augmentation_and_collation(tmp_path):
    root = write_official(tmp_path / "coco", {"train2017": 12})
    dataset = build_dataset(root, "train")
    index = next(
        i
        for i in range(len(dataset))
        if len(instance_masks(dataset[i])[0]) > 1
        and (instance_masks(dataset[i])[0][0] & instance_masks(dataset[i])[0][1]).any()
    )
    training = TrainingSet(dataset, Augmentation(64, 1.0, 1.0, 1.0), seed=0)
    image, masks, classes = training[index]
    assert masks.dtype == torch.bool and masks.shape[1:] == image.shape[1:] and len(masks) == len(classes)
    assert (masks[0] & masks[1]).any()  # both objects keep the pixels they share
    processor = MaskFormerImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 256}, ignore_index=255, do_reduce_labels=False, num_labels=3
    )
    batch = MaskFormerCollator(processor, mask_dtype=torch.bool)([training[index], training[0]])
    assert torch.equal(batch["mask_labels"][0], masks) and torch.equal(batch["class_labels"][0], classes)
    evaluation = MaskFormerCollator(processor)([dataset[index]])  # dataset items: resized with the image
    kept = instance_masks(dataset[index])[0]
    assert torch.equal(evaluation["mask_labels"][0].bool(), torch.from_numpy(kept))
    with pytest.raises(ValueError, match="return_segment_maps cannot hold instance data"):
        MaskFormerCollator(processor, return_segment_maps=True)([training[index]])


# --------------------------------------------------------------------------------------------------
# Mask AP against COCOeval.


def cocoeval_stats(json_path: Path, results: list[dict]) -> np.ndarray:
    coco = COCO(str(json_path))
    evaluation = COCOeval(coco, coco.loadRes(results), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation.stats[:6]


def test_mask_ap_equals_cocoeval_on_the_same_predictions(tmp_path, capsys):
    """Predictions near the ground truth (shifted masks, some with the wrong class, some spurious), scored by our
    metric on the loader's ground truth and by COCOeval on the JSON file itself: crowd regions, overlapping
    objects, sparse category ids and COCO's areas included."""
    root = write_official(tmp_path / "coco", {"val2017": 16}, size=(224, 224))  # small, medium and large objects
    json_path = root / "annotations" / "instances_val2017.json"
    dataset = build_dataset(root, "val")
    rng = np.random.default_rng(0)
    metric, results = MaskAPMetric(), []
    for index in range(len(dataset)):
        item = dataset[index]
        gt = instance_ground_truth(item, set(dataset.thing_ids))
        masks, labels = [], []
        for mask, label in zip(gt["masks"], gt["labels"]):
            masks.append(np.roll(mask, tuple(rng.integers(-10, 11, 2)), axis=(0, 1)))
            labels.append(int(label) if rng.random() > 0.2 else int(rng.integers(0, 3)))
        spurious = np.zeros((224, 224), bool)
        spurious[rng.integers(0, 150) :][:60, 30:100] = True
        masks.append(spurious)
        labels.append(int(rng.integers(0, 3)))
        scores = rng.random(len(masks))
        metric.update({"masks": np.stack(masks), "labels": np.array(labels), "scores": scores}, gt)
        for mask, label, score in zip(masks, labels, scores):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {
                    "image_id": int(item["image_id"]),
                    "category_id": dataset.label_to_category_id[label],
                    "segmentation": rle,
                    "score": float(score),
                }
            )
    ours = metric.compute()
    reference = cocoeval_stats(json_path, results)
    print(
        "ours",
        [ours[k] for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")],
        "COCOeval",
        reference,
    )
    assert 0.1 < ours["ap"] < 0.9 and all(ours[k] is not None for k in ("ap_small", "ap_medium", "ap_large"))
    for key, value in zip(("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"), reference):
        assert (ours[key] if ours[key] is not None else -1.0) == pytest.approx(value, abs=1e-9), key


# --------------------------------------------------------------------------------------------------
# Journeys through the command-line programs.


@pytest.fixture(scope="module")
def official_run(tmp_path_factory):
    """The official layout trained on for 100 steps through scripts/train_maskformer.py."""
    work = tmp_path_factory.mktemp("coco-journey")
    root = write_official(work / "coco", {"train2017": 48, "val2017": 12})
    model = save_tiny_model(work / "tiny")
    status = run_script("train_maskformer.py", train_argv(root, model, work / "run", 100))
    assert status == 0
    return root, work / "run"


def test_training_on_the_official_layout_learns(official_run):
    _, run = official_run
    loss = losses(run)
    print("losses", [round(v, 2) for v in loss])
    assert np.mean(loss[-5:]) < 0.7 * np.mean(loss[:3])
    final = history(run)[-1]["eval"]
    print("final evaluation", final)
    assert set(final) == {"mask_ap", "mask_ap50"}
    assert final["mask_ap"] > 0.1  # measured 0.22 on AMD EPYC with AVX-512, 0.15 with AVX2 only
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {str(k): v for k, v in ID2LABEL.items()}


@pytest.mark.slow
def test_a_longer_run_learns_instance_segmentation(tmp_path):
    """600 steps (about 1 minute on an idle core): mask AP 0.36 measured on AMD EPYC with AVX-512, 0.32 AVX2 only."""
    root = write_official(tmp_path / "coco", {"train2017": 48, "val2017": 12})
    model = save_tiny_model(tmp_path / "tiny")
    assert run_script("train_maskformer.py", train_argv(root, model, tmp_path / "run", 600, "--eval_steps", 200)) == 0
    evaluations = [entry["eval"] for entry in history(tmp_path / "run") if "eval" in entry]
    print(evaluations)
    assert len(evaluations) == 3 and evaluations[-1]["mask_ap"] > 0.25 and evaluations[-1]["mask_ap50"] > 0.4


def test_evaluating_the_trained_model_reports_mask_ap_like_training_did(official_run, tmp_path, capsys):
    root, run = official_run
    status = run_script(
        "evaluate_maskformer.py",
        ["--model", run, "--dataset", root, "--split", "val", "--output_json", tmp_path / "metrics.json"],
    )
    assert status == 0
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert set(results) == {"instance"}  # no mIoU or PQ: instance data has neither
    assert results["instance"]["ap"] == pytest.approx(history(run)[-1]["eval"]["mask_ap"], abs=1e-9)
    assert "ap50" in capsys.readouterr().out


def test_our_evaluator_equals_cocoeval_on_a_trained_models_predictions(official_run, one_thread):
    """The whole evaluator (post-processing, ground truth from the loader, metric) against COCOeval on the JSON,
    on the predictions of the model trained above."""
    from modeling_maskformer.evaluation import load_model_folder

    root, run = official_run
    model, processor = load_model_folder(str(run))
    model.eval()
    dataset = build_dataset(root, "val")
    evaluator = Evaluator.for_dataset(dataset, ID2LABEL)
    results = []
    for index in range(len(dataset)):
        item = dataset[index]
        with torch.no_grad():
            outputs = model(**processor([item["image"]], return_tensors="pt"))
        evaluator.update(processor, outputs, [item])
        [prediction] = processor.post_process_instance_segmentation(
            outputs, threshold=0.0, target_sizes=[(64, 64)], return_binary_maps=True
        )
        for mask, segment in zip(prediction["segmentation"], prediction["segments_info"]):
            rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {
                    "image_id": int(item["image_id"]),
                    "segmentation": rle,
                    "score": segment["score"],
                    "category_id": dataset.label_to_category_id[segment["label_id"]],
                }
            )
    ours = evaluator.compute()["instance"]
    reference = cocoeval_stats(root / "annotations" / "instances_val2017.json", results)
    for key, value in zip(("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"), reference):
        assert (ours[key] if ours[key] is not None else -1.0) == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("layout", ["cvat_coco", "roboflow_coco", "label_studio"])
def test_each_exporters_folder_trains_and_evaluates_from_the_command_line(layout, tmp_path, caplog):
    if layout == "label_studio":  # one file: 15 % held out for validation
        root, splits = write_label_studio(tmp_path / "export", 10), []
    elif layout == "cvat_coco":  # one subset, "default": a held-out fifth for validation
        root, splits = write_cvat(tmp_path / "export", {"default": 10}), ["--train_val_split", 0.2]
    else:
        root, splits = write_roboflow(tmp_path / "export", {"train": 6, "valid": 3}), []
    model = save_tiny_model(tmp_path / "tiny")
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        assert run_script("train_maskformer.py", train_argv(root, model, tmp_path / "run", 2, *splits)) == 0
    logged = caplog.text
    # The data line names the data kind and where the classes come from; the label convention is not used.
    assert (
        "instance annotations (COCO JSON), classes from the JSON's categories; 3 classes (square, disc, bar), 3 of "
        "them things" in logged
    )
    assert "panoptic" not in logged and "--label_convention" not in logged
    # Each split line and its crowd count once, the count of that split's own images (the file has 3 when it has 10).
    crowd = {split: int(count) for split, count in re.findall(r"split '(\w+)': (\d+) crowd region", logged)}
    assert len(re.findall(r"crowd region", logged)) == len(crowd)
    if layout == "cvat_coco":
        assert sum(crowd.values()) == 3 and logged.count("are held out as the validation split") == 1
    assert len(losses(tmp_path / "run")) == 2
    split = {"cvat_coco": "default", "label_studio": "result", "roboflow_coco": "valid"}[layout]
    argv = [
        "--model",
        tmp_path / "run",
        "--dataset",
        root,
        "--split",
        split,
        "--output_json",
        tmp_path / "m.json",
    ]
    assert run_script("evaluate_maskformer.py", argv) == 0
    assert "ap" in json.loads((tmp_path / "m.json").read_text())["instance"]


@pytest.mark.parametrize("flag", [["--metric_for_best_model", "mean_iou"], ["--head", "per_pixel"]])
def test_training_refuses_semantic_settings_for_instance_data(flag, tmp_path, capsys):
    root = write_roboflow(tmp_path / "export", {"train": 2, "valid": 1})
    argv = ["--dataset", root, "--output_dir", tmp_path / "run", "--max_train_steps", 1, *flag]
    assert run_script("train_maskformer.py", argv) == 2
    assert "instance data (COCO JSON) has no semantic maps" in capsys.readouterr().err
