"""Semantic masks as labelling tools export them: Pascal VOC, CVAT's "Segmentation mask 1.1" export, colour masks
with --palette; JPEG label files and 0/255 label sets. Each folder is written here in the exporter's exact layout
and driven through scripts/train_maskformer.py and scripts/evaluate_maskformer.py as a user would."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from journeys import EVALUATE, TRAIN, error_line, run, saved_id2label, train_argv, train_then_evaluate
from mask_exports import CVAT_COLOURS, make_voc_folders, write_cvat_export
from PIL import Image

from modeling_maskformer.data import (
    SyntheticShapes,
    build_dataset,
    detect_folder_layout,
    load_ade_folder,
    read_palette,
)
from modeling_maskformer.data.palette import voc_colormap

from tiny_training import save_tiny_model

# Pascal VOC 2012's classes and the colours of its palette PNGs (VOCdevkit's VOCcode/VOClabelcolormap.m), written
# out here as the reference.
VOC_NAMES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_COLOURS = [
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
    (64, 128, 0),
    (192, 128, 0),
    (64, 0, 128),
    (192, 0, 128),
    (64, 128, 128),
    (192, 128, 128),
    (0, 64, 0),
    (128, 64, 0),
    (0, 192, 0),
    (128, 192, 0),
    (0, 64, 128),
]
VOC_VOID = (224, 224, 192)


@pytest.fixture(scope="module")
def shapes():
    return {
        "train": SyntheticShapes("train", 6, image_size=64, seed=3),
        "validation": SyntheticShapes("validation", 2, image_size=64, seed=3),
    }


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def _voc_png(values: np.ndarray) -> Image.Image:
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(VOC_COLOURS)] = VOC_COLOURS
    palette[255] = VOC_VOID
    image.putpalette(palette.reshape(-1).tolist())
    return image


def write_pascal_voc(root: Path, shapes) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 as the VOC 2012 tar unpacks: JPEGImages/, SegmentationClass/ and SegmentationObject/ as
    palette PNGs with VOC's palette (255 = void, drawn on the first row here), ImageSets/Segmentation/{train,val,
    trainval}.txt, Annotations/. The synthetic class c is written as VOC index c + 10 (cat .. train)."""
    make_voc_folders(root)
    expected, lists = {}, {}
    for split, listed in (("train", "train"), ("validation", "val")):
        for item in (shapes[split][i] for i in range(len(shapes[split]))):
            item_id = f"2012_{item['image_id'][-6:]}{'0' if split == 'train' else '1'}"
            values = item["semantic"].astype(np.int64) + 10
            values[0] = 255
            item["image"].save(root / "JPEGImages" / f"{item_id}.jpg", quality=95)
            _voc_png(values).save(root / "SegmentationClass" / f"{item_id}.png")
            _voc_png(np.zeros_like(values)).save(root / "SegmentationObject" / f"{item_id}.png")
            lists.setdefault(listed, []).append(item_id)
            expected[item_id] = values
    lists["trainval"] = lists["train"] + lists["val"]
    for name, ids in lists.items():
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return expected


# -- palettes -------------------------------------------------------------------------------------------------


def test_voc_colormap_is_pascal_vocs():
    colormap = voc_colormap(256)
    assert colormap[:21].tolist() == [list(c) for c in VOC_COLOURS] and tuple(colormap[255]) == VOC_VOID


