"""The training data path against outside references: the geometry against torchvision.transforms.v2 applied
directly with the same random draws, the photometric distortion against a transcription of the authors'
(detectron2's ColorAugSSDTransform), the per-class masks against transformers' MaskFormerImageProcessor; and the
benchmark section at a tiny size (machinery only, no timing assertions)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import transformers
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from benchmarks import data_pipeline
from modeling_maskformer.data import (
    Augmentation,
    MaskFormerCollator,
    TrainingSet,
    build_dataset,
    load_ade_folder,
)
from modeling_maskformer.data.augmentation import PhotometricDistortion, PhotometricParams
from modeling_maskformer.data.dataset import present_labels, to_instance_targets
from modeling_maskformer.image_processing import MaskFormerImageProcessor


def authors_colour_augmentation(rgb: np.ndarray, p: PhotometricParams) -> np.ndarray:
    """detectron2's ColorAugSSDTransform.apply_image (projects/PointRend/point_rend/color_augmentation.py, the one
    MaskFormer's dataset mappers use) with its random draws replaced by `p`; RGB in, RGB out, via BGR as there."""
    img = rgb[:, :, [2, 1, 0]]

    def convert(img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        img = np.clip(img, 0, 255)
        return img.astype(np.uint8)

    def contrast(img):
        return img if p.contrast is None else convert(img, alpha=p.contrast)

    def saturation(img):
        if p.saturation is None:
            return img
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 1] = convert(img[:, :, 1], alpha=p.saturation)
        return cv2.cvtColor(img, cv2.COLOR_HSV2BGR)

    def hue(img):
        if p.hue is None:
            return img
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 0] = (img[:, :, 0].astype(int) + p.hue) % 180
        return cv2.cvtColor(img, cv2.COLOR_HSV2BGR)

    if p.brightness is not None:
        img = convert(img, beta=p.brightness)
    if p.contrast_first:
        img = hue(saturation(contrast(img)))
    else:
        img = contrast(hue(saturation(img)))
    return img[:, :, [2, 1, 0]]


def test_photometric_distortion_equals_the_authors_for_every_combination_of_steps():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[:10] = 128  # grey rows: hue undefined, saturation 0
    image[10:14] = [[255, 0, 0]]  # saturated red: hue wraps around 0 / 180
    distortion = PhotometricDistortion()
    for case in range(64):
        on = [(case >> bit) & 1 for bit in range(5)]
        params = PhotometricParams(
            brightness=float(rng.uniform(-32, 32)) if on[0] else None,
            contrast=float(rng.uniform(0.5, 1.5)) if on[1] else None,
            saturation=float(rng.uniform(0.5, 1.5)) if on[2] else None,
            hue=int(rng.integers(-18, 19)) if on[3] else None,
            contrast_first=bool(on[4]),
        )
        ours = distortion.apply(image.copy(), params)
        assert ours.dtype == np.uint8 and ours.shape == image.shape
        assert np.array_equal(ours, authors_colour_augmentation(image, params)), params
    extremes = PhotometricParams(brightness=32.0, contrast=1.5, saturation=1.5, hue=18, contrast_first=True)
    assert np.array_equal(distortion.apply(image, extremes), authors_colour_augmentation(image, extremes))


def test_photometric_distortion_names_bad_inputs():
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\) RGB numpy array, got ndarray float32"):
        PhotometricDistortion().apply(np.zeros((4, 4, 3), np.float32), PhotometricDistortion().sample())


def test_photometric_sampling_follows_the_recipe():
    distortion = PhotometricDistortion()
    torch.manual_seed(0)
    draws = [distortion.sample() for _ in range(2000)]
    for field, (low, high) in {
        "brightness": (-32, 32),
        "contrast": (0.5, 1.5),
        "saturation": (0.5, 1.5),
        "hue": (-18, 18),
    }.items():
        values = [getattr(d, field) for d in draws if getattr(d, field) is not None]
        assert 900 < len(values) < 1100, field  # p = 0.5 each (binomial sd ~22)
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > 0.9 * (high - low), field
    assert all(isinstance(d.hue, int) for d in draws if d.hue is not None)
    assert 900 < sum(d.contrast_first for d in draws) < 1100


def _reference_instance_map(item, ignore_index):
    """Panoptic items: each non-crowd segment an instance 1..N; semantic items: the classes, from np.unique."""
    if item["panoptic_ids"] is not None:
        segments = [s for s in item["segments_info"] if not s.get("iscrowd", 0)]
        instance_map = np.full(item["panoptic_ids"].shape, ignore_index, dtype=np.int64)
        for instance, segment in enumerate(segments, start=1):
            instance_map[item["panoptic_ids"] == segment["id"]] = instance
        return instance_map, {i: s["category_id"] for i, s in enumerate(segments, start=1)}
    semantic = item["semantic"]
    classes = [int(c) for c in np.unique(semantic) if c != ignore_index]
    instance_map = np.full(semantic.shape, ignore_index, dtype=np.int64)
    for instance, label in enumerate(classes, start=1):
        instance_map[semantic == label] = instance
    return instance_map, {i: c for i, c in enumerate(classes, start=1)}


