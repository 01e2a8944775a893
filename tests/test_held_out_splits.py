"""A validation split held out of the training data (splits.plan_split: 15 % by default, --train_val_split to choose)
on every folder source that can lack one: ADE-style folders (flat, or images/training alone), VOC-layout and CVAT
"Segmentation mask" exports without a val list, COCO instance exports with one training file; and a COCO instance
JSON file given as --dataset with --image_root. Each is driven through scripts/train_maskformer.py and
scripts/evaluate_maskformer.py as a user runs them, with the one-line errors of the flags' misuses."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import datasets
import pytest
from journeys import EVALUATE, TRAIN, error_line, run, train_argv
from mask_exports import write_cvat_export
from transformers import AutoConfig

from modeling_maskformer.data import SyntheticShapes, build_dataset
from modeling_maskformer.data.labels import LabelSettings

from coco_exports import save_tiny_model as save_shapes_model
from coco_exports import train_argv as coco_train_argv
from coco_exports import write_official, write_roboflow
from tiny_training import save_tiny_model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny model for the synthetic scenes' 9 classes (ADE and CVAT folders)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory) -> Path:
    """A tiny model for the COCO exports' 3 classes."""
    return save_shapes_model(tmp_path_factory.mktemp("shapes"))


def ade_folder(root: Path, count: int, *, flat: bool) -> Path:
    """ADE20K's layout of `count` synthetic scenes (labels in ADE's convention), images/training/ and
    annotations/training/ only, or (`flat`) the files directly in images/ and annotations/."""
    SyntheticShapes("train", count, 64, seed=5).export_ade_folder(root)
    if flat:
        for sub in ("images", "annotations"):
            for path in (root / sub / "training").iterdir():
                path.rename(root / sub / path.name)
            (root / sub / "training").rmdir()
    return root


def held_out_by_datasets(names: list[str], fraction: float) -> set[str]:
    """The items `datasets.Dataset.train_test_split(test_size=fraction, seed=0)` holds out: the reference the
    held-out split must equal (transformers' examples split so)."""
    return set(
        datasets.Dataset.from_dict({"name": names}).train_test_split(test_size=fraction, seed=0)["test"]["name"]
    )


def ids(dataset) -> list[str]:
    return [dataset[i]["image_id"] for i in range(len(dataset))]


