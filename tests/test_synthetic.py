"""The procedural shapes dataset: determinism, split separation and annotations that match the pixels."""

import hashlib
import json

import datasets
import numpy as np
import pytest

from modeling_maskformer.data.synthetic import (
    CATEGORIES,
    STUFF_CLASSES,
    THING_CLASSES,
    SyntheticShapes,
    SyntheticShapesConfig,
    rgb_to_id,
)


def _digest(item) -> str:
    h = hashlib.sha256()
    h.update(item["image"].tobytes())
    h.update(item["semantic"].tobytes())
    h.update(item["panoptic"].tobytes())
    h.update(json.dumps(item["segments_info"]).encode())
    return h.hexdigest()


def test_same_seed_same_bytes_different_seed_different():
    a, b = SyntheticShapes("train", 8, seed=3), SyntheticShapes("train", 8, seed=3)
    c = SyntheticShapes("train", 8, seed=4)
    assert [_digest(a[i]) for i in range(8)] == [_digest(b[i]) for i in range(8)]
    assert not {_digest(a[i]) for i in range(8)} & {_digest(c[i]) for i in range(8)}
    # Random access gives the same scene as sequential access.
    assert _digest(a[5]) == _digest(SyntheticShapes("train", 8, seed=3)[5])


def test_splits_never_share_scenes():
    train = {hashlib.sha256(SyntheticShapes("train", 150)[i]["image"].tobytes()).hexdigest() for i in range(150)}
    val = {hashlib.sha256(SyntheticShapes("validation", 150)[i]["image"].tobytes()).hexdigest() for i in range(150)}
    assert len(train) == 150 and len(val) == 150
    assert not train & val


def test_annotations_match_pixels():
    ds = SyntheticShapes("validation", 40, seed=1)
    category_ids = {c["id"] for c in CATEGORIES}
    for i in range(len(ds)):
        item = ds[i]
        ids = rgb_to_id(item["panoptic"])
        semantic = item["semantic"]
        assert item["image"].mode == "RGB" and item["image"].size == (128, 128)
        assert semantic.dtype == np.uint8 and semantic.shape == (128, 128)
        assert item["panoptic"].dtype == np.uint8 and item["panoptic"].shape == (128, 128, 3)
        segments = item["segments_info"]
        assert {s["id"] for s in segments} == set(np.unique(ids).tolist())  # every pixel belongs to a segment
        expected = np.full_like(semantic, 255)
        for s in segments:
            mask = ids == s["id"]
            assert s["category_id"] in category_ids and s["iscrowd"] == 0
            assert s["area"] == mask.sum() > 0
            ys, xs = np.nonzero(mask)
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            expected[mask] = s["category_id"]
        np.testing.assert_array_equal(semantic, expected)
        stuff = [s["category_id"] for s in segments if not CATEGORIES[s["category_id"]]["isthing"]]
        things = [s for s in segments if CATEGORIES[s["category_id"]]["isthing"]]
        assert len(stuff) == len(set(stuff)) >= 1  # one segment per stuff class
        assert 1 <= len(things) <= 6


def test_class_list_and_coverage():
    ds = SyntheticShapes("train", 60)
    assert ds.id2label == dict(enumerate(THING_CLASSES + STUFF_CLASSES))
    assert ds.thing_ids == list(range(6)) and sorted(ds.id2label) == list(range(9))
    assert all(set(c) == {"id", "name", "isthing", "color"} for c in ds.categories)
    seen = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds[i]["semantic"]).tolist())
    assert seen == set(range(9))


def test_config_overrides_and_validation():
    ds = SyntheticShapes("train", 3, image_size=64, seed=2, config=SyntheticShapesConfig(max_objects=2))
    assert ds[0]["image"].size == (64, 64) and ds.config.seed == 2 and ds.config.max_objects == 2
    assert len(SyntheticShapes("validation")) == SyntheticShapesConfig().num_val
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticShapesConfig(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes("test", 3)
    with pytest.raises(IndexError):
        ds[3]


def test_hf_semantic_export_mirrors_scene_parse_150():
    ds = SyntheticShapes("train", 4)
    hf = ds.to_hf_dataset("semantic")
    assert isinstance(hf, datasets.Dataset) and hf.column_names == ["image", "annotation"]
    row = hf[1]
    annotation = np.asarray(row["annotation"])
    assert row["annotation"].mode == "L"
    np.testing.assert_array_equal(annotation, ds[1]["semantic"].astype(np.int32) + 1)  # ADE: id + 1
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(ds[1]["image"]))


def test_hf_panoptic_export():
    ds = SyntheticShapes("validation", 3)
    hf = ds.to_hf_dataset("panoptic")
    assert hf.column_names == ["image", "label", "segments_info", "image_id"]
    assert hf.features["segments_info"].feature["category_id"].names == list(ds.id2label.values())
    row = hf[2]
    np.testing.assert_array_equal(np.asarray(row["label"]), ds[2]["panoptic"])
    assert row["segments_info"] == ds[2]["segments_info"] and row["image_id"] == "validation_000002"
    with pytest.raises(ValueError, match="kind"):
        ds.to_hf_dataset("instance")


def test_folder_exports_write_real_layouts(tmp_path):
    train, val = SyntheticShapes("train", 2), SyntheticShapes("validation", 1)
    for ds in (train, val):
        ds.export_ade_folder(tmp_path / "ade")
        ds.export_coco_panoptic_folder(tmp_path / "coco")
    assert sorted(p.name for p in (tmp_path / "ade/images/training").iterdir()) == [
        "train_000000.jpg",
        "train_000001.jpg",
    ]
    assert (tmp_path / "ade/annotations/validation/validation_000000.png").is_file()
    assert json.loads((tmp_path / "ade/id2label.json").read_text())["8"] == "sand"
    payload = json.loads((tmp_path / "coco/annotations/panoptic_val2017.json").read_text())
    assert payload["categories"] == CATEGORIES and len(payload["annotations"]) == 1
    assert (tmp_path / "coco/val2017" / payload["images"][0]["file_name"]).is_file()
    assert (tmp_path / "coco/annotations/panoptic_train2017/train_000001.png").is_file()