def _reference_item(training_set: TrainingSet, index: int):
    """TrainingSet's item rebuilt with plain torchvision v2 (contiguous CHW image, int64 mask) and the same draws."""
    dataset, aug = training_set.dataset, training_set.augmentation
    item, ignore_index = dataset[index], dataset.ignore_index
    instance_map, mapping = _reference_instance_map(item, ignore_index)
    image = torch.from_numpy(np.array(item["image"].convert("RGB"))).permute(2, 0, 1).contiguous()
    lookup = torch.full((256,), ignore_index, dtype=torch.int64)
    for instance, label in mapping.items():
        lookup[instance] = label
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((training_set.seed * 1_000_003 + training_set.epoch) * 10_000_019 + index)
        resize = v2.RandomResize(int(aug_scale(aug)[0]), int(aug_scale(aug)[1]), antialias=True)
        image, mask = resize(tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(instance_map)))
        semantic = lookup[mask.long()]
        height, width = semantic.shape
        crop_h, crop_w = min(aug.crop_size, height), min(aug.crop_size, width)
        for _ in range(10):
            top = int(torch.randint(0, height - crop_h + 1, ()))
            left = int(torch.randint(0, width - crop_w + 1, ()))
            if aug.single_category_max_area >= 1.0:
                break
            counts = torch.bincount(semantic[top : top + crop_h, left : left + crop_w].flatten())[:ignore_index]
            if len(counts) > 1 and counts.max() < aug.single_category_max_area * counts.sum():
                break
        image, mask = v2.RandomHorizontalFlip()(
            TF.crop(image, top, left, crop_h, crop_w), TF.crop(mask, top, left, crop_h, crop_w)
        )
        params = aug.photometric.sample()  # the draws' order is ours; what they do is checked against the authors'
    pixels = authors_colour_augmentation(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), params)
    return torch.from_numpy(pixels).permute(2, 0, 1), mask.as_subclass(torch.Tensor), mapping


def aug_scale(aug: Augmentation) -> tuple[int, int]:
    return aug.resize.min_size, aug.resize.max_size


@pytest.fixture(scope="module")
def ade_folder(tmp_path_factory):
    return data_pipeline.write_ade_folder(tmp_path_factory.mktemp("ade"), 4, (96, 128), seed=5)


@pytest.mark.parametrize(
    "source,crop,min_scale,area", [("ade", 64, 0.5, 1.0), ("ade", 48, 0.5, 0.4), ("synthetic", 48, 0.75, 0.6)]
)
def test_training_items_equal_torchvision_v2_and_the_authors_colours(ade_folder, source, crop, min_scale, area):
    if source == "ade":
        dataset = load_ade_folder(ade_folder, "train[:100%]", reduce_labels=True, num_labels=150)
    else:
        dataset = build_dataset("synthetic", "train", num_images=3, image_size=64)
    training_set = TrainingSet(dataset, Augmentation(crop, min_scale, 2.0, area), seed=7)
    for epoch in range(2):
        training_set.epoch = epoch
        for index in range(len(dataset)):
            image, mask, mapping = training_set[index]
            ref_image, ref_mask, ref_mapping = _reference_item(training_set, index)
            assert mapping == ref_mapping
            assert image.dtype == torch.uint8 and torch.equal(image, ref_image), (epoch, index)
            assert torch.equal(mask.long(), ref_mask), (epoch, index)


def test_instance_targets_and_present_labels_match_numpy():
    rng = np.random.default_rng(1)
    for dtype, high in ((np.uint8, 256), (np.uint8, 4), (np.uint16, 3000), (np.int32, 500)):
        labels = rng.integers(0, high, (31, 47)).astype(dtype)
        assert np.array_equal(present_labels(labels), np.unique(labels)) and present_labels(labels).dtype == dtype
    semantic = rng.integers(0, 12, (40, 50)).astype(np.uint8)
    semantic[semantic == 11] = 255
    item = {"image": None, "semantic": semantic, "panoptic_ids": None, "segments_info": None, "image_id": "x"}
    expected, mapping = _reference_instance_map(item, 255)
    for compact, dtype in ((False, np.int32), (True, np.uint8)):
        got, got_mapping = to_instance_targets(item, 255, compact=compact)
        assert got.dtype == dtype and np.array_equal(got, expected) and got_mapping == mapping
    ids = rng.choice([0, 7, 300, 70000, 5], size=(40, 50)).astype(np.int32)
    segments = [
        {"id": 70000, "category_id": 3},
        {"id": 7, "category_id": 1},
        {"id": 5, "category_id": 2, "iscrowd": 1},
        {"id": 300, "category_id": 4},
        {"id": 999, "category_id": 0},
    ]
    panoptic = {
        "image": None,
        "semantic": None,
        "panoptic_ids": ids,
        "segments_info": segments,
        "image_id": "p",
    }
    instance_map, mapping = to_instance_targets(panoptic, 255)
    kept = [s for s in segments if not s.get("iscrowd")]
    expected = np.full(ids.shape, 255)
    for instance, segment in enumerate(kept, start=1):
        expected[ids == segment["id"]] = instance
    assert np.array_equal(instance_map, expected) and mapping == {i: s["category_id"] for i, s in enumerate(kept, 1)}


