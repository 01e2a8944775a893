"""`pipeline("image-segmentation")` with our model: the three subtasks, from objects and from a saved folder,
on PIL images, paths and arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.inference.pipeline import MaskFormerSegmentationPipeline, array_to_pil

from builders import tiny_model

LABELS = {0: "sky", 1: "circle", 2: "square"}


def confident_model():
    """A tiny model whose class head always says "circle" with high confidence, so every subtask returns
    segments whatever the random masks look like."""
    model = tiny_model(id2label=LABELS, label2id={v: k for k, v in LABELS.items()}).eval()
    with torch.no_grad():
        model.class_head.weight.zero_()
        model.class_head.bias.copy_(torch.tensor([0.0, 12.0, 0.0, 0.0]))
    return model


@pytest.fixture(scope="module")
def parts():
    return confident_model(), MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))


def check(result, image_size):
    assert isinstance(result, list) and result
    for segment in result:
        assert segment["label"] in LABELS.values()
        assert segment["mask"].size == image_size
        assert segment["mask"].mode == "L"


@pytest.mark.parametrize("subtask", ["semantic", "instance", "panoptic"])
def test_pipeline_from_objects(parts, image, subtask):
    model, processor = parts
    segmenter = pipeline("image-segmentation", model=model, image_processor=processor)
    result = (
        segmenter(image, subtask=subtask, threshold=0.1, overlap_mask_area_threshold=0.0)
        if subtask != "semantic"
        else segmenter(image, subtask=subtask)
    )
    check(result, image.size)
    if subtask == "semantic":
        assert {segment["label"] for segment in result} == {"circle"}
    else:
        assert all(segment["score"] > 0.1 for segment in result)


@pytest.mark.parametrize("kind", ["path", "array", "pil"])
def test_pipeline_from_a_saved_folder(parts, image, kind, tmp_path):
    model, processor = parts
    # A remote-code folder: the registered model_type gives our classes (a native folder gives transformers' own,
    # tests/test_native_folders.py).
    model.save_pretrained(tmp_path, folder_format="remote_code")
    processor.save_pretrained(tmp_path)
    image.save(tmp_path / "image.png")
    inputs = {"path": str(tmp_path / "image.png"), "array": np.asarray(image), "pil": image}[kind]
    # transformers' pipeline takes paths and PIL images; arrays need our subclass.
    extra = {"pipeline_class": MaskFormerSegmentationPipeline} if kind == "array" else {}
    segmenter = pipeline("image-segmentation", model=str(tmp_path), **extra)
    assert type(segmenter.image_processor) is MaskFormerImageProcessor
    for subtask in ("semantic", "instance", "panoptic"):
        check(segmenter(inputs, subtask=subtask, threshold=0.1), image.size)


def test_pipeline_semantic_matches_direct_post_processing(parts, image):
    model, processor = parts
    segmenter = pipeline("image-segmentation", model=model, image_processor=processor)
    result = segmenter(image, subtask="semantic")
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
    for segment in result:
        label = {v: k for k, v in LABELS.items()}[segment["label"]]
        np.testing.assert_array_equal(np.asarray(segment["mask"]) > 0, expected.numpy() == label)


@pytest.mark.parametrize(
    "array",
    [
        np.full((40, 50, 3), 200, np.uint8),
        np.full((3, 40, 50), 200, np.uint8),
        np.full((40, 50), 200, np.uint8),
        np.full((40, 50, 3), 200 / 255, np.float32),
        torch.full((3, 40, 50), 200, dtype=torch.uint8),
    ],
    ids=["hwc", "chw", "gray", "float", "tensor"],
)
def test_array_inputs_become_the_same_rgb_image(array):
    image = array_to_pil(array)
    assert image.mode == "RGB" and image.size == (50, 40)
    assert np.asarray(image).min() == np.asarray(image).max() == 200