def train_and_evaluate(argv_train: list, argv_evaluate: list, monkeypatch, capsys, caplog) -> str:
    """Run both programs (each must succeed); returns the log of both."""
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        code, err = run(TRAIN, *argv_train, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err[-2000:]
        code, err = run(EVALUATE, *argv_evaluate, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err[-2000:]
    return caplog.text


# -- ADE-style folders ------------------------------------------------------------------------------------------


def test_a_flat_folder_trains_on_one_part_and_evaluates_on_the_other(
    tiny_folder, tmp_path, monkeypatch, capsys, caplog
):
    """Before: a flat folder gave every item to every split, so training evaluated on its own training data."""
    root = ade_folder(tmp_path / "flat", 12, flat=True)
    log = train_and_evaluate(
        train_argv(tiny_folder, root, tmp_path / "model", "--label_convention", "ade"),
        ["--model", tmp_path / "model", "--dataset", root, "--output_json", tmp_path / "eval.json"],
        monkeypatch,
        capsys,
        caplog,
    )
    assert (
        f"ADE folder {root}: no validation split (only ['all']), so 15% of 'all' (seed 0) are held out as the "
        f"validation split and the rest is the training split; --train_val_split FRACTION sets the fraction; "
        f"--split all reads all of it"
    ) in log
    assert "10 items in the 'train' split, 2 in the 'validation' split" in log  # ceil(15 % of 12) held out
    assert json.loads((tmp_path / "eval.json").read_text())["semantic"]["mean_iou"] is not None
    train, validation, whole = (build_dataset(root, split, reduce_labels=True) for split in ("train", "val", "all"))
    names = ids(whole)
    assert set(ids(validation)) == held_out_by_datasets(names, 0.15)
    assert set(ids(train)) == set(names) - set(ids(validation))


def test_a_training_folder_alone_is_split_by_the_flag_the_same_in_both_programs(
    tiny_folder, tmp_path, monkeypatch, capsys, caplog
):
    root = ade_folder(tmp_path / "ade", 8, flat=False)  # images/training/, no images/validation/
    flag = ["--train_val_split", "0.25", "--label_convention", "ade"]
    log = train_and_evaluate(
        train_argv(tiny_folder, root, tmp_path / "model", *flag),
        ["--model", tmp_path / "model", "--dataset", root, "--split", "validation", *flag],
        monkeypatch,
        capsys,
        caplog,
    )
    assert "no validation split (only ['training']) and --train_val_split 0.25, so 25% of 'training'" in log
    assert "--split 'training[:100%]' reads all of it" in log
    assert "6 items in the 'train' split, 2 in the 'validation' split" in log
    validation = build_dataset(root, "validation", reduce_labels=True, train_val_split=0.25)
    assert set(ids(validation)) == held_out_by_datasets(
        ids(build_dataset(root, "train[:100%]", reduce_labels=True)), 0.25
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--train_val_split", "0.2"], "has its own, 'validation'; leave --train_val_split out to use it"),
        (
            ["--train_val_split", "1.5"],
            "--train_val_split must be a fraction between 0 and 1 (exclusive), got 1.5",
        ),
        (
            ["--train_val_split", "0"],
            "--train_val_split must be a fraction between 0 and 1 (exclusive), got 0.0",
        ),
    ],
)
def test_the_flag_is_refused_where_it_cannot_apply(flag, message, tiny_folder, tmp_path, monkeypatch, capsys):
    root = ade_folder(tmp_path / "ade", 4, flat=False)
    SyntheticShapes("validation", 2, 64, seed=5).export_ade_folder(root)
    argv = train_argv(tiny_folder, root, tmp_path / "model", "--label_convention", "ade", *flag)
    code, err = run(TRAIN, *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and message in error_line(TRAIN, err)


def test_a_folder_too_small_to_split_says_how_to_read_all_of_it(tiny_folder, tmp_path, monkeypatch, capsys):
    root = ade_folder(tmp_path / "one", 1, flat=True)
    argv = ["--model", tiny_folder, "--dataset", root, "--label_convention", "ade"]
    code, err = run(EVALUATE, *argv, monkeypatch=monkeypatch, capsys=capsys)
    line = error_line(EVALUATE, err)
    assert code == 2 and f"ADE folder {root}: holding 15% of 1 item(s) out as the validation split leaves " in line
    assert "pass --train_val_split with another fraction or read all of it with --split all" in line
    code, err = run(EVALUATE, *argv, "--split", "all", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err[-2000:]


# -- the model folder records what its training run held out ------------------------------------------------------


def recorded_held_out(model: Path) -> dict | None:
    return json.loads((model / "config.json").read_text())["validation_held_out"]


def evaluated(path: Path) -> dict:
    return json.loads(path.read_text())["semantic"]


def repeats_training(model: Path, evaluation: Path, capsys) -> bool:
    """The evaluation's mIoU and pixel accuracy equal the training run's own evaluation of the saved model."""
    trained, got = json.loads((model / "eval_results.json").read_text()), evaluated(evaluation)
    differences = {key: abs(got[key] - trained[key]) for key in ("mean_iou", "pixel_accuracy")}
    with capsys.disabled():
        print(
            f"\nmIoU: training run {trained['mean_iou']}, evaluate_maskformer.py {got['mean_iou']}; differences "
            f"{differences}"
        )
    # NOTE: the same process, kernels and thread count, batches of one padded size: the class maps agree (measured
    # difference 0.0); the tolerance allows a pixel whose scores tie to float rounding.
    return all(difference <= 5e-4 for difference in differences.values())


def test_evaluation_reads_the_held_out_items_the_model_records(tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    """Trained with the default 15 %, evaluated without the flag: the same held-out items, the same metrics. A
    larger fraction would add training items: refused; a smaller one is a subset of them: allowed, logged."""
    root, model = ade_folder(tmp_path / "flat", 12, flat=True), tmp_path / "model"
    log = train_and_evaluate(
        train_argv(tiny_folder, root, model, "--label_convention", "ade"),
        ["--model", model, "--dataset", root, "--output_json", tmp_path / "eval.json"],
        monkeypatch,
        capsys,
        caplog,
    )
    record = {"fraction": 0.15, "seed": 0, "subset": "all", "items": 12}
    assert recorded_held_out(model) == recorded_held_out(model / "best") == record
    assert AutoConfig.from_pretrained(model).validation_held_out == record  # transformers' own config keeps it
    assert (
        f"ADE folder {root}: no validation split (only ['all']) and {model} records that its training run held "
        f"0.15 out (config.validation_held_out), so 15% of 'all' (seed 0) are held out"
    ) in log
    assert repeats_training(model, tmp_path / "eval.json", capsys)

    code, err = run(
        EVALUATE,
        "--model",
        model,
        "--dataset",
        root,
        "--train_val_split",
        "0.25",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and error_line(EVALUATE, err) == (
        f"evaluate_maskformer.py: error: ADE folder {root}: --train_val_split 0.25 is larger than the 0.15 that {model} "
        f"held out of its training data (config.validation_held_out): the extra items are ones it was trained on, so "
        f"its metrics would be inflated; leave --train_val_split out to use its held-out items, or pass a fraction up "
        f"to 0.15"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        code, err = run(
            EVALUATE,
            "--model",
            model,
            "--dataset",
            root,
            "--train_val_split",
            "0.05",
            monkeypatch=monkeypatch,
            capsys=capsys,
        )
        assert code == 0, err[-2000:]
        smaller = build_dataset(root, "validation", model=model, train_val_split=0.05)
    assert (
        f"--train_val_split 0.05 is smaller than the 0.15 that {model} held out when it was trained: the "
        f"validation split is a subset of the items it was not trained on"
    ) in caplog.text
    held_out = build_dataset(root, "validation", model=model)
    assert len(smaller) == 1 and set(ids(smaller)) < set(ids(held_out))

    # The same folder with an item more: its held-out items are others, said in a warning.
    grown = shutil.copytree(root, tmp_path / "grown")
    for sub, suffix in (("images", ".jpg"), ("annotations", ".png")):
        first = sorted((grown / sub).iterdir())[0]
        shutil.copy(first, grown / sub / f"zz_copy{suffix}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer"):
        build_dataset(grown, "validation", model=model)
    assert f"'all' has 13 items, but 'all' had 12 when {model} was trained: the held-out items are not" in caplog.text

    # Data with a validation split of its own ignores the record.
    own = ade_folder(tmp_path / "own", 4, flat=False)
    SyntheticShapes("validation", 3, 64, seed=5).export_ade_folder(own)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        assert len(build_dataset(own, "validation", model=model)) == 3
    assert (
        f"it has its own validation split, 'validation', so the hold-out {model} records (0.15 of 'all')"
        in caplog.text
    )


def test_a_model_trained_with_a_fraction_is_evaluated_with_it(tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    root, model = ade_folder(tmp_path / "flat", 12, flat=True), tmp_path / "model"
    log = train_and_evaluate(
        train_argv(tiny_folder, root, model, "--label_convention", "ade", "--train_val_split", "0.3"),
        ["--model", model, "--dataset", root, "--output_json", tmp_path / "eval.json"],
        monkeypatch,
        capsys,
        caplog,
    )
    assert "8 items in the 'train' split, 4 in the 'validation' split" in log  # ceil(30 % of 12) held out
    assert recorded_held_out(model) == {"fraction": 0.3, "seed": 0, "subset": "all", "items": 12}
    assert f"{model} records that its training run held 0.3 out (config.validation_held_out), so 30% of 'all'" in log
    assert repeats_training(model, tmp_path / "eval.json", capsys)
    names = ids(build_dataset(root, "all", reduce_labels=True))
    assert set(ids(build_dataset(root, "validation", model=model))) == held_out_by_datasets(names, 0.3)
    # Resuming the run with another fraction would evaluate on items it has trained on: refused.
    argv = train_argv(tiny_folder, root, model, "--label_convention", "ade", "--max_train_steps", "3")
    code, err = run(TRAIN, *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and (
        "belongs to a different run (the held-out validation split (--train_val_split): 0.3 of 12 "
        "items in 'all' then, 0.15 of 12 items in 'all' now)"
    ) in error_line(TRAIN, err)


def test_a_malformed_record_is_refused_naming_the_model(tmp_path):
    root = ade_folder(tmp_path / "flat", 4, flat=True)
    id2label = SyntheticShapes("train", 1).id2label
    settings = LabelSettings(id2label, None, True, 255, "outputs/m", held_out={"fraction": 1.5, "seed": 0})
    with pytest.raises(
        ValueError,
        match=r"^outputs/m: config.validation_held_out \{'fraction': 1.5, 'seed': 0\} is "
        r"not a hold-out record \(--train_val_split must be a fraction",
    ):
        build_dataset(root, "validation", model=settings)


# -- VOC layout, CVAT "Segmentation mask 1.1" -------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    return {"train": SyntheticShapes("train", 6, image_size=64, seed=3)}


def test_a_mask_export_without_val_list_is_split(scenes, tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    """A CVAT export whose ImageSets/ was dropped (as other VOC-layout writers leave it out): the masks are one
    subset, "all", split by the flag in training and evaluation alike."""
    root = tmp_path / "export"
    write_cvat_export(root, scenes, {"default": "train"})
    shutil.rmtree(root / "ImageSets")
    flag = ["--train_val_split", "0.5"]
    log = train_and_evaluate(
        train_argv(tiny_folder, root, tmp_path / "model", *flag),
        ["--model", tmp_path / "model", "--dataset", root, "--output_json", tmp_path / "eval.json", *flag],
        monkeypatch,
        capsys,
        caplog,
    )
    assert f"VOC folder {root}: no validation split (only ['all']) and --train_val_split 0.5" in log
    assert "3 items in the 'train' split, 3 in the 'validation' split" in log
    assert "background" in json.loads((tmp_path / "eval.json").read_text())["semantic"]["per_class_iou"]
    train, validation = (build_dataset(root, split, train_val_split=0.5) for split in ("train", "validation"))
    assert not set(train.ids) & set(validation.ids) and len(train.ids + validation.ids) == 6


def test_a_mask_export_with_a_training_list_only_holds_out_of_it(scenes, tmp_path, caplog):
    write_cvat_export(tmp_path / "export", scenes, {"Train": "train"})  # ImageSets/Segmentation/Train.txt
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        train, validation = (build_dataset(tmp_path / "export", split) for split in ("train", "validation"))
    assert "no validation split (only ['Train']), so 15% of 'Train' (seed 0) are held out" in caplog.text
    assert set(validation.ids) == held_out_by_datasets(sorted(train.ids + validation.ids), 0.15)
    assert len(train) == 5 and not set(train.ids) & set(validation.ids)


# -- COCO instance exports with one training file -----------------------------------------------------------------


def test_official_coco_with_only_a_training_file(shapes_model, tmp_path, monkeypatch, capsys, caplog):
    root = write_official(tmp_path / "coco", {"train2017": 8})
    log = train_and_evaluate(
        coco_train_argv(root, shapes_model, tmp_path / "run", 2),
        ["--model", tmp_path / "run", "--dataset", root, "--output_json", tmp_path / "m.json"],
        monkeypatch,
        capsys,
        caplog,
    )
    assert "no validation split (only ['train2017']), so 15% of 'train2017' (seed 0) are held out" in log
    assert "--split 'train2017[:100%]' reads all of it" in log
    assert "6 items in the 'train' split, 2 in the 'validation' split" in log
    assert "ap" in json.loads((tmp_path / "m.json").read_text())["instance"]


def test_roboflow_with_only_train_and_the_flags_refusals(shapes_model, tmp_path, monkeypatch, capsys, caplog):
    root = write_roboflow(tmp_path / "rf", {"train": 8})
    flag = ["--train_val_split", "0.25"]
    log = train_and_evaluate(
        coco_train_argv(root, shapes_model, tmp_path / "run", 2, *flag),
        ["--model", tmp_path / "run", "--dataset", root, *flag],
        monkeypatch,
        capsys,
        caplog,
    )
    assert "6 items in the 'train' split, 2 in the 'validation' split" in log
    write_roboflow(root, {"train": 8, "valid": 2})  # now with Roboflow's own validation split
    code, err = run(
        EVALUATE, "--model", tmp_path / "run", "--dataset", root, *flag, monkeypatch=monkeypatch, capsys=capsys
    )
    line = error_line(EVALUATE, err)
    assert (
        code == 2
        and "--train_val_split holds a validation split out of data that has none, but this has its own, 'valid'"
        in line
    )


# -- a COCO instance JSON file as --dataset -----------------------------------------------------------------------


def test_a_json_file_with_its_image_folder(shapes_model, tmp_path, monkeypatch, capsys, caplog):
    """detectron2's register_coco_instances(name, {}, json_file, image_root) on the command line: the training file
    is split (it is the only data), the validation file is the validation split, whole."""
    root = write_official(tmp_path / "coco", {"train2017": 8, "val2017": 3})
    train_json, val_json = (root / "annotations" / f"instances_{s}.json" for s in ("train2017", "val2017"))
    log = train_and_evaluate(
        coco_train_argv(train_json, shapes_model, tmp_path / "run", 2, "--image_root", root / "train2017"),
        [
            "--model",
            tmp_path / "run",
            "--dataset",
            val_json,
            "--image_root",
            root / "val2017",
            "--output_json",
            tmp_path / "m.json",
        ],
        monkeypatch,
        capsys,
        caplog,
    )
    assert "instance annotations (COCO JSON), classes from the JSON's categories; 3 classes (square, disc, bar)" in log
    assert f"COCO instances {train_json}: no validation split (only ['train2017'])" in log
    assert "6 items in the 'train' split, 2 in the 'validation' split" in log
    assert f"COCO instances {val_json}: split 'validation' = instances_val2017.json (3 images, 3 classes)" in log
    assert "ap" in json.loads((tmp_path / "m.json").read_text())["instance"]


def test_a_json_file_beside_its_images_and_the_errors(shapes_model, tmp_path, monkeypatch, capsys):
    root = write_roboflow(tmp_path / "rf", {"train": 6, "valid": 2})
    code, err = run(
        TRAIN,
        *coco_train_argv(root / "train" / "_annotations.coco.json", shapes_model, tmp_path / "run", 1),
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err[-2000:]
    # The same JSON moved away from its images: one line naming the file and the flag.
    moved = tmp_path / "export.json"
    shutil.copy(root / "train" / "_annotations.coco.json", moved)
    code, err = run(
        EVALUATE,
        "--model",
        tmp_path / "run",
        "--dataset",
        moved,
        "--split",
        "export",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    line = error_line(EVALUATE, err)
    assert code == 2 and f"{moved}: none of its 6 images is in {tmp_path} (file_name 'img000_jpg." in line
    assert "give the folder that holds them (--image_root DIR" in line
    code, err = run(
        EVALUATE,
        "--model",
        tmp_path / "run",
        "--dataset",
        moved,
        "--split",
        "export",
        "--image_root",
        root / "train",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err[-2000:]  # "export", the file's one subset by its name: all of it
    (tmp_path / "panoptic.json").write_text(
        json.dumps(
            {
                "images": [],
                "categories": [],
                "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": []}],
            }
        )
    )
    (tmp_path / "notes.txt").write_text("")
    for extra, message in [
        (["--dataset", root, "--image_root", root], "--image_root does not apply to"),
        (["--dataset", moved, "--image_root", tmp_path / "nowhere"], "image folder"),
        (["--dataset", tmp_path / "missing.json"], f"dataset file {tmp_path / 'missing.json'} not found"),
        (
            ["--dataset", tmp_path / "panoptic.json"],
            "a COCO panoptic JSON (its annotations hold 'segments_info')",
        ),
        (["--dataset", tmp_path / "notes.txt"], "is a file but not a COCO instance JSON"),
    ]:
        code, err = run(EVALUATE, "--model", tmp_path / "run", *extra, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 2 and message in error_line(EVALUATE, err), extra
