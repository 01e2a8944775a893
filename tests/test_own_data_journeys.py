"""The own-data journey through the command-line programs, as a user runs it: fine-tune on a folder of JPEG photos
and PNG label maps whose values are the classes (`--label_convention as_is`), then evaluate the saved model on the
same folder without repeating the flag. The model folder carries the data's meaning (classes, things, label
convention), so the evaluation repeats the training run's number; a dataset with other classes, a contradicting
flag and a model that records no convention each get their one line."""

from __future__ import annotations

import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builders import tiny_model
from own_data import OWN_CLASSES, write_own_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN, EVALUATE = ROOT / "scripts" / "train_maskformer.py", ROOT / "scripts" / "evaluate_maskformer.py"


def run(script: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(script), *map(str, argv)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    data = write_own_dataset(root / "my_data", num_train=8, num_val=4, image_size=64)
    tiny_model(num_labels=3).save_pretrained(root / "base")  # another model's classes: the head is re-initialised
    trained = run(
        TRAIN,
        "--model_name_or_path",
        root / "base",
        "--dataset",
        data,
        "--label_convention",
        "as_is",
        "--crop_size",
        "64",
        "--max_train_steps",
        "6",
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "1e-3",
        "--output_dir",
        root / "model",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root, data, root / "model", trained.stderr


def test_training_records_what_the_data_means(journey):
    _, _, model, log = journey
    assert "recipe 'resnet' (lr 0.001, weight decay 0.0001, backbone lr x0.1, warmup 0 steps" in log
    assert "the paper's recipe for a pretrained resnet backbone" in log  # the base model's backbone is trained
    for folder in (model, model / "best"):
        config = json.loads((folder / "config.json").read_text())
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        assert config["model_type"] == "maskformer"  # transformers' own format
        assert config["id2label"] == {str(k): v for k, v in OWN_CLASSES.items()} and config["thing_ids"] == []
        assert config["validation_held_out"] is None  # the data has a validation split: nothing held out
        assert processor["do_reduce_labels"] is False and processor["ignore_index"] == 255


def test_evaluating_the_model_on_its_data_repeats_the_training_evaluation(journey):
    root, data, model, _ = journey
    evaluated = run(EVALUATE, "--model", model, "--dataset", data, "--output_json", root / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "label convention as_is, recorded by" in evaluated.stderr
    trained = json.loads((model / "eval_results.json").read_text())["mean_iou"]
    got = json.loads((root / "eval.json").read_text())["semantic"]["mean_iou"]
    print(f"mIoU: training run {trained}, evaluate_maskformer.py {got} (difference {abs(got - trained):.3g})")
    # NOTE: two processes, the same thread count and kernels: the class maps agree (measured difference 0.0); the
    # tolerance allows a pixel or two whose scores tie to float rounding.
    assert got == pytest.approx(trained, abs=5e-4) and got > 0


def test_a_flag_that_contradicts_the_record_is_followed_with_a_warning(journey, caplog):
    _, data, model, _ = journey
    main = runpy.run_path(str(EVALUATE))["main"]
    with caplog.at_level(logging.WARNING):
        shifted = main(["--model", str(model), "--dataset", str(data), "--label_convention", "ade"])
    assert "--label_convention ade (reduce_labels=True) contradicts" in caplog.text
    recorded = json.loads((model / "eval_results.json").read_text())["mean_iou"]
    assert shifted["semantic"]["mean_iou"] != recorded  # the same files, read another way


def test_other_classes_are_refused_in_one_line(journey, tmp_path):
    _, data, model, _ = journey
    other = shutil.copytree(data, tmp_path / "other")
    (other / "id2label.json").write_text(json.dumps({"0": "road", "1": "car", "2": "person", "3": "tree"}))
    refused = run(EVALUATE, "--model", model, "--dataset", other)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"evaluate_maskformer.py: error: dataset {other} (validation) has 4 classes (road, car, person, tree) but "
        f"{model} predicts 4 (sky, ground, round, angular): the class names differ; pass --ignore_class_mismatch to "
        f"evaluate anyway (class ids are then compared as numbers)"
    )
    main = runpy.run_path(str(EVALUATE))["main"]
    assert "mean_iou" in main(["--model", str(model), "--dataset", str(other), "--ignore_class_mismatch"])["semantic"]


def test_a_model_that_records_no_convention_needs_the_flag(journey, tmp_path):
    _, data, model, _ = journey
    old = shutil.copytree(model, tmp_path / "old", ignore=shutil.ignore_patterns("checkpoints", "best"))
    config = json.loads((old / "config.json").read_text())
    del config["thing_ids"]  # as this package saved folders before it recorded the label settings
    (old / "config.json").write_text(json.dumps(config))
    main = runpy.run_path(str(EVALUATE))["main"]
    with pytest.raises(
        ValueError,
        match=r"records no label convention.*--label_convention ade \(reduce_labels=True\).*"
        r"--label_convention as_is \(reduce_labels=False\)",
    ):
        main(["--model", str(old), "--dataset", str(data)])
    assert "mean_iou" in main(["--model", str(old), "--dataset", str(data), "--label_convention", "as_is"])["semantic"]