def test_collated_targets_equal_transformers_processor(ade_folder):
    dataset = load_ade_folder(ade_folder, "train[:100%]", reduce_labels=True, num_labels=150)
    items = [TrainingSet(dataset, Augmentation(64, 1.0, 1.5, 1.0), seed=1)[i] for i in range(4)]  # all 64x64
    processor = MaskFormerImageProcessor(ignore_index=255, num_labels=150, do_reduce_labels=False)
    theirs = transformers.MaskFormerImageProcessor(do_resize=False, ignore_index=255, do_reduce_labels=False)
    expected = theirs(
        images=[i[0].numpy() for i in items],
        segmentation_maps=[i[1].numpy() for i in items],
        instance_id_to_semantic_id=[i[2] for i in items],
        input_data_format="channels_first",
        return_tensors="pt",
    )
    for mask_dtype in (torch.float32, torch.bool):
        batch = MaskFormerCollator(processor, mask_dtype=mask_dtype)(items)
        assert torch.allclose(batch["pixel_values"], expected["pixel_values"], atol=1e-5)
        assert torch.equal(batch["pixel_mask"], expected["pixel_mask"])
        for ours, masks, classes, their_classes in zip(
            batch["mask_labels"], expected["mask_labels"], batch["class_labels"], expected["class_labels"]
        ):
            assert ours.dtype == mask_dtype and torch.equal(ours.float(), masks)
            assert torch.equal(classes, their_classes)
    with pytest.raises(ValueError, match="mask_dtype must be torch.float32 or torch.bool"):
        MaskFormerCollator(processor, mask_dtype=torch.int64)
    with pytest.raises(ValueError, match="`mask_dtype` must be torch.float32 or torch.bool"):
        processor(items[0][0], segmentation_maps=items[0][1], mask_dtype=torch.float16)


def test_bool_masks_give_the_model_the_same_loss():
    from builders import tiny_model

    model = tiny_model().eval()
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 64)
    masks = [torch.rand(3, 64, 64) > 0.5, torch.rand(2, 64, 64) > 0.7]
    classes = [torch.tensor([0, 1, 2]), torch.tensor([1, 0])]
    losses = []
    for labels in (masks, [m.float() for m in masks]):
        torch.manual_seed(1)  # the point-sampled loss draws points
        losses.append(model(pixel_values=pixel_values, mask_labels=labels, class_labels=classes).loss)
    assert torch.isfinite(losses[0]) and losses[0].item() == losses[1].item()


def test_data_section_runs_at_a_tiny_size(tmp_path):
    """`python -m benchmarks --tiny --sections data` (as `make bench` runs it), in its own process: the section
    starts DataLoader workers and sets torch's and OpenCV's thread counts, which should not leak into this one."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    output = tmp_path / "benchmark.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--sections", "data", "--output", str(output)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ours / torchvision per core" in run.stdout
    section = json.loads(output.read_text())["data"]
    names = section["pipelines"]
    assert names[:1] == ["ours"] and "torchvision" in names
    assert set(names) | set(section["missing"]) == set(data_pipeline.LOADERS)
    shapes = {name: section["batch_shapes"][name] for name in names}
    assert all(value == shapes["ours"] for value in shapes.values()), shapes  # the same batches from every pipeline
    assert shapes["ours"] == [[2, 3, 64, 64]]
    for name in names:
        assert section["per_core_images_per_second"][name] > 0
        assert all(rate > 0 for rate in section["workers_images_per_second"][name].values())
        assert all(n >= 1 for n in section["workers_needed"][name].values())
        stages = section["stages_ms"][name]
        assert len(stages) >= 3 and all(ms > 0 for ms in stages.values()), (name, stages)
        if name != "ours":
            assert section["ratios"][name] > 0
    assert section["file_kb"]["jpeg"] > 0 and "avx2" in section["machine"]


def test_binary_masks_pad_and_keep_large_ids_exact():
    from modeling_maskformer.image_processing.image_processing_maskformer import binary_masks

    label_map = torch.tensor([[0, 1 << 24, (1 << 24) + 1], [5, 5, (1 << 16) + 5]])  # 2**16 + 5 wraps to 5 in int16
    for ids in (
        torch.tensor([0, 5]),
        torch.tensor([1 << 24, (1 << 24) + 1]),
    ):  # float32/int16, int64 comparisons
        for dtype in (torch.float32, torch.bool):
            masks = binary_masks(label_map, ids, (3, 4), dtype)
            assert masks.shape == (len(ids), 3, 4) and masks.dtype == dtype
            assert not masks[:, 2:].any() and not masks[:, :, 3:].any()  # the padding
            assert torch.equal(masks[:, :2, :3], label_map[None] == ids[:, None, None])
    small = torch.tensor([[0, 3], [255, 3]], dtype=torch.uint8)
    assert torch.equal(
        binary_masks(small, torch.tensor([3, 255]), (2, 3), torch.bool)[:, :, :2],
        small[None] == torch.tensor([3, 255])[:, None, None],
    )
