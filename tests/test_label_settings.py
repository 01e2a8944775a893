"""The data's meaning travels with the model (modeling_maskformer/data/labels.py): what a folder records and how it is
read back, datasets read for a model (`build_dataset(..., model=...)`), and the things/stuff rules of every reader
(instance output never lists a stuff class, panoptic output fuses stuff by default) in `segment`, the pipeline and
the app. The command-line journeys are in tests/test_own_data_journeys.py."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import pipeline

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.data import build_dataset
from modeling_maskformer.data.labels import LabelSettings, drop_stuff, segment
from modeling_maskformer.inference.app import Segmenter
from modeling_maskformer.inference.pipeline import MaskFormerSegmentationPipeline

from builders import save_transformers_checkpoint, tiny_model
from own_data import OWN_CLASSES, write_own_dataset

LABELS = {0: "sky", 1: "circle", 2: "square"}


def trained_like(folder, *, thing_ids=(1, 2), reduce_labels=False, id2label=LABELS, **processor):
    """A folder as training writes it: the classes and things in the config, the convention in the processor."""
    id2label = dict(id2label)
    model = tiny_model(
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        thing_ids=None if thing_ids is None else list(thing_ids),
    )
    model.save_pretrained(folder)
    MaskFormerImageProcessor(do_reduce_labels=reduce_labels, **processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    return write_own_dataset(tmp_path_factory.mktemp("own"), num_train=2, num_val=2, image_size=64)


def test_what_a_folder_records_is_read_back(tmp_path):
    settings = LabelSettings.from_pretrained(trained_like(tmp_path / "ade", reduce_labels=True))
    assert (settings.reduce_labels, settings.thing_ids) == (True, [1, 2])
    assert settings.id2label == LABELS and settings.ignore_index == 255
    # Saved by this package before the settings were recorded (no thing_ids): its do_reduce_labels: false was
    # written whatever the data, so the convention is unknown.
    assert LabelSettings.from_pretrained(trained_like(tmp_path / "old", thing_ids=None)).reduce_labels is None
    # transformers' own checkpoint: its processor's fields mean what they say; no things/stuff split.
    save_transformers_checkpoint(tmp_path / "hub", num_labels=4, predicted=1)
    hub = LabelSettings.from_pretrained(tmp_path / "hub")
    assert (hub.reduce_labels, hub.thing_ids, hub.num_labels) == (False, None, 4)
    processor = json.loads((tmp_path / "hub" / "preprocessor_config.json").read_text())
    (tmp_path / "hub" / "preprocessor_config.json").write_text(json.dumps({**processor, "do_reduce_labels": True}))
    assert LabelSettings.from_pretrained(tmp_path / "hub").reduce_labels is True


def test_a_dataset_read_for_a_model_uses_its_convention_and_classes(own_data, tmp_path, caplog):
    model = trained_like(tmp_path / "model", thing_ids=(), id2label=OWN_CLASSES)
    dataset = build_dataset(own_data, "validation", model=model)
    assert dataset.reduce_labels is False and dataset.id2label == OWN_CLASSES
    assert sorted(set(dataset[0]["semantic"].ravel().tolist())) == [
        0,
        1,
        2,
        3,
    ]  # pixel k is class k: nothing shifted
    # An explicit choice that contradicts the record is followed, with a warning.
    with caplog.at_level(logging.WARNING):
        build_dataset(own_data, "validation", model=model, reduce_labels=True)
    assert "--label_convention ade (reduce_labels=True) contradicts" in caplog.text
    # A loaded model reads the record of the folder it came from.
    from modeling_maskformer import MaskFormerForInstanceSegmentation

    loaded = MaskFormerForInstanceSegmentation.from_pretrained(model)
    assert build_dataset(own_data, "validation", model=loaded).reduce_labels is False


def test_nothing_falls_back_to_ade(own_data, tmp_path):
    old = trained_like(tmp_path / "old", thing_ids=None, id2label=OWN_CLASSES)
    with pytest.raises(
        ValueError,
        match=r"records no label convention.*pass --label_convention ade \(reduce_labels=True\) "
        r"for ADE20K's .* or --label_convention as_is \(reduce_labels=False\)",
    ):
        build_dataset(own_data, "validation", model=old)
    assert build_dataset(own_data, "validation", model=old, reduce_labels=False).num_labels == 4
    with pytest.raises(ValueError, match="say how to read the pixel values"):
        build_dataset(own_data, "validation")


def test_other_classes_are_refused_naming_both(own_data, tmp_path, caplog):
    other = {0: "road", 1: "car", 2: "person", 3: "tree"}
    model = trained_like(tmp_path / "model", thing_ids=(1, 2), id2label=other)
    with pytest.raises(
        ValueError,
        match=rf"dataset {own_data} \(validation\) has 4 classes \(sky, ground, round, angular\) "
        rf"but {tmp_path / 'model'} predicts 4 \(road, car, person, tree\): the class "
        r"names differ; pass --ignore_class_mismatch",
    ):
        build_dataset(own_data, "validation", model=model)
    with caplog.at_level(logging.WARNING):
        build_dataset(own_data, "validation", model=model, ignore_class_mismatch=True)
    assert "evaluating anyway (--ignore_class_mismatch)" in caplog.text
    spaced = trained_like(
        tmp_path / "spaced", thing_ids=(), id2label={0: "Sky", 1: "ground ", 2: "round", 3: "angular"}
    )
    assert build_dataset(own_data, "validation", model=spaced).num_labels == 4  # the same names but for case, spaces
    three = trained_like(tmp_path / "three", id2label=LABELS)
    with pytest.raises(ValueError, match=r"has 4 classes .* predicts 3 .* the class counts differ"):
        build_dataset(own_data, "validation", model=three)
    # A dataset that names no class takes the model's names (same count).
    (own_data / "id2label.json").rename(tmp_path / "id2label.json")
    try:
        assert build_dataset(own_data, "validation", model=model).id2label == other
    finally:
        (tmp_path / "id2label.json").rename(own_data / "id2label.json")


def two_class_outputs(num_labels: int = 3) -> dict:
    """Queries 0 and 3: "sky" (class 0, stuff), the lower and upper left quarters; queries 1 and 2: "circle" (class
    1, a thing) in two squares on the right; the others: no object. Logits at stride 4 of a 32x32 input."""
    queries = 6
    classes = torch.full((1, queries, num_labels + 1), -10.0)
    classes[0, :, -1] = 10.0
    for query, label in ((0, 0), (1, 1), (2, 1), (3, 0)):
        classes[0, query, label], classes[0, query, -1] = 10.0, -10.0
    masks = torch.full((1, queries, 8, 8), -10.0)
    masks[0, 0, 4:, :4] = 10.0
    masks[0, 3, :4, :4] = 10.0  # a second sky query, above the first: panoptic fuses them
    masks[0, 1, :3, 5:8] = 10.0
    masks[0, 2, 5:8, 5:8] = 10.0
    return {
        "class_queries_logits": classes,
        "masks_queries_logits": masks,
        "pixel_mask": torch.ones(1, 32, 32),
    }


def test_instance_output_never_lists_stuff_and_panoptic_fuses_it():
    processor, outputs = MaskFormerImageProcessor(), two_class_outputs()
    sizes = [(32, 32)]
    everything = segment(
        processor, outputs, "instance", thing_ids=None, target_sizes=sizes, overlap_mask_area_threshold=0
    )[0]
    assert {s["label_id"] for s in everything["segments_info"]} == {0, 1}  # unknown split: as before
    things = segment(
        processor, outputs, "instance", thing_ids=[1, 2], target_sizes=sizes, overlap_mask_area_threshold=0
    )[0]
    assert [s["label_id"] for s in things["segments_info"]] == [1, 1]
    assert [s["id"] for s in things["segments_info"]] == [0, 1]  # renumbered
    assert set(things["segmentation"].unique().tolist()) == {-1, 0, 1}
    assert (things["segmentation"][:, :16] == -1).all()  # the sky's pixels: no instance
    panoptic = segment(processor, outputs, "panoptic", thing_ids=[1, 2], target_sizes=sizes)[0]
    sky = [s for s in panoptic["segments_info"] if s["label_id"] == 0]
    assert len(sky) == 1 and sky[0]["was_fused"]
    unfused = segment(processor, outputs, "panoptic", thing_ids=[1, 2], target_sizes=sizes, label_ids_to_fuse=set())[0]
    assert len([s for s in unfused["segments_info"] if s["label_id"] == 0]) == 2
    # Binary maps (N, H, W) lose the stuff rows.
    binary = {
        "segmentation": torch.zeros(3, 4, 4, dtype=torch.bool),
        "segments_info": [{"id": i, "label_id": label, "score": 1.0} for i, label in enumerate((0, 1, 2))],
    }
    binary["segmentation"][1, 0, 0] = True
    dropped = drop_stuff(binary, [1, 2])
    assert dropped["segmentation"].shape == (2, 4, 4) and dropped["segmentation"][0, 0, 0]


def mixed_model():
    """A tiny model whose every query says "sky" (stuff) or "circle" (a thing) with equal confidence."""
    model = tiny_model(id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, thing_ids=[1, 2]).eval()
    with torch.no_grad():
        model.class_head.weight.zero_()
        model.class_head.bias.copy_(torch.tensor([12.0, 12.0, 0.0, 0.0]))
    return model


def test_pipeline_and_app_list_no_stuff_instance(tmp_path, caplog):
    from PIL import Image

    model, processor = (
        mixed_model(),
        MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}),
    )
    image = Image.new("RGB", (80, 64), (40, 90, 200))
    segmenter = pipeline(
        "image-segmentation", model=model, image_processor=processor, pipeline_class=MaskFormerSegmentationPipeline
    )
    instances = segmenter(image, subtask="instance", threshold=0.1, overlap_mask_area_threshold=0.0)
    assert instances and {r["label"] for r in instances} == {"circle"}
    panoptic = segmenter(image, subtask="panoptic", threshold=0.1, overlap_mask_area_threshold=0.0)
    assert [r["label"] for r in panoptic].count("sky") <= 1  # fused
    assert len(
        segmenter(image, subtask="panoptic", threshold=0.1, overlap_mask_area_threshold=0.0, label_ids_to_fuse=[])
    )
    _, rows = Segmenter(model, processor)(image, "instance", threshold=0.1, overlap_threshold=0.0)
    assert rows and {row[0] for row in rows} == {"circle"}
    # A model that does not record the split: as before, with one line saying so.
    model.config.thing_ids = None
    with caplog.at_level(logging.INFO, logger="modeling_maskformer.data.labels"):
        segmenter = pipeline(
            "image-segmentation", model=model, image_processor=processor, pipeline_class=MaskFormerSegmentationPipeline
        )
        for _ in range(2):
            labels = {
                r["label"]
                for r in segmenter(image, subtask="instance", threshold=0.1, overlap_mask_area_threshold=0.0)
            }
    assert labels == {"sky", "circle"}
    assert caplog.text.count("does not record which classes are things and which stuff") == 1
