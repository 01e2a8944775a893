"""The data check before training (modeling_maskformer/data/checks.py): every problem found in one pass and
reported at once, each naming its file; --skip_bad_items; the same findings on one core and on a process pool;
lossy label files and 0/255 label sets; and the training command line refusing bad data in one run."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from benchmarks.__main__ import main
from modeling_maskformer.data import SyntheticShapes, build_dataset
from modeling_maskformer.data.checks import DataCheckError, check_dataset
from modeling_maskformer.data.decoding import open_image

from coco_exports import save_tiny_model, train_argv, write_official
from script_runs import run_script
from tiny_training import losses

NINE_CLASSES = {i: str(i) for i in range(9)}
ALL_OF_TRAINING = "train[:100%]"  # every item: the folders here have no validation split to hold out


def ade_folder(root: Path, count: int) -> Path:
    """An ADE-style folder of synthetic scenes (labels 0 = other, 1..9)."""
    return SyntheticShapes("train", count, 64).export_ade_folder(root)


def break_files(root: Path) -> dict[str, Path]:
    """One file per kind of problem; returns {kind: the file the report must name}."""
    images = sorted((root / "images" / "training").glob("*.jpg"))
    labels = sorted((root / "annotations" / "training").glob("*.png"))
    data = images[3].read_bytes()
    images[3].write_bytes(data[: len(data) // 2])  # truncated download
    Image.new("RGB", (64, 64), (10, 20, 30)).save(labels[5])  # a colour-coded mask
    Image.fromarray(np.full((64, 64), 300, np.uint16)).save(labels[7])  # 16-bit PNG, label 300 of 9 classes
    Image.new("L", (48, 64)).save(labels[9])  # the annotation of another image size
    images[11].write_bytes(b"not an image")
    return {
        "truncated": images[3],
        "colour": labels[5],
        "out of range": labels[7],
        "size": labels[9],
        "not an image": images[11],
    }


def test_every_problem_is_reported_at_once_naming_each_file(tmp_path, caplog):
    root = ade_folder(tmp_path / "ade", 80)  # enough items for the process pool
    broken = break_files(root)
    dataset = build_dataset(root, ALL_OF_TRAINING, reduce_labels=True, id2label=NINE_CLASSES)
    with caplog.at_level(logging.ERROR, logger="modeling_maskformer"), pytest.raises(DataCheckError) as error:
        check_dataset(dataset)
    message = str(error.value)
    assert message.startswith(
        "the data check found 5 problem(s) in 5 of 80 items of the data; fix them, or pass --skip_bad_items"
    )
    assert len(error.value.problems) == 5
    for kind, path in broken.items():
        [line] = [p for p in error.value.problems if p.startswith(str(path))]
        assert line in caplog.text, kind  # logged too: a command line shows every problem, not only the first
    reasons = {
        "truncated": "truncated",
        "colour": "mode RGB",
        "out of range": "label(s) [299] outside 0..8",
        "size": "annotation size 48x64",
        "not an image": "cannot decode",
    }
    for kind, reason in reasons.items():
        assert any(p.startswith(str(broken[kind])) and reason in p for p in error.value.problems), kind
    with pytest.raises(DataCheckError) as one_core:
        check_dataset(dataset, num_workers=1)
    assert one_core.value.problems == error.value.problems  # the pool changes nothing but the time


def test_skip_bad_items_keeps_the_rest_with_their_metadata(tmp_path, caplog):
    root = ade_folder(tmp_path / "ade", 20)
    broken = break_files(root)
    dataset = build_dataset(root, ALL_OF_TRAINING, reduce_labels=True, id2label=NINE_CLASSES)
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer"):
        kept = check_dataset(dataset, skip_bad_items=True, num_workers=1)
    assert len(kept) == 15 and kept.id2label == NINE_CLASSES and kept.reduce_labels and kept.task == "semantic"
    assert [kept[i]["image_id"] for i in range(len(kept))] == [
        dataset[i]["image_id"] for i in range(20) if i not in (3, 5, 7, 9, 11)
    ]
    assert caplog.text.count("--skip_bad_items: leaving out") == 5 and all(
        str(p) in caplog.text for p in broken.values()
    )
    assert "left out 5 of 20 items" in caplog.text
    assert check_dataset(kept, num_workers=1) is kept  # nothing left to find


def test_the_report_is_capped(tmp_path, caplog):
    root = ade_folder(tmp_path / "ade", 12)
    for label in (root / "annotations" / "training").glob("*.png"):
        Image.new("L", (48, 64)).save(label)
    dataset = build_dataset(root, ALL_OF_TRAINING, reduce_labels=True, id2label=NINE_CLASSES)
    with pytest.raises(DataCheckError) as error:
        check_dataset(dataset, max_reported=4, num_workers=1, skip_bad_items=True)  # all bad: still an error
    lines = str(error.value).splitlines()
    assert "12 problem(s) in 12 of 12 items" in lines[0] and "fix them." in lines[0] and "skip" not in lines[0]
    assert len(lines) == 1 + 4 + 1 and lines[-1] == "... (and 8 more)"
    assert len(error.value.problems) == 12


def test_truncated_jpeg_is_found_without_keeping_its_pixels(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)).save(path, quality=90)
    header = open_image(path, decode=False)
    assert header.size == (128, 96) and header.mode == "RGB"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="photo.jpg: cannot decode the image .*truncated"):
        open_image(path, decode=False)
    data = {"bytes": path.read_bytes(), "path": None}  # a datasets image
    with pytest.raises(ValueError, match="row 3: cannot decode"):
        open_image(data, "row 3", decode=False)


def test_lossy_label_files_are_refused_with_the_reason(tmp_path):
    root = ade_folder(tmp_path / "ade", 3)
    for label in (root / "annotations" / "training").glob("*.png"):
        Image.open(label).save(label.with_suffix(".jpg"), quality=95)
        label.unlink()
    with pytest.raises(ValueError, match=r"label file is JPEG, whose lossy compression changes label values"):
        build_dataset(root, "train", reduce_labels=True)
    # a datasets dataset of 10 rows, one JPEG label among them where the loader's sample (8 rows) does not look
    labels = []
    for row in range(10):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, "JPEG" if row == 2 else "PNG")
        labels.append(Image.open(buffer))
    rows = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 10, "annotation": labels})
    dataset = build_dataset(rows, reduce_labels=False, id2label={0: "a"})
    with pytest.raises(DataCheckError, match="row 2 .*label file is JPEG, whose lossy compression") as error:
        check_dataset(dataset, num_workers=1)
    assert len(error.value.problems) == 1


def test_labels_that_are_only_0_and_255_warn_that_255_is_ignored(tmp_path, caplog):
    root = tmp_path / "masks"
    for sub in ("images", "annotations"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8 + i : 24] = 255  # a binary mask: object = 255
        Image.fromarray(mask).save(root / "annotations" / f"{i}.png")
        Image.new("RGB", (32, 32)).save(root / "images" / f"{i}.jpg")
    dataset = build_dataset(root, "train", reduce_labels=False)
    assert dataset.num_labels == 1
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer"):
        check_dataset(dataset, num_workers=1, name="the 'train' split")
    # the loader judged a sample of the files; the check judges every one
    assert "the 'train' split (every label map checked): the label maps hold only the values 0 and 255" in caplog.text
    assert "255 means 'ignored'" in caplog.text and "map 255 to 1" in caplog.text


def test_coco_problems_are_reported_at_once(tmp_path):
    root = write_official(tmp_path / "coco", {"train2017": 8})
    json_path = root / "annotations" / "instances_train2017.json"
    payload = json.loads(json_path.read_text())
    payload["images"][1]["width"] = 80  # the JSON's size disagrees with the file
    first = next(a for a in payload["annotations"] if a["image_id"] == 3)
    first["segmentation"] = {"size": [32, 32], "counts": "PPYo1"}  # an RLE of another size
    json_path.write_text(json.dumps(payload))
    (root / "train2017" / "000000000005.jpg").unlink()
    data = (root / "train2017" / "000000000007.jpg").read_bytes()
    (root / "train2017" / "000000000007.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataCheckError) as error:
        check_dataset(build_dataset(root, "train2017"), num_workers=1)  # all of it: no validation split held out
    problems = error.value.problems
    assert len(problems) == 4
    assert any(
        "000000000002.jpg (image id 2 of" in p and "is 64x64 (WxH) but the JSON says 80x64" in p for p in problems
    )
    assert any(
        "annotation id" in p and "RLE size [32, 32] (HxW) differs from the image's [64, 64]" in p for p in problems
    )
    assert any("000000000005.jpg" in p and "image not found" in p for p in problems)
    assert any("000000000007.jpg: cannot decode the image" in p for p in problems)


# --------------------------------------------------------------------------------------------------
# Through the training command line.


def test_the_training_command_line_refuses_bad_data_listing_every_file(tmp_path, capsys):
    root = ade_folder(tmp_path / "ade", 12)
    broken = break_files(root)
    argv = [
        "--dataset",
        root,
        "--label_convention",
        "ade",
        "--model_preset",
        "demo",
        "--output_dir",
        tmp_path / "run",
        "--max_train_steps",
        1,
        "--crop_size",
        64,
        "--train_split",
        ALL_OF_TRAINING,
        "--eval_split",
        ALL_OF_TRAINING,
    ]
    status = run_script("train_maskformer.py", argv)
    err = capsys.readouterr().err
    assert status == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "train_maskformer.py: error: the data check found 5 problem(s) in 5 of 12 items of the 'train[:100%]' split"
    )
    for path in broken.values():
        assert str(path) in err  # each problem on its own line above the error


def test_skip_bad_items_trains_on_the_rest(tmp_path, caplog):
    root = write_official(tmp_path / "coco", {"train2017": 8, "val2017": 3})
    (root / "train2017" / "000000000002.jpg").write_bytes(b"")
    model = save_tiny_model(tmp_path / "tiny")
    argv = train_argv(root, model, tmp_path / "run", 2)
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer"):
        assert run_script("train_maskformer.py", argv) == 2
        assert run_script("train_maskformer.py", [*argv, "--skip_bad_items"]) == 0
    assert "leaving out" in caplog.text and "000000000002.jpg" in caplog.text
    assert len(losses(tmp_path / "run")) == 2


def test_the_benchmark_section_runs(tmp_path):
    """`make bench`'s data_check section, at its tiniest (the figures are in docs/data-coco.md)."""
    output = tmp_path / "bench.json"
    main(["--tiny", "--sections", "data_check", "--output", str(output)])
    section = json.loads(output.read_text())["data_check"]
    assert section["settings"]["num_items"] == 80 and section["seconds"] > 0 and section["cpu_seconds"] > 0
    assert set(section["per_item_ms"]) == {"check (JPEG data at 1/8 scale)", "full decode"}
