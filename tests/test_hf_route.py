"""The `datasets` route: --image_column / --label_column / --id2label, id2label.json from a dataset repo (a local
folder in the Hub's layout, and huggingface_hub's own download from an offline cache), held-out validation splits
and slices, and transformers' instance-segmentation example format, through the command-line programs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
from journeys import EVALUATE, error_line, run, saved_id2label, train_then_evaluate
from PIL import Image

from modeling_maskformer.data import SyntheticShapes, build_dataset, load_hf_dataset, rgb_to_id
from modeling_maskformer.data.class_names import names_for_convention, read_id2label_file
from modeling_maskformer.data.hf import fetch_hub_id2label
from modeling_maskformer.data.splits import holdout_indices, plan_split
from modeling_maskformer.training.loop import describe_labels

from tiny_training import save_tiny_model

NAMES = ["circle", "square", "triangle", "star", "ellipse", "hexagon", "sky", "grass", "sand"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`datasets` prepares local folders into its cache: a temporary one, not the user's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def shapes():
    return SyntheticShapes("train", 10, image_size=64, seed=11)


def write_hub_semantic(root: Path, shapes, image_column="pixel_values", label_column="label") -> Path:
    """A semantic dataset repo as the Hub holds one exported by a labelling tool (like segments/sidewalk-semantic):
    one split in data/train-00000-of-00001.parquet, id2label.json at the root keyed by pixel value, 0 = "unlabeled"
    (drawn on the first row), class c at pixel value c + 1."""
    images, labels = [], []
    for i in range(len(shapes)):
        item = shapes[i]
        values = item["semantic"].astype(np.uint8) + 1
        values[0] = 0
        images.append(item["image"])
        labels.append(Image.fromarray(values))
    table = datasets.Dataset.from_dict({image_column: images, label_column: labels})
    (root / "data").mkdir(parents=True)
    table.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    id2label = {"0": "unlabeled", **{str(c + 1): name for c, name in enumerate(NAMES)}}
    (root / "id2label.json").write_text(json.dumps(id2label, indent=2))
    return root


def instance_annotation(item, thing_ids) -> tuple[Image.Image, dict]:
    """transformers' instance format: R = class (0 = background, thing class t at t + 1), G = instance id 1..N,
    B = 0; stuff pixels are background. Returns the image and {instance id: class id} of the things."""
    rgb = np.zeros((*item["semantic"].shape, 3), dtype=np.uint8)
    panoptic = item["panoptic"].astype(np.int64)
    ids = panoptic[..., 0] + 256 * panoptic[..., 1] + 65536 * panoptic[..., 2]
    instances = {}
    for segment in item["segments_info"]:
        if segment["category_id"] in thing_ids:
            instance = len(instances) + 1
            rgb[ids == segment["id"], 0] = segment["category_id"] + 1
            rgb[ids == segment["id"], 1] = instance
            instances[instance] = segment["category_id"]
    return Image.fromarray(rgb), instances


def write_instance_dataset(root: Path, seed=5) -> dict[str, list[dict]]:
    """A dataset in the format of transformers' run_instance_segmentation.py (its README's script, written as parquet
    files in the Hub's layout): image, annotation, semantic_class_to_id {"background": 0, thing: 1..}."""
    truth = {}
    for split, count in (("train", 6), ("validation", 2)):
        synthetic = SyntheticShapes(split, count, image_size=64, seed=seed)
        label2id = {"background": 0, **{synthetic.id2label[t]: t + 1 for t in synthetic.thing_ids}}
        rows = {"image": [], "annotation": [], "semantic_class_to_id": []}
        truth[split] = []
        for i in range(count):
            item = synthetic[i]
            annotation, instances = instance_annotation(item, synthetic.thing_ids)
            rows["image"].append(item["image"])
            rows["annotation"].append(annotation)
            rows["semantic_class_to_id"].append(label2id)
            truth[split].append(instances)
        table = (
            datasets.Dataset.from_dict(rows)
            .cast_column("image", datasets.Image())
            .cast_column("annotation", datasets.Image())
        )
        (root / "data").mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return truth


