"""Dataset loaders: every source yields the same item format; malformed folders fail naming the file."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from modeling_maskformer.data import (
    SyntheticShapes,
    build_dataset,
    id_to_rgb,
    load_ade_folder,
    load_coco_panoptic_folder,
    load_hf_dataset,
    load_synthetic,
    rgb_to_id,
    to_instance_targets,
)

ITEM_KEYS = {"image", "semantic", "panoptic_ids", "segments_info", "image_id"}


@pytest.fixture(scope="module")
def shapes():
    return {
        "train": SyntheticShapes("train", 3, seed=5),
        "validation": SyntheticShapes("validation", 2, seed=5),
    }


@pytest.fixture(scope="module")
def exported(shapes, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    for ds in shapes.values():
        ds.export_ade_folder(root / "ade")
        ds.export_coco_panoptic_folder(root / "coco")
    return root


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / src.name)


# -- well-formed sources ---------------------------------------------------------------------------


def test_ade_folder_round_trip(exported, shapes):
    for split, n in (("train", 3), ("validation", 2), ("val", 2)):
        ds = load_ade_folder(exported / "ade", split, reduce_labels=True)
        assert len(ds) == n and ds.reduce_labels and ds.ignore_index == 255 and ds.task == "semantic"
        assert ds.id2label == shapes["train"].id2label  # from id2label.json
        item = ds[n - 1]
        assert set(item) == ITEM_KEYS and item["image"].mode == "RGB"
        assert item["panoptic_ids"] is None and item["segments_info"] is None
        np.testing.assert_array_equal(
            item["semantic"], shapes["train" if split == "train" else "validation"][n - 1]["semantic"]
        )
    assert len(list(ds)) == 2


def test_ade_reduce_labels_and_flat_layout_and_object_info(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", (4, 2)).save(tmp_path / "images/a.jpg")
    Image.fromarray(np.array([[0, 1, 2, 255], [3, 3, 1, 0]], dtype=np.uint8)).save(tmp_path / "annotations/a.png")
    (tmp_path / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n2,0.1,1,1,building;edifice\n3,0.1,1,1,sky\n"
    )
    ds = load_ade_folder(tmp_path, "all", reduce_labels=True)  # flat layout: one subset, "all"
    assert ds.id2label == {0: "wall", 1: "building", 2: "sky"}
    # 0 ("other") -> 255, k -> k - 1, an existing 255 stays 255.
    np.testing.assert_array_equal(ds[0]["semantic"], [[255, 0, 1, 255], [2, 2, 0, 255]])
    (tmp_path / "objectInfo150.csv").unlink()
    assert load_ade_folder(tmp_path, "all", reduce_labels=True).id2label == {
        0: "0",
        1: "1",
        2: "2",
    }  # scanned: largest raw label 3
    raw = load_ade_folder(tmp_path, "all", reduce_labels=False, num_labels=4)
    np.testing.assert_array_equal(raw[0]["semantic"], [[0, 1, 2, 255], [3, 3, 1, 0]])


def test_coco_panoptic_folder_round_trip(exported, shapes):
    ds = load_coco_panoptic_folder(exported / "coco", "validation")
    assert len(ds) == 2 and ds.task == "panoptic"
    assert ds.id2label == shapes["validation"].id2label and ds.thing_ids == shapes["validation"].thing_ids
    item, reference = ds[1], shapes["validation"][1]
    np.testing.assert_array_equal(item["panoptic_ids"], rgb_to_id(reference["panoptic"]))
    np.testing.assert_array_equal(item["semantic"], reference["semantic"])
    assert item["segments_info"] == reference["segments_info"]
    explicit = load_coco_panoptic_folder(
        images_dir=exported / "coco/train2017",
        json_path=exported / "coco/annotations/panoptic_train2017.json",
        png_dir=exported / "coco/annotations/panoptic_train2017",
    )
    assert len(explicit) == 3 and len(list(explicit)) == 3


def _write_coco(root, *, categories, segments_info, ids, image_size=None, split="val2017"):
    """A one-image COCO panoptic folder written by hand."""
    (root / split).mkdir(parents=True)
    (root / "annotations" / f"panoptic_{split}").mkdir(parents=True)
    h, w = ids.shape
    Image.new("RGB", image_size or (w, h), (9, 9, 9)).save(root / split / "x.jpg")
    Image.fromarray(id_to_rgb(ids)).save(root / "annotations" / f"panoptic_{split}" / "x.png")
    payload = {
        "images": [{"id": 7, "file_name": "x.jpg", "height": h, "width": w}],
        "annotations": [{"image_id": 7, "file_name": "x.png", "segments_info": segments_info}],
        "categories": categories,
    }
    (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(payload))
    return root


SPARSE_CATEGORIES = [
    {"id": 23, "name": "bear", "isthing": 1, "color": [1, 2, 3]},
    {"id": 7, "name": "train", "isthing": 1, "color": [4, 5, 6]},
    {"id": 187, "name": "grass", "isthing": 0, "color": [7, 8, 9]},
]
IDS = np.array([[0, 300, 300], [70000, 70000, 5]])
SEGMENTS = [
    {"id": 300, "category_id": 23, "iscrowd": 0, "area": 2, "bbox": [1, 0, 2, 1]},
    {"id": 70000, "category_id": 187, "iscrowd": 0, "area": 2, "bbox": [0, 1, 2, 1]},
    {"id": 5, "category_id": 7, "iscrowd": 1, "area": 1, "bbox": [2, 1, 1, 1]},
]


def test_coco_sparse_category_ids_become_contiguous(tmp_path):
    ds = load_coco_panoptic_folder(
        _write_coco(tmp_path, categories=SPARSE_CATEGORIES, segments_info=SEGMENTS, ids=IDS), "val"
    )
    assert ds.id2label == {0: "train", 1: "bear", 2: "grass"} and ds.thing_ids == [0, 1]
    assert ds.label_to_category_id == {0: 7, 1: 23, 2: 187}
    item = ds[0]
    assert [s["category_id"] for s in item["segments_info"]] == [1, 2, 0]
    np.testing.assert_array_equal(item["panoptic_ids"], IDS)
    np.testing.assert_array_equal(item["semantic"], [[255, 1, 1], [2, 2, 0]])  # void -> 255, crowd keeps class

    instance_map, mapping = to_instance_targets(item)
    np.testing.assert_array_equal(instance_map, [[255, 1, 1], [2, 2, 255]])  # void and crowd ignored
    assert mapping == {1: 1, 2: 2}


def test_hf_semantic_dataset(shapes, tmp_path):
    hf = shapes["train"].to_hf_dataset("semantic")
    ds = load_hf_dataset(hf, "train", id2label=shapes["train"].id2label, reduce_labels=True)
    assert ds.task == "semantic" and len(ds) == 3 and ds.num_labels == 9
    np.testing.assert_array_equal(ds[2]["semantic"], shapes["train"][2]["semantic"])
    # A save_to_disk folder is detected by build_dataset; without id2label the labels are scanned.
    hf.save_to_disk(tmp_path / "hf_sem")
    from_disk = build_dataset(str(tmp_path / "hf_sem"), "train", num_labels=9, reduce_labels=True)
    np.testing.assert_array_equal(from_disk[0]["semantic"], shapes["train"][0]["semantic"])


def test_hf_panoptic_dataset_dict_with_val_split(shapes, tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": shapes["train"].to_hf_dataset("panoptic"),
            "val": shapes["validation"].to_hf_dataset("panoptic"),
        }
    )
    dd.save_to_disk(tmp_path / "hf_pan")
    (tmp_path / "hf_pan/categories.json").write_text(json.dumps(shapes["train"].categories))
    ds = build_dataset(tmp_path / "hf_pan", "validation")
    assert ds.task == "panoptic" and len(ds) == 2 and ds.thing_ids == shapes["train"].thing_ids
    item, reference = ds[1], shapes["validation"][1]
    assert item["image_id"] == "validation_000001"
    np.testing.assert_array_equal(item["panoptic_ids"], rgb_to_id(reference["panoptic"]))
    np.testing.assert_array_equal(item["semantic"], reference["semantic"])
    # Without categories.json the ClassLabel names still give id2label.
    plain = load_hf_dataset(dd, "train")
    assert plain.id2label == shapes["train"].id2label and plain.thing_ids == []


def test_hf_parquet_folder_with_val_split_name(shapes, tmp_path):
    # datasets names a "val.parquet" file's split "validation"; either spelling finds it.
    shapes["validation"].to_hf_dataset("panoptic").to_parquet(str(tmp_path / "data/val.parquet"))
    shapes["train"].to_hf_dataset("panoptic").to_parquet(str(tmp_path / "data/train.parquet"))
    for split in ("val", "validation"):
        ds = build_dataset(tmp_path / "data", split, cache_dir=str(tmp_path / "cache"))
        assert len(ds) == 2 and ds.task == "panoptic" and ds.id2label == shapes["validation"].id2label
    np.testing.assert_array_equal(ds[0]["semantic"], shapes["validation"][0]["semantic"])


def test_hf_unknown_columns_error_lists_them():
    import datasets

    hf = datasets.Dataset.from_dict({"picture": [Image.new("RGB", (2, 2))], "target": [Image.new("L", (2, 2))]})
    with pytest.raises(ValueError, match=r"image column.*columns are \['picture', 'target'\]"):
        load_hf_dataset(hf)
    ds = load_hf_dataset(hf, image_column="picture", label_column="target", num_labels=1, reduce_labels=True)
    assert ds[0]["semantic"].tolist() == [[255, 255], [255, 255]]


def test_build_dataset_dispatch(exported):
    assert build_dataset(exported / "ade", "train", reduce_labels=True).task == "semantic"
    assert build_dataset(exported / "coco", "val").task == "panoptic"
    synthetic = build_dataset("synthetic", "validation", num_images=2)
    assert len(synthetic) == 2 and synthetic.task == "panoptic" and synthetic.thing_ids == list(range(6))
    item = synthetic[0]
    assert set(item) == ITEM_KEYS and item["panoptic_ids"].dtype == np.int32
    assert load_synthetic("val", 1)[0]["image_id"] == "validation_000000"


def test_instance_targets_feed_the_image_processor(exported):
    from transformers import MaskFormerImageProcessor

    processor = MaskFormerImageProcessor(do_resize=False, do_normalize=False, ignore_index=255, do_reduce_labels=False)
    for ds in (
        build_dataset(exported / "coco", "train"),
        build_dataset(exported / "ade", "train", reduce_labels=True),
    ):
        item = ds[0]
        instance_map, mapping = to_instance_targets(item)
        assert instance_map.dtype == np.int32
        batch = processor(
            [item["image"]],
            segmentation_maps=[instance_map],
            instance_id_to_semantic_id=[mapping],
            return_tensors="pt",
        )
        masks, classes = batch["mask_labels"][0].numpy().astype(bool), batch["class_labels"][0].tolist()
        if item["segments_info"] is not None:
            expected = {s["id"]: s["category_id"] for s in item["segments_info"]}
            assert sorted(classes) == sorted(expected.values())
            for mask, cls in zip(masks, classes):
                (segment_id,) = np.unique(item["panoptic_ids"][mask[: instance_map.shape[0], : instance_map.shape[1]]])
                assert expected[segment_id] == cls
        else:  # semantic: one mask per class present
            assert classes == sorted(np.unique(item["semantic"]).tolist())
            for mask, cls in zip(masks, classes):
                np.testing.assert_array_equal(
                    mask[: instance_map.shape[0], : instance_map.shape[1]], item["semantic"] == cls
                )


# -- malformed sources -----------------------------------------------------------------------------


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="missing folder .*images"):
        load_ade_folder(tmp_path, reduce_labels=True)
    (tmp_path / "images/training").mkdir(parents=True)
    (tmp_path / "annotations/training").mkdir(parents=True)
    for split in ("train", "validation"):  # no validation folder: both come from training/
        with pytest.raises(ValueError, match="no images .* in .*images/training"):
            load_ade_folder(tmp_path, split, reduce_labels=True)
    with pytest.raises(ValueError, match=r"no split 'test'; it has \['training'\]"):
        load_ade_folder(tmp_path, "test", reduce_labels=True)
    (tmp_path / "images/validation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing split folder .*annotations/validation"):
        load_ade_folder(tmp_path, "validation", reduce_labels=True)
    with pytest.raises(FileNotFoundError, match="panoptic_val2017.json"):
        load_coco_panoptic_folder(tmp_path, "val")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="not a known dataset layout"):
        build_dataset(other)


def test_image_without_annotation_is_named(exported, tmp_path):
    root = _copy(exported / "ade", tmp_path)
    (root / "annotations/training/train_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="train_000001.jpg"):
        load_ade_folder(root, "train", reduce_labels=True)
    coco = _copy(exported / "coco", tmp_path)
    (coco / "annotations/panoptic_val2017/validation_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="validation_000001.png"):
        load_coco_panoptic_folder(coco, "val")


def test_size_mismatch_names_file_and_sizes(exported, tmp_path):
    root = _copy(exported / "ade", tmp_path)
    Image.new("L", (100, 90)).save(root / "annotations/training/train_000002.png")
    ds = load_ade_folder(root, "train", reduce_labels=True)
    ds[0]  # the others are fine
    with pytest.raises(ValueError, match=r"train_000002.png: annotation size 100x90 .* size 128x128"):
        list(ds)
    coco = _copy(exported / "coco", tmp_path)
    Image.new("RGB", (64, 128)).save(coco / "val2017/validation_000000.jpg")
    with pytest.raises(ValueError, match=r"validation_000000.png: annotation size 128x128 .* size 64x128"):
        list(load_coco_panoptic_folder(coco, "val"))


def test_labels_out_of_range_are_reported(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "images/a.jpg")
    Image.fromarray(np.array([[1, 2], [3, 9]], dtype=np.uint8)).save(tmp_path / "annotations/a.png")
    with pytest.raises(ValueError, match=r"annotations/a.png: label\(s\) \[8\] outside 0..2"):
        load_ade_folder(tmp_path, "all", num_labels=3, reduce_labels=True)[0]


def test_unknown_category_id_is_named(tmp_path):
    segments = [dict(SEGMENTS[0], category_id=99)] + SEGMENTS[1:]
    with pytest.raises(ValueError, match="unknown category id 99 .*x.png"):
        load_coco_panoptic_folder(
            _write_coco(tmp_path, categories=SPARSE_CATEGORIES, segments_info=segments, ids=IDS), "val"
        )


def test_segments_and_png_must_agree(tmp_path):
    extra = SEGMENTS + [{"id": 42, "category_id": 7, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]}]
    ds = load_coco_panoptic_folder(
        _write_coco(tmp_path / "a", categories=SPARSE_CATEGORIES, segments_info=extra, ids=IDS), "val"
    )
    with pytest.raises(ValueError, match=r"x.png: segment id\(s\) \[42\] in segments_info are absent from the PNG"):
        ds[0]
    ds = load_coco_panoptic_folder(
        _write_coco(tmp_path / "b", categories=SPARSE_CATEGORIES, segments_info=SEGMENTS[:2], ids=IDS), "val"
    )
    with pytest.raises(ValueError, match=r"x.png: segment id\(s\) \[5\] in the PNG are missing from segments_info"):
        list(ds)


def test_undecodable_images_are_named(exported, tmp_path):
    root = _copy(exported / "ade", tmp_path)
    jpeg = root / "images/training/train_000001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # truncated, as by an interrupted copy
    ds = load_ade_folder(root, "train", reduce_labels=True)
    with pytest.raises(ValueError, match=r"train_000001.jpg: cannot decode the image .*truncated"):
        ds[1]
    coco = _copy(exported / "coco", tmp_path)
    (coco / "annotations/panoptic_val2017/validation_000000.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"validation_000000.png: cannot decode the image"):
        load_coco_panoptic_folder(coco, "val")[0]


def _edit_coco_json(root, edit):
    path = root / "annotations/panoptic_val2017.json"
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda p: p["annotations"][0].pop("segments_info"),
            r"annotations\[0\] \(x.png\) has no 'segments_info'",
        ),
        (
            lambda p: p["annotations"][0].pop("file_name"),
            r"annotations\[0\] \(image id 7\) has no 'file_name'",
        ),
        (lambda p: p["images"][0].pop("file_name"), r"images\[0\] \(id 7\) has no 'file_name'"),
        (
            lambda p: p["annotations"][0]["segments_info"][1].update(id=300),
            r"annotations\[0\] \(x.png\): segment id\(s\) \[300\] listed more than once",
        ),
        (
            lambda p: p["annotations"][0]["segments_info"][0].pop("category_id"),
            r"annotations\[0\] \(x.png\): a segment without 'category_id'",
        ),
        (
            lambda p: p["annotations"].append(dict(p["annotations"][0], file_name="y.png")),
            r"annotations\[1\] \(y.png\): a second annotation for image id 7",
        ),
    ],
)
def test_malformed_coco_json_is_refused_at_load_naming_the_file(tmp_path, edit, message):
    root = _write_coco(tmp_path, categories=SPARSE_CATEGORIES, segments_info=SEGMENTS, ids=IDS)
    _edit_coco_json(root, edit)
    with pytest.raises(ValueError, match=r"panoptic_val2017.json: " + message):
        load_coco_panoptic_folder(root, "val")


def test_broken_coco_json_is_named(tmp_path):
    root = _write_coco(tmp_path, categories=SPARSE_CATEGORIES, segments_info=SEGMENTS, ids=IDS)
    path = root / "annotations/panoptic_val2017.json"
    path.write_text(path.read_text()[:12])
    with pytest.raises(ValueError, match=r"panoptic_val2017.json: not valid JSON .*line 1 column 13"):
        load_coco_panoptic_folder(root, "val")


def test_duplicate_segment_ids_in_a_datasets_row_are_named(shapes):
    import datasets

    hf = shapes["validation"].to_hf_dataset("panoptic")
    rows = hf.to_list()
    rows[1]["segments_info"].append(dict(rows[1]["segments_info"][0]))
    ds = load_hf_dataset(
        datasets.Dataset.from_list(rows, features=hf.features), categories=shapes["validation"].categories
    )
    ds[0]
    with pytest.raises(ValueError, match=r"row 1 .*segment id\(s\) \[\d+\] listed more than once"):
        ds[1]


def _ade_with(tmp_path, annotation: Image.Image):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", annotation.size).save(tmp_path / "images/a.jpg")
    annotation.save(tmp_path / "annotations/a.png")
    return tmp_path


def test_a_16_bit_annotation_above_ignore_index_is_named(tmp_path):
    labels = np.zeros((4, 4), dtype=np.uint16)
    labels[1, 2] = 3000
    root = _ade_with(tmp_path, Image.fromarray(labels))
    with pytest.raises(
        ValueError, match=r"annotations/a.png: label 3000 is above ignore_index 255, .*instance or colour map"
    ):
        load_ade_folder(root, "all", reduce_labels=True)


def test_a_colour_annotation_gets_the_colour_error_first(tmp_path):
    colours = np.zeros((4, 4, 3), dtype=np.uint8)
    colours[:2] = (120, 120, 120)
    root = _ade_with(tmp_path, Image.fromarray(colours))
    for kwargs in ({}, {"num_labels": 3}, {"reduce_labels": None}):
        with pytest.raises(ValueError, match=r"a.png: semantic annotation has mode RGB.*colour-coded"):
            load_ade_folder(root, "all", **kwargs)


def test_the_label_convention_is_required(tmp_path, shapes):
    """No loader falls back to ADE's convention: without a choice, semantic label maps are refused."""
    root = _ade_with(tmp_path, Image.fromarray(np.array([[0, 1], [2, 2]], dtype=np.uint8)))
    for kwargs in ({}, {"reduce_labels": None}):
        with pytest.raises(
            ValueError, match="say how to read the pixel values.*reduce_labels=True.*--label_convention ade"
        ):
            load_ade_folder(root, "all", **kwargs)
    with pytest.raises(ValueError, match="say how to read the pixel values"):
        build_dataset(root, "all")
    assert load_ade_folder(root, "all", reduce_labels=False).num_labels == 3
    assert load_ade_folder(root, "all", reduce_labels=True).num_labels == 2
    with pytest.raises(ValueError, match="--label_convention as_is"):
        load_hf_dataset(shapes["train"].to_hf_dataset("semantic"))
    assert load_hf_dataset(shapes["train"].to_hf_dataset("panoptic"), reduce_labels=None).task == "panoptic"


def test_an_empty_images_folder_is_reported_as_empty(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    with pytest.raises(ValueError, match=r"images is empty"):
        load_ade_folder(tmp_path, "validation", reduce_labels=True)


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_ade_label_reduction_matches_evaluates_mean_iou(mode):
    """The reduction (8-bit maps take a lookup table, wider ones the general path) against the one in
    evaluate's canonical mean_iou metric: 0 -> 255, then k -> k - 1, and 254 (a former 255) back to 255."""
    from modeling_maskformer.data.decoding import decode_semantic

    values = np.random.default_rng(0).integers(0, 256, (37, 53)).astype(np.uint8)
    values[0, :3] = [0, 1, 255]
    image = Image.fromarray(values).convert(mode) if mode != "I;16" else Image.fromarray(values.astype(np.uint16))
    label = values.astype(np.int64)
    label[label == 0] = 255
    label = label - 1
    label[label == 254] = 255
    reduced = decode_semantic(image, reduce_labels=True, ignore_index=255, source="x.png")
    assert reduced.dtype == np.uint8 and np.array_equal(reduced, label)
    as_is = decode_semantic(image, reduce_labels=False, ignore_index=255, source="x.png")
    assert np.array_equal(as_is, values)