def test_palette_decoding_equals_a_per_pixel_lookup(tmp_path):
    path = tmp_path / "palette.json"
    path.write_text(json.dumps({"road": [128, 64, 128], "car": [[0, 0, 142], [0, 0, 70]], "__ignore__": [0, 0, 0]}))
    palette = read_palette(path)
    assert palette.names == ["road", "car"]
    rng = np.random.default_rng(0)
    colours = [(128, 64, 128), (0, 0, 142), (0, 0, 70), (0, 0, 0)]
    mask = np.array(colours, dtype=np.uint8)[rng.integers(0, 4, (37, 53))]
    reference = {(128, 64, 128): 0, (0, 0, 142): 1, (0, 0, 70): 1, (0, 0, 0): 255}
    expected = np.array([[reference[tuple(int(c) for c in pixel)] for pixel in row] for row in mask])
    np.testing.assert_array_equal(palette.decode(Image.fromarray(mask), source="m.png"), expected)
    mask[3, 4:7] = (1, 2, 3)
    mask[5, 5] = (9, 9, 9)
    with pytest.raises(
        ValueError,
        match=r"m.png: 3 pixels have colour \(1, 2, 3\), which .*palette.json does not list "
        r"and 1 other unlisted colour\(s\), 1 pixels.*__unlisted__",
    ):
        palette.decode(mask, source="m.png")
    path.write_text(json.dumps({"road": [128, 64, 128], "car": [0, 0, 142], "__unlisted__": "ignore"}))
    assert read_palette(path).decode(mask, source="m.png")[3, 4] == 255


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": [1, 2, 3], "b": [1, 2, 3]}', r"colour \(1, 2, 3\) is given to both 'a' and 'b'"),
        ('{"a": [1, 2]}', r"'a' must be a colour \[r, g, b\]"),
        ('{"a": [1, 2, 300]}', r"colour \[1, 2, 300\] is not three integers 0..255"),
        ("# label:color_rgb:parts:actions\ncat:1,2,3\n", r"line 2: expected 'name:r,g,b:parts:actions'"),
        ("cat:1,2,3::\ndog:::\n", r"label 'dog' has no colour while others have one"),
        ("cat:1,2,3::\ncat:4,5,6::\n", r"class 'cat' is listed twice"),
    ],
)
def test_bad_palette_files_are_named(tmp_path, text, message):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_palette(tmp_path / "p.txt")


def test_a_labelmap_without_colours_gets_vocs_colours_as_datumaro_does(tmp_path):
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:::\ncat:::\n")
    palette = read_palette(tmp_path / "labelmap.txt")
    assert palette.colors == [((0, 0, 0), 0), ((128, 0, 0), 1)]


# -- CVAT "Segmentation mask 1.1" -------------------------------------------------------------------------------


def test_cvat_export_classes_come_from_the_labelmap(shapes, tmp_path, caplog):
    expected = write_cvat_export(tmp_path / "cvat", shapes, {"Train": "train", "Validation": "validation"})
    assert detect_folder_layout(tmp_path / "cvat") == "cvat_mask"
    train = build_dataset(tmp_path / "cvat", "train")
    assert list(train.id2label.values()) == sorted(["background", *CVAT_COLOURS])  # labelmap order, background first
    assert train.reduce_labels is False and len(train) == 6 and train.task == "semantic"
    for index in range(len(train)):
        item = train[index]
        np.testing.assert_array_equal(item["semantic"], expected[item["image_id"]])
    assert len(build_dataset(tmp_path / "cvat", "val")) == 2  # CVAT's "Validation" subset
    with pytest.raises(ValueError, match="colour masks name their classes.*does not apply"):
        build_dataset(tmp_path / "cvat", "train", reduce_labels=True)
    # A task without subsets exports ImageSets/Segmentation/default.txt: 15% of it is held out, with a log line.
    write_cvat_export(tmp_path / "one", shapes, {"default": "train"})
    with caplog.at_level(logging.INFO):
        parts = [build_dataset(tmp_path / "one", split) for split in ("train", "validation")]
    assert [len(p) for p in parts] == [5, 1] and not set(parts[0].ids) & set(parts[1].ids)
    assert "no validation split (only ['default']), so 15% of 'default' (seed 0) are held out" in caplog.text
    assert [len(build_dataset(tmp_path / "one", s, train_val_split=0.5)) for s in ("train", "val")] == [3, 3]


def test_cvat_export_without_images_says_to_tick_save_images(shapes, tmp_path):
    write_cvat_export(tmp_path, shapes, {"default": "validation"})
    for image in (tmp_path / "JPEGImages").iterdir():
        image.unlink()
    with pytest.raises(FileNotFoundError, match="no images in .*JPEGImages. CVAT writes them only when 'Save images'"):
        build_dataset(tmp_path, "default")


def _data_line(log: str) -> str:
    """The training run's line about its data (one)."""
    (line,) = [line for line in log.splitlines() if " data " in line and "annotations" in line]
    return line