# -- splits ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count, fraction", [(10, 0.15), (7, 0.5), (100, 0.2)])
def test_the_held_out_split_is_the_one_datasets_takes(count, fraction):
    table = datasets.Dataset.from_dict({"i": list(range(count))})
    reference = table.train_test_split(test_size=fraction, seed=0)
    train, held_out = holdout_indices(count, fraction)
    assert sorted(reference["train"]["i"]) == train.tolist() and sorted(reference["test"]["i"]) == held_out.tolist()


def test_split_names_slices_and_their_errors():
    assert plan_split("val", ["Train", "Validation"], None, "d").subset == "Validation"
    assert plan_split("train[80%:]", ["train"], None, "d").select(10) == range(8, 10)
    with pytest.raises(ValueError, match=r"either a sliced split \('train\[:5\]'\) or --train_val_split"):
        plan_split("train[:5]", ["train"], 0.2, "d")
    with pytest.raises(ValueError, match=r"d: no split 'test'; it has \['train'\]. Pass one of those names"):
        plan_split("test", ["train"], None, "d")
    with pytest.raises(ValueError, match="--train_val_split must be a fraction between 0 and 1"):
        plan_split("train", ["train"], 1.5, "d")


def test_a_train_only_repo_is_split_and_sliced(shapes, tmp_path, caplog):
    root = write_hub_semantic(tmp_path / "repo", shapes)
    with caplog.at_level(logging.INFO):
        train, validation = (load_hf_dataset(root, s, reduce_labels=True) for s in ("train", "validation"))
    assert (len(train), len(validation)) == (8, 2)  # ceil(15% of 10) held out, seed 0
    assert "no validation split (only ['train']), so 15% of 'train' (seed 0) are held out" in caplog.text
    assert [
        len(load_hf_dataset(root, s, reduce_labels=True)) for s in ("train[:80%]", "train[80%:]", "train[:3]")
    ] == [8, 2, 3]
    assert len(load_hf_dataset(root, "validation", reduce_labels=True, train_val_split=0.5)) == 5


def test_jpeg_labels_in_a_dataset_are_refused_with_the_reason():
    def jpeg(values):
        buffer = io.BytesIO()
        Image.fromarray(values).save(buffer, format="JPEG")
        return {"bytes": buffer.getvalue(), "path": None}

    values = np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2), np.ones((8, 8), dtype=np.uint8))
    table = datasets.Dataset.from_dict({"image": [Image.new("RGB", (16, 16))] * 3, "label": [jpeg(values)] * 3})
    table = table.cast_column("label", datasets.Image())
    with pytest.raises(ValueError, match=r"the dataset, row 0: label file is JPEG, whose lossy compression changes"):
        load_hf_dataset(table, reduce_labels=False, num_labels=4)


