"""The opt-in fast inference path (channels-last, bf16 where native) and the pipeline class built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.image_processing.post_processing import semantic_segmentation
from modeling_maskformer.inference import fast_path as fast_inference
from modeling_maskformer.inference.pipeline import MaskFormerSegmentationPipeline, segment_masks

from builders import tiny_model

LABELS = {0: "sky", 1: "circle", 2: "square"}


@pytest.fixture
def pixel_values():
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))


def test_fast_path_keeps_float32_outputs_close_to_the_plain_forward(pixel_values):
    model = tiny_model().eval()
    with torch.no_grad():
        plain = model(pixel_values)
        model.enable_fast_inference(bf16=True)
        assert model.fast_inference == {"channels_last": True, "bf16": True}
        convolutions = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
        fast = model(pixel_values)
    assert fast.class_queries_logits.dtype == fast.masks_queries_logits.dtype == torch.float32
    scale = plain.masks_queries_logits.abs().max()
    assert (fast.masks_queries_logits - plain.masks_queries_logits).abs().max() <= 0.05 * scale
    size = (64, 96)
    same = [
        (a == b).double().mean().item()
        for a, b in zip(
            semantic_segmentation(plain.class_queries_logits, plain.masks_queries_logits, padded_size=size),
            semantic_segmentation(fast.class_queries_logits, fast.masks_queries_logits, padded_size=size),
        )
    ]
    assert min(same) > 0.9


def test_without_native_bf16_the_fast_path_stays_float32(monkeypatch, pixel_values):
    monkeypatch.setattr(fast_inference, "cpu_has_native_bf16", lambda: False)
    model = tiny_model().eval()
    with torch.no_grad():
        plain = model(pixel_values)
        model.enable_fast_inference()  # bf16 detected: not native here
        assert model.fast_inference == {"channels_last": True, "bf16": False}
        fast = model(pixel_values)
    # channels-last changes only the order of float32 sums
    assert torch.allclose(fast.masks_queries_logits, plain.masks_queries_logits, atol=1e-4, rtol=1e-4)
    model.disable_fast_inference()
    assert model.fast_inference is None


def test_native_bf16_detection_reads_cpu_probes(monkeypatch):
    fast_inference.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert fast_inference.cpu_has_native_bf16()
    fast_inference.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not fast_inference.cpu_has_native_bf16()
    fast_inference.cpu_has_native_bf16.cache_clear()
    assert not fast_inference.native_bf16(torch.device("meta"))


def test_training_ignores_the_fast_path(pixel_values):
    model = tiny_model()
    model.enable_fast_inference(bf16=True)
    model.train()
    labels = [torch.ones(1, 64, 96)] * 2
    out = model(pixel_values, mask_labels=labels, class_labels=[torch.tensor([1])] * 2)
    assert out.loss.dtype == torch.float32 and out.masks_queries_logits.dtype == torch.float32


@pytest.mark.parametrize(
    "values, ids",
    [
        (torch.tensor([[0, 1, 2], [2, 1, 149]]), [0, 1, 2, 149]),  # semantic class ids
        (torch.tensor([[-1, 0, 3], [3, 3, -1]], dtype=torch.int32), [0, 3]),  # instance ids, -1 = none
        (torch.tensor([[300, 1], [1, 300]]), [1, 300]),  # ids past 8 bits: plain comparison
    ],
)
def test_segment_masks_equal_the_stock_conversion(values, ids):
    for segment_id, mask in zip(ids, segment_masks(values, ids)):
        expected = Image.fromarray(((values.numpy() == segment_id) * 255).astype(np.uint8), mode="L")
        assert mask.mode == "L" and np.array_equal(np.asarray(mask), np.asarray(expected))


def test_pipeline_class_matches_the_stock_pipeline_and_offers_the_fast_path():
    model = tiny_model(id2label=LABELS, label2id={v: k for k, v in LABELS.items()}).eval()
    with torch.no_grad():
        model.class_head.bias.copy_(torch.tensor([0.0, 12.0, 0.0, 0.0]))
    processor = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    stock = pipeline("image-segmentation", model=model, image_processor=processor)
    ours = pipeline(
        "image-segmentation",
        model=model,
        image_processor=processor,
        pipeline_class=MaskFormerSegmentationPipeline,
    )
    for subtask in ("semantic", "instance", "panoptic"):
        kwargs = {} if subtask == "semantic" else {"threshold": 0.1, "overlap_mask_area_threshold": 0.0}
        expected, got = stock(image, subtask=subtask, **kwargs), ours(image, subtask=subtask, **kwargs)
        assert [(s["label"], s["score"]) for s in got] == [(s["label"], s["score"]) for s in expected]
        assert all(np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"])) for a, b in zip(got, expected))
    fast = pipeline(
        "image-segmentation",
        model=tiny_model(id2label=LABELS).eval(),
        image_processor=processor,
        pipeline_class=MaskFormerSegmentationPipeline,
        fast_inference=True,
    )
    assert fast.model.fast_inference is not None
    assert fast(image, subtask="semantic")