def test_cvat_journey_train_and_evaluate(shapes, tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    write_cvat_export(tmp_path / "cvat", shapes, {"Train": "train", "Validation": "validation"})
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        results = train_then_evaluate(tiny_folder, tmp_path / "cvat", tmp_path, monkeypatch, capsys)
    # No flag was given, and none applies: the line says what fixed the labels (not "--label_convention as_is").
    labelmap = tmp_path / "cvat" / "labelmap.txt"
    assert f"semantic annotations, labels as the colours of {labelmap} defines them" in _data_line(caplog.text)
    assert "--label_convention as_is" not in caplog.text
    training = caplog.text.split("stopping at step")[0]  # the training run's lines (evaluation says it again)
    (classes,) = [line for line in training.splitlines() if "'Segmentation mask' export" in line]
    assert classes.endswith(
        "10 classes from " + str(labelmap) + " (background, circle, ellipse, grass, hexagon, sand, ...)"
    )
    names = sorted(["background", *CVAT_COLOURS])
    assert list(saved_id2label(tmp_path / "model").values()) == names
    assert set(results["semantic"]["per_class_iou"]) == set(names) and 0 <= results["semantic"]["mean_iou"] <= 1


# -- Pascal VOC -------------------------------------------------------------------------------------------------


def test_pascal_voc_is_recognised_and_named(shapes, tmp_path, caplog):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    expected = write_pascal_voc(root, shapes)
    with caplog.at_level(logging.INFO):
        train = build_dataset(root, "train")
    assert list(train.id2label.values()) == VOC_NAMES and train.thing_ids == list(range(1, 21))
    assert "Pascal VOC (a folder named like VOC2012 whose masks carry VOC's palette): its 21 classes" in caplog.text
    item = train[1]
    np.testing.assert_array_equal(item["semantic"], expected[item["image_id"]])
    assert [len(build_dataset(root, s)) for s in ("val", "trainval", "train[:50%]")] == [2, 8, 3]
    validation = build_dataset(root, "val", id2label=train.id2label)  # as the training loop reads its eval split
    assert validation.thing_ids == train.thing_ids
    reduced = build_dataset(root, "val", reduce_labels=True)  # explicit: background ignored, names shift
    assert reduced.id2label[0] == "aeroplane" and reduced.num_labels == 20
    np.testing.assert_array_equal(
        reduced[0]["semantic"],
        np.where(expected[reduced[0]["image_id"]] == 255, 255, expected[reduced[0]["image_id"]] - 1),
    )


def test_a_voc_layout_without_names_asks_for_them(shapes, tmp_path):
    write_pascal_voc(tmp_path / "my_export", shapes)
    with pytest.raises(ValueError, match=r"no class names .*not Pascal VOC itself.*pass --id2label FILE"):
        build_dataset(tmp_path / "my_export", "train")
    (tmp_path / "names.json").write_text(json.dumps({str(i): f"class {i}" for i in range(19)}))
    assert build_dataset(tmp_path / "my_export", "train", id2label_file=tmp_path / "names.json").num_labels == 19
    # A colour mask in a VOC layout without labelmap.txt points at --palette.
    mask = tmp_path / "my_export" / "SegmentationClass" / "2012_0000000.png"
    Image.open(mask).convert("RGB").save(mask)
    with pytest.raises(
        ValueError, match=r"2012_0000000.png: colour mask \(mode RGB\) and no labelmap.txt.*--palette FILE"
    ):
        build_dataset(tmp_path / "my_export", "train")


def test_pascal_voc_journey_train_and_evaluate(shapes, tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    write_pascal_voc(tmp_path / "VOC2012", shapes)
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        results = train_then_evaluate(tiny_folder, tmp_path / "VOC2012", tmp_path, monkeypatch, capsys)
    assert "semantic annotations, labels as VOC's format (255 = void) defines them" in _data_line(caplog.text)
    assert "--label_convention as_is" not in caplog.text
    assert list(saved_id2label(tmp_path / "model").values()) == VOC_NAMES
    assert set(results["semantic"]["per_class_iou"]) == set(VOC_NAMES)


# -- colour masks with --palette ----------------------------------------------------------------------------------


def _ade_colour_folder(root: Path, shapes, colours: dict[str, tuple]) -> None:
    for split, folder in (("train", "training"), ("validation", "validation")):
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for item in (shapes[split][i] for i in range(len(shapes[split]))):
            table = np.array([colours[shapes[split].id2label[c]] for c in range(9)], dtype=np.uint8)
            item["image"].save(root / "images" / folder / f"{item['image_id']}.jpg")
            Image.fromarray(table[item["semantic"]]).save(root / "annotations" / folder / f"{item['image_id']}.png")


def test_palette_journey_on_an_ade_like_folder_of_colour_masks(
    shapes, tiny_folder, tmp_path, monkeypatch, capsys, caplog
):
    _ade_colour_folder(tmp_path / "data", shapes, CVAT_COLOURS)
    code, err = run(
        TRAIN,
        *train_argv(tiny_folder, tmp_path / "data", tmp_path / "x"),
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    line = error_line(TRAIN, err)
    assert code == 2 and "annotations/training/train_000000.png: semantic annotation has mode RGB" in line
    assert "pass --palette FILE" in line
    palette = {name: list(colour) for name, colour in CVAT_COLOURS.items()}
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        results = train_then_evaluate(
            tiny_folder, tmp_path / "data", tmp_path, monkeypatch, capsys, "--palette", tmp_path / "palette.json"
        )
    line = _data_line(caplog.text)
    assert (
        f"labels as the colours of {tmp_path / 'palette.json'} defines them" in line
        and "--label_convention as_is" not in line
    )
    assert list(saved_id2label(tmp_path / "model").values()) == list(CVAT_COLOURS)
    assert set(results["semantic"]["per_class_iou"]) == set(CVAT_COLOURS)
    dataset = build_dataset(tmp_path / "data", "validation", palette=tmp_path / "palette.json")
    np.testing.assert_array_equal(dataset[0]["semantic"], shapes["validation"][0]["semantic"])
    # A colour missing from the palette: one line naming the file, the colour and its pixel count.
    palette["sky"] = [1, 2, 3]
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    code, err = run(
        EVALUATE,
        "--model",
        tmp_path / "model",
        "--dataset",
        tmp_path / "data",
        "--palette",
        tmp_path / "palette.json",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    line = error_line(EVALUATE, err)
    assert code == 2 and "validation_00000" in line and "pixels have colour (51, 221, 255), which" in line


# -- JPEG labels and 0/255 label sets --------------------------------------------------------------------------


def test_jpeg_labels_are_refused_with_the_reason(shapes, tiny_folder, tmp_path, monkeypatch, capsys):
    shapes["validation"].export_ade_folder(tmp_path / "ade")
    for png in (tmp_path / "ade" / "annotations" / "validation").iterdir():
        Image.open(png).save(png.with_suffix(".jpg"))
        png.unlink()
    code, err = run(
        EVALUATE,
        "--model",
        tiny_folder,
        "--dataset",
        tmp_path / "ade",
        "--label_convention",
        "ade",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    line = error_line(EVALUATE, err)
    assert (
        code == 2
        and "validation_000000.jpg (2 of the 2 annotations are JPEG): label file is JPEG, whose lossy" in line
    )
    write_pascal_voc(tmp_path / "VOC2012", shapes)
    mask = tmp_path / "VOC2012" / "SegmentationClass" / "2012_0000001.png"
    Image.open(mask).convert("L").save(mask.with_suffix(".jpg"))
    mask.unlink()
    with pytest.raises(ValueError, match=r"2012_0000001.jpg \(1 of the 8 masks are JPEG\): label file is JPEG"):
        build_dataset(tmp_path / "VOC2012", "trainval")


def test_binary_masks_saved_as_0_and_255_are_warned_about(tmp_path, caplog):
    for folder in ("images", "annotations"):
        (tmp_path / folder).mkdir()
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 255
    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{name}.jpg")
        Image.fromarray(mask).save(tmp_path / "annotations" / f"{name}.png")
    with caplog.at_level(logging.WARNING):
        load_ade_folder(tmp_path, reduce_labels=False, num_labels=1)
    assert "the label maps hold only the values 0 and 255; 255 means 'ignored'" in caplog.text
    assert "map 255 to 1" in caplog.text and "--palette" in caplog.text
    # The palette the warning suggests reads them as two classes.
    (tmp_path / "binary.json").write_text(json.dumps({"background": [0, 0, 0], "object": [255, 255, 255]}))
    dataset = load_ade_folder(tmp_path, palette=tmp_path / "binary.json")
    np.testing.assert_array_equal(dataset[0]["semantic"], mask // 255)