# -- id2label -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"0": "a", "2": "b"}, r"contiguous 0..1; missing \[1\], extra \[2\]"),
        ({"0": "a", "1": "a"}, r"class name\(s\) \['a'\] are used for more than one id"),
        ({"zero": "a"}, r"key 'zero' is not a class id"),
        ({"0": ""}, r"the name of class 0 must be a non-empty string"),
    ],
)
def test_id2label_files_are_checked(tmp_path, payload, message):
    (tmp_path / "id2label.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=message):
        read_id2label_file(tmp_path / "id2label.json")


def test_a_pixel_keyed_id2label_does_not_shift_names_under_ade(caplog):
    ade_hub_file = {
        0: "wall",
        1: "building",
        2: "sky",
    }  # huggingface/label-files ade20k-id2label.json: class ids
    sidewalk_file = {
        0: "unlabeled",
        1: "flat-road",
        2: "flat-sidewalk",
    }  # segments/sidewalk-semantic: pixel values
    with caplog.at_level(logging.INFO):
        assert names_for_convention(ade_hub_file, True, "a.json") == ade_hub_file
        assert names_for_convention(sidewalk_file, True, "s.json") == {0: "flat-road", 1: "flat-sidewalk"}
    assert "s.json is keyed by pixel value (entry 0 is 'unlabeled'" in caplog.text
    assert "a.json is keyed by class id (entry 0 is 'wall'" in caplog.text
    assert names_for_convention(sidewalk_file, False, "s.json") == sidewalk_file


def test_hub_id2label_is_fetched_with_huggingface_hub(tmp_path, monkeypatch, caplog):
    """hf_hub_download's real code path, offline, from a cache folder in huggingface_hub's layout."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "datasets--someone--sidewalk"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "id2label.json").write_text(json.dumps({"0": "unlabeled", "1": "road"}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert fetch_hub_id2label("someone/sidewalk") == {0: "unlabeled", 1: "road"}
    with caplog.at_level(logging.WARNING):
        assert fetch_hub_id2label("someone/other") is None
    assert "dataset someone/other: could not fetch id2label.json from the Hub" in caplog.text


# -- journeys -------------------------------------------------------------------------------------------------


def test_hub_layout_journey_with_a_pixel_keyed_id2label(shapes, tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    root = write_hub_semantic(tmp_path / "sidewalk", shapes)
    with caplog.at_level(logging.INFO):
        results = train_then_evaluate(tiny_folder, root, tmp_path, monkeypatch, capsys, "--label_convention", "ade")
    assert list(saved_id2label(tmp_path / "model").values()) == NAMES  # not shifted by one
    assert "keyed by pixel value (entry 0 is 'unlabeled'" in caplog.text and "are held out" in caplog.text
    assert set(results["semantic"]["per_class_iou"]) == set(NAMES)


def test_column_flags_and_their_errors(shapes, tiny_folder, tmp_path, monkeypatch, capsys):
    root = write_hub_semantic(tmp_path / "repo", shapes, image_column="photo", label_column="gt")
    code, err = run(
        EVALUATE,
        "--model",
        tiny_folder,
        "--dataset",
        root,
        "--label_convention",
        "as_is",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    line = error_line(EVALUATE, err)
    assert code == 2 and "columns are ['photo', 'gt']. Name it with --image_column COLUMN" in line
    dataset = build_dataset(root, "validation", image_column="photo", label_column="gt", reduce_labels=False)
    assert dataset.num_labels == 10 and dataset.id2label[0] == "unlabeled"
    (tmp_path / "bad.json").write_text(json.dumps({"0": "a", "1": "a"}))
    code, err = run(
        EVALUATE,
        "--model",
        tiny_folder,
        "--dataset",
        root,
        "--image_column",
        "photo",
        "--label_column",
        "gt",
        "--id2label",
        tmp_path / "bad.json",
        "--label_convention",
        "as_is",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and "bad.json: class name(s) ['a'] are used for more than one id" in error_line(EVALUATE, err)
    code, err = run(
        EVALUATE,
        "--model",
        "unused",
        "--dataset",
        "synthetic",
        "--image_column",
        "photo",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and "--image_column does not apply to synthetic" in error_line(EVALUATE, err)
    code, err = run(
        EVALUATE,
        "--model",
        tiny_folder,
        "--dataset",
        root,
        "--split",
        "test",
        "--image_column",
        "photo",
        "--label_column",
        "gt",
        "--label_convention",
        "as_is",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and "no split 'test'; it has ['train']" in error_line(EVALUATE, err)


def test_instance_format_of_transformers_example(tmp_path):
    truth = write_instance_dataset(tmp_path / "mini")
    synthetic = SyntheticShapes("validation", 1)
    things = [synthetic.id2label[t] for t in synthetic.thing_ids]
    reduced = build_dataset(tmp_path / "mini", "validation", reduce_labels=True)  # the example's --do_reduce_labels
    assert reduced.task == "panoptic" and list(reduced.id2label.values()) == things
    assert reduced.thing_ids == list(range(len(things)))
    item, reference = reduced[1], SyntheticShapes("validation", 2, image_size=64, seed=5)[1]
    reference_ids = rgb_to_id(reference["panoptic"])
    expected = sorted(
        (s["category_id"], (reference_ids == s["id"]).sum())
        for s in reference["segments_info"]
        if s["category_id"] in synthetic.thing_ids
    )
    found = sorted((s["category_id"], (item["panoptic_ids"] == s["id"]).sum()) for s in item["segments_info"])
    assert found == expected and len(found) == len(truth["validation"][1])
    for segment in reference["segments_info"]:  # each thing of the scene is one segment, pixel for pixel
        if segment["category_id"] in synthetic.thing_ids:
            ids = np.unique(item["panoptic_ids"][reference_ids == segment["id"]])
            assert len(ids) == 1 and ((item["panoptic_ids"] == ids[0]) == (reference_ids == segment["id"])).all()
    as_is = build_dataset(tmp_path / "mini", "validation", reduce_labels=False)
    assert as_is.id2label[0] == "background" and as_is.thing_ids == list(range(1, len(things) + 1))
    background = [s for s in as_is[1]["segments_info"] if s["category_id"] == 0]
    assert len(background) == 1 and len(as_is[1]["segments_info"]) == len(truth["validation"][1]) + 1


def test_instance_format_journey(tiny_folder, tmp_path, monkeypatch, capsys, caplog):
    write_instance_dataset(tmp_path / "mini")
    with caplog.at_level(logging.INFO, logger="modeling_maskformer"):
        results = train_then_evaluate(
            tiny_folder, tmp_path / "mini", tmp_path, monkeypatch, capsys, "--label_convention", "ade"
        )
    # The flag decides this format's classes (class 0 dropped, 6 things): the data line says so, nothing says unused.
    assert (
        "panoptic annotations, ADE convention (--label_convention ade): class channel 0 = 'other', ignored; "
        "class channel k = class k-1; 6 classes (circle, "
    ) in caplog.text
    assert "6 of them things" in caplog.text and "is not used" not in caplog.text
    as_is = describe_labels(build_dataset(tmp_path / "mini", "validation", reduce_labels=False), "as_is")
    assert (
        as_is.startswith(
            "panoptic annotations, labels as they are (--label_convention as_is): class channel k = "
            "class k; 7 classes (background, "
        )
        and "6 of them things" in as_is
    )
    assert "pq" in results["panoptic"] and "ap" in results["instance"]
    assert list(saved_id2label(tmp_path / "model").values()) == [
        "circle",
        "square",
        "triangle",
        "star",
        "ellipse",
        "hexagon",
    ]


def test_the_flags_reach_the_loaders(shapes, tmp_path):
    from modeling_maskformer.training import parse_args
    from modeling_maskformer.training.loop import dataset_kwargs

    root = write_hub_semantic(tmp_path / "repo", shapes)
    flags = [
        "--image_column",
        "pixel_values",
        "--label_column",
        "label",
        "--id2label",
        "names.json",
        "--palette",
        "p.json",
        "--train_val_split",
        "0.3",
    ]
    args = parse_args(["--dataset", str(root), "--output_dir", "x", "--max_train_steps", "1", *flags])
    assert dataset_kwargs(args, "train") == {
        "image_column": "pixel_values",
        "label_column": "label",
        "id2label_file": "names.json",
        "palette": "p.json",
        "train_val_split": 0.3,
        "reduce_labels": None,
    }
    shapes.export_ade_folder(tmp_path / "ade")
    args = parse_args(
        [
            "--dataset",
            str(tmp_path / "ade"),
            "--output_dir",
            "x",
            "--max_train_steps",
            "1",
            "--train_val_split",
            "0.3",
            "--label_convention",
            "ade",
        ]
    )
    assert dataset_kwargs(args, "train") == {"train_val_split": 0.3, "reduce_labels": True}
    args.image_root = "images"
    with pytest.raises(
        ValueError,
        match=r"--image_root does not apply to .*ade \(a ade dataset\); it applies to "
        r"coco_json data",
    ):
        dataset_kwargs(args, "train")


def test_colour_masks_in_a_dataset_with_a_palette(shapes, tmp_path):
    colours = np.array([[25 * c, 255 - 20 * c, 7 * c] for c in range(9)], dtype=np.uint8)
    rows = {
        "image": [shapes[i]["image"] for i in range(3)],
        "mask": [Image.fromarray(colours[shapes[i]["semantic"]]) for i in range(3)],
    }
    (tmp_path / "palette.json").write_text(json.dumps({name: colours[c].tolist() for c, name in enumerate(NAMES)}))
    dataset = load_hf_dataset(datasets.Dataset.from_dict(rows), palette=tmp_path / "palette.json", reduce_labels=None)
    assert list(dataset.id2label.values()) == NAMES
    np.testing.assert_array_equal(dataset[2]["semantic"], shapes[2]["semantic"])
    with pytest.raises(ValueError, match=r"row 0 \(image_id 0\): semantic annotation has mode RGB.*--palette FILE"):
        load_hf_dataset(datasets.Dataset.from_dict(rows), reduce_labels=False, num_labels=9)[0]
