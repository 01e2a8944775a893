"""Tests for MaskFormerImageProcessor: resizing/padding, accepted and refused inputs, segmentation targets,
configuration round trips, post-processing wrappers. Small images throughout: the file runs in seconds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.utils import ModelOutput

from modeling_maskformer.image_processing import (
    MaskFormerImageProcessor,
    convert_segmentation_map_to_binary_masks,
    get_resize_output_size,
)

SMALL = {"shortest_edge": 64, "longest_edge": 96}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
POST_PROCESSING_READY = (Path(__file__).parents[1] / "image_processing" / "post_processing.py").exists()


@pytest.fixture
def processor() -> MaskFormerImageProcessor:
    return MaskFormerImageProcessor(size=SMALL)


def rgb(height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def semantic_map(height: int = 40, width: int = 60) -> np.ndarray:
    """Class 0 left, 1 middle, 3 right, an ignore (255) band on top."""
    seg = np.zeros((height, width), dtype=np.uint8)
    seg[:, width // 3 :] = 1
    seg[:, 2 * width // 3 :] = 3
    seg[:4] = 255
    return seg


def resized_map(seg: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Reference: torchvision's nearest-exact resize (PIL NEAREST)."""
    out = tvF.resize(torch.from_numpy(seg)[None], list(size), interpolation=tvF.InterpolationMode.NEAREST_EXACT)
    return out[0].long()


def reconstruct(mask_labels: torch.Tensor, class_labels: torch.Tensor, fill: int = 255) -> torch.Tensor:
    """Rebuild a label map from binary masks; asserts the masks do not overlap."""
    assert (mask_labels.sum(0) <= 1).all()
    out = torch.full(mask_labels.shape[1:], fill, dtype=torch.long)
    for mask, label in zip(mask_labels, class_labels):
        out[mask.bool()] = label
    return out


# ----- resize, pad, pixel_mask, normalisation -----


@pytest.mark.parametrize(
    ("hw", "resized", "padded"),
    [((40, 60), (64, 96), (64, 96)), ((40, 50), (64, 80), (64, 96)), ((40, 200), (19, 96), (32, 96))],
)
def test_resize_keeps_aspect_ratio_and_pads_to_multiple(processor, hw, resized, padded):
    out = processor(rgb(*hw))
    assert out["pixel_values"].shape == (1, 3, *padded)
    assert out["pixel_mask"].shape == (1, *padded)
    mask = out["pixel_mask"][0]
    assert mask.dtype == torch.long
    assert mask[: resized[0], : resized[1]].all() and mask.sum() == resized[0] * resized[1]
    assert (out["pixel_values"][0][:, mask == 0] == 0).all()  # padding is 0, bottom/right
    assert abs(resized[1] / resized[0] - hw[1] / hw[0]) < 0.1  # aspect ratio kept, up to rounding


@pytest.mark.parametrize("hw", [(480, 640), (333, 517), (1000, 700), (64, 3000), (800, 1333), (799, 1334)])
def test_resize_rule_matches_transformers(hw):
    expected = get_size_with_aspect_ratio(hw, 800, 1333)
    assert get_resize_output_size(*hw, {"shortest_edge": 800, "longest_edge": 1333}) == tuple(expected)


def test_mixed_size_batch_pixel_mask(processor):
    out = processor([rgb(40, 60), rgb(60, 40), rgb(48, 48)])
    assert out["pixel_values"].shape == (3, 3, 96, 96)
    expected = [(64, 96), (96, 64), (64, 64)]
    for mask, (h, w) in zip(out["pixel_mask"], expected):
        assert mask[:h, :w].all() and mask.sum() == h * w


def test_normalisation_values():
    value = 128
    image = np.full((40, 40, 3), value, dtype=np.uint8)
    out = MaskFormerImageProcessor(size={"shortest_edge": 40}, size_divisor=64)(image)["pixel_values"][0]
    expected = (value / 255 - MEAN) / STD  # (3, 1, 1)
    torch.testing.assert_close(out[:, :40, :40], expected.expand(3, 40, 40))
    assert (out[:, 40:, :] == 0).all() and (out[:, :, 40:] == 0).all()


def test_pixel_values_match_transformers():
    """Parity gate against transformers' processor (size_divisor=0: it would resize, we pad)."""
    from transformers import MaskFormerImageProcessor as ReferenceProcessor

    images = [Image.fromarray(rgb(50, 70, seed=1)), Image.fromarray(rgb(33, 51, seed=2))]
    for image in images:
        ours = MaskFormerImageProcessor(size=SMALL, size_divisor=0)(image)["pixel_values"]
        ref = ReferenceProcessor(size=SMALL, size_divisor=0)(image, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_no_pad_and_return_tensors(processor):
    same = processor([rgb(), rgb(seed=1)], do_pad=False)
    assert same["pixel_values"].shape == (2, 3, 64, 96)
    with pytest.raises(ValueError, match="do_pad=False"):
        processor([rgb(40, 60), rgb(40, 50)], do_pad=False)
    as_lists = processor([rgb(40, 60), rgb(40, 50)], do_pad=False, return_tensors=None)
    assert [p.shape for p in as_lists["pixel_values"]] == [(3, 64, 96), (3, 64, 80)]
    assert isinstance(as_lists["pixel_values"][0], np.ndarray)
    as_np = processor(rgb(), semantic_map(), return_tensors="np")
    assert isinstance(as_np["pixel_values"], np.ndarray) and isinstance(as_np["mask_labels"][0], np.ndarray)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(rgb(), return_tensors="tf")


# ----- accepted image kinds -----

BASE = rgb(40, 48, seed=3)
GRAY = BASE[..., 0].copy()


def _good_images():
    alpha = np.full((40, 48, 1), 7, dtype=np.uint8)
    return {
        "pil_rgb": (Image.fromarray(BASE), BASE),
        "pil_rgba": (Image.fromarray(np.concatenate([BASE, alpha], -1)), BASE),
        "pil_l": (Image.fromarray(GRAY), GRAY),
        "pil_i16": (Image.fromarray(GRAY.astype(np.uint16) * 257), GRAY),
        "np_hw": (GRAY, GRAY),
        "np_hw1": (GRAY[..., None], GRAY),
        "np_hwc": (BASE, BASE),
        "np_hwc4": (np.concatenate([BASE, alpha], -1), BASE),
        "np_chw": (BASE.transpose(2, 0, 1).copy(), BASE),
        "np_uint16": (BASE.astype(np.uint16) * 257, BASE),
        "np_float01": (BASE.astype(np.float32) / 255, BASE),
        "np_float255": (BASE.astype(np.float64), BASE),
        "np_int64": (BASE.astype(np.int64), BASE),
        "np_flipped": (BASE[::-1][::-1], BASE),
        "torch_chw_uint8": (torch.from_numpy(BASE).permute(2, 0, 1), BASE),
        "torch_chw_float01": (torch.from_numpy(BASE).permute(2, 0, 1).float() / 255, BASE),
        "torch_hw": (torch.from_numpy(GRAY), GRAY),
    }


@pytest.mark.parametrize("kind", list(_good_images()))
def test_good_image_kinds(processor, kind):
    image, equivalent = _good_images()[kind]
    reference = np.repeat(equivalent[..., None], 3, -1) if equivalent.ndim == 2 else equivalent
    expected = processor(reference, do_resize=False)["pixel_values"]
    torch.testing.assert_close(processor(image, do_resize=False)["pixel_values"], expected, atol=1e-5, rtol=0)
    # Resized, 8-bit inputs are resampled in uint8 (rounded), others in float: within one 8-bit level.
    one_level = 1.5 / 255 / 0.224  # torchvision's uint8 kernels round in fixed point
    resized = processor(image)["pixel_values"]
    torch.testing.assert_close(resized, processor(reference)["pixel_values"], atol=one_level, rtol=0)


def test_palette_image_is_converted_to_rgb(processor):
    palette_image = Image.fromarray(BASE).convert("P")
    expected = processor(np.asarray(palette_image.convert("RGB")))["pixel_values"]
    torch.testing.assert_close(processor(palette_image)["pixel_values"], expected)


def test_batch_inputs(processor):
    stacked = np.stack([BASE, BASE])  # (B, H, W, C)
    assert processor(stacked)["pixel_values"].shape[0] == 2
    assert processor((BASE, Image.fromarray(BASE)))["pixel_values"].shape[0] == 2


# ----- refused images -----


def _bad_images():
    huge_side = np.broadcast_to(np.uint8(0), (16385, 40, 3))  # no memory: zero strides
    huge_area = np.broadcast_to(np.uint8(0), (10001, 10001, 3))
    nan = np.zeros((40, 40, 3), np.float32)
    nan[3, 3, 0] = np.nan
    inf = np.zeros((40, 40, 3), np.float32)
    inf[0, 0, 1] = np.inf
    return {
        "empty": (np.zeros((0, 40, 3), np.uint8), ValueError, "0x40"),
        "too_large_side": (huge_side, ValueError, "16385x40.*16384"),
        "too_large_area": (huge_area, ValueError, "100,000,000"),
        "too_large_pil": (Image.new("1", (16385, 32)), ValueError, "16384"),
        "nan": (nan, ValueError, "NaN or infinite"),
        "inf": (torch.from_numpy(inf), ValueError, "NaN or infinite"),
        "str_path": ("cat.png", TypeError, r"PIL\.Image\.open"),
        "pathlib_path": (Path("cat.png"), TypeError, r"PIL\.Image\.open"),
        "int": (3, TypeError, "unsupported type"),
        "dict": ({"pixels": 1}, TypeError, "unsupported type"),
        "two_channels": (np.zeros((40, 40, 2), np.uint8), ValueError, "wrong number of channels"),
        "five_channels": (torch.zeros(5, 40, 40), ValueError, "wrong number of channels"),
        "one_dim": (np.zeros(40, np.uint8), ValueError, "expected"),
        "empty_list": ([], ValueError, "empty"),
        "nested_list": ([[BASE]], TypeError, "flat list"),
        "bool": (np.zeros((40, 40), bool), TypeError, "dtype bool"),
        "int_out_of_range": (np.full((40, 40), 300, np.int32), ValueError, r"\[0, 255\]"),
        "uint16_in_int32_too_big": (Image.fromarray(np.full((40, 40), 70000, np.int32)), ValueError, "65535"),
    }


@pytest.mark.parametrize("kind", list(_bad_images()))
def test_bad_images_are_refused(processor, kind):
    image, error, match = _bad_images()[kind]
    with pytest.raises(error, match=match):
        processor(image)


def test_limits_are_class_constants():
    assert MaskFormerImageProcessor.MIN_IMAGE_SIDE == 1  # smaller images are padded, as transformers
    assert MaskFormerImageProcessor.MAX_IMAGE_SIDE == 16384
    assert MaskFormerImageProcessor.MAX_IMAGE_PIXELS == 100_000_000


# ----- segmentation targets -----


def test_semantic_targets_round_trip(processor):
    seg = semantic_map()
    out = processor(rgb(), seg)
    masks, labels = out["mask_labels"][0], out["class_labels"][0]
    assert masks.dtype == torch.float32 and labels.dtype == torch.long
    assert labels.tolist() == [0, 1, 3]
    assert masks.shape == (3, 64, 96)
    torch.testing.assert_close(reconstruct(masks, labels), resized_map(seg, (64, 96)))


def test_instance_targets(processor):
    seg = np.zeros((40, 60), np.uint8)
    seg[:, 20:40] = 1
    seg[:, 40:] = 5
    seg[:2] = 255
    mapping = {0: 4, 1: 2, 5: 2}
    out = processor(rgb(), seg, instance_id_to_semantic_id=mapping)
    masks, labels = out["mask_labels"][0], out["class_labels"][0]
    assert labels.tolist() == [4, 2, 2]  # one mask per instance, ordered by instance id
    expected_ids = resized_map(seg, (64, 96))
    for mask, instance_id in zip(masks, [0, 1, 5]):
        assert torch.equal(mask.bool(), expected_ids == instance_id)
    per_image = processor([rgb(), rgb()], [seg, seg], instance_id_to_semantic_id=[mapping, {0: 0, 1: 1, 5: 1}])
    assert per_image["class_labels"][1].tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match=r"instance ids \[5\]"):
        processor(rgb(), seg, instance_id_to_semantic_id={0: 4, 1: 2})
    with pytest.raises(ValueError, match="1 entries for 2 images"):
        processor([rgb(), rgb()], [seg, seg], instance_id_to_semantic_id=[mapping])
    with pytest.raises(TypeError, match="dict or a list of dicts"):
        processor(rgb(), seg, instance_id_to_semantic_id=3)
    with pytest.raises(ValueError, match="without `segmentation_maps`"):
        processor(rgb(), instance_id_to_semantic_id=mapping)


def test_reduce_labels_keeps_existing_ignore(processor):
    seg = np.zeros((40, 60), np.uint8)  # 0 = background
    seg[:, 20:40] = 1
    seg[:, 40:] = 2
    seg[:5] = 255  # already ignore: must stay ignore, not become 254
    out = processor(rgb(), seg, do_reduce_labels=True)
    labels = out["class_labels"][0]
    assert labels.tolist() == [0, 1]
    expected = resized_map(seg, (64, 96))
    expected = torch.where((expected == 0) | (expected == 255), 255, expected - 1)
    torch.testing.assert_close(reconstruct(out["mask_labels"][0], labels), expected)


def test_reduce_labels_with_instance_map(processor):
    seg = np.zeros((40, 60), np.uint8)
    seg[:, 20:] = 3
    seg[:, 40:] = 4
    out = processor(rgb(), seg, instance_id_to_semantic_id={3: 5, 4: 0}, do_reduce_labels=True)
    assert out["class_labels"][0].tolist() == [4]  # instance 3 → class 5 - 1; class 0 is background


def test_ignore_index_settings(processor):
    seg = semantic_map()
    no_ignore = processor(rgb(), seg, ignore_index=None)
    assert no_ignore["class_labels"][0].tolist() == [0, 1, 3, 255]
    zero_ignored = processor(rgb(), seg, ignore_index=0)
    assert zero_ignored["class_labels"][0].tolist() == [1, 3, 255]
    with pytest.raises(ValueError, match="needs an `ignore_index`"):
        processor(rgb(), seg, ignore_index=None, do_reduce_labels=True)


def test_map_without_objects(processor):
    out = processor([rgb(), rgb(40, 50)], [np.full((40, 60), 255, np.uint8), semantic_map(40, 50)])
    assert out["mask_labels"][0].shape == (0, 64, 96)
    assert out["class_labels"][0].shape == (0,) and out["class_labels"][0].dtype == torch.long
    assert out["mask_labels"][1].shape[1:] == (64, 96)


def test_padded_region_of_mask_labels_is_zero(processor):
    out = processor([rgb(40, 60), rgb(60, 40)], [semantic_map(40, 60), semantic_map(60, 40)])
    for masks, pixel_mask in zip(out["mask_labels"], out["pixel_mask"]):
        assert masks.shape[1:] == pixel_mask.shape == (96, 96)
        assert (masks[:, pixel_mask == 0] == 0).all()
        assert (masks.sum(0)[pixel_mask == 1] <= 1).all()


def test_mixed_size_batch_targets_round_trip(processor):
    shapes = [(40, 60), (60, 40), (48, 48)]
    seg_maps = [semantic_map(*hw) for hw in shapes]
    out = processor([rgb(*hw) for hw in shapes], seg_maps)
    for seg, masks, labels, (h, w) in zip(
        seg_maps, out["mask_labels"], out["class_labels"], [(64, 96), (96, 64), (64, 64)]
    ):
        rebuilt = reconstruct(masks, labels)
        torch.testing.assert_close(rebuilt[:h, :w], resized_map(seg, (h, w)))
        assert (rebuilt[h:] == 255).all() and (rebuilt[:, w:] == 255).all()


def test_palette_png_map_uses_indices(processor, tmp_path):
    seg = semantic_map()
    png = Image.fromarray(seg, mode="P")
    palette = [0] * 768
    palette[3:6] = [200, 10, 10]  # index 1 is drawn red: ids must come from the index, not the colour
    palette[9:12] = [10, 200, 10]
    png.putpalette(palette)
    png.save(tmp_path / "map.png")
    loaded = Image.open(tmp_path / "map.png")
    assert loaded.mode == "P"
    out = processor(rgb(), loaded)
    assert out["class_labels"][0].tolist() == [0, 1, 3]
    torch.testing.assert_close(reconstruct(out["mask_labels"][0], out["class_labels"][0]), resized_map(seg, (64, 96)))


@pytest.mark.parametrize(
    "kind", ["numpy_hw1", "torch_long", "torch_1hw", "float_integers", "pil_l", "pil_i16", "batch_array"]
)
def test_good_map_kinds(processor, kind):
    seg = semantic_map()
    maps = {
        "numpy_hw1": seg[..., None],
        "torch_long": torch.from_numpy(seg).long(),
        "torch_1hw": torch.from_numpy(seg)[None],
        "float_integers": seg.astype(np.float32),
        "pil_l": Image.fromarray(seg),
        "pil_i16": Image.fromarray(seg.astype(np.uint16)),
        "batch_array": np.stack([seg]),
    }
    out = processor(rgb(), maps[kind])
    assert out["class_labels"][0].tolist() == [0, 1, 3]


def _bad_maps():
    seg = semantic_map()
    fractional = seg.astype(np.float32)
    fractional[10, 10] = 0.5
    negative = seg.astype(np.int32)
    negative[10, 10] = -3
    return {
        "size_mismatch": (seg[:, :50], ValueError, r"\(40, 50\).*\(40, 60\)"),
        "negative": (negative, ValueError, r"negative ids \[-3\]"),
        "fractional": (fractional, ValueError, "non-integer"),
        "rgb_pil": (Image.fromarray(rgb()), ValueError, "mode 'RGB'"),
        "rgb_array": (np.zeros((40, 60, 3), np.uint8), ValueError, "2-D"),
        "str": ("map.png", TypeError, r"PIL\.Image\.open"),
        "count": ([seg, seg], ValueError, "2 segmentation maps for 1 images"),
        "nan": (np.full((40, 60), np.nan), ValueError, "NaN"),
    }


@pytest.mark.parametrize("kind", list(_bad_maps()))
def test_bad_maps_are_refused(processor, kind):
    seg, error, match = _bad_maps()[kind]
    with pytest.raises(error, match=match):
        processor(rgb(), seg)


def test_labels_beyond_num_labels_are_refused():
    seg = semantic_map()
    seg[20, 20] = 7
    seg[22, 22] = 9  # a pixel the 40x60 → 32x48 nearest downscale skips
    assert 9 not in resized_map(seg, (32, 48))
    processor = MaskFormerImageProcessor(size={"shortest_edge": 32}, num_labels=4)
    processor(rgb(), semantic_map())  # 0, 1, 3 and 255 (ignore) are fine
    with pytest.raises(ValueError, match=r"class ids \[7, 9\].*num_labels=4"):
        processor(rgb(), seg)  # checked before resizing: the lost pixel still counts


def test_convert_segmentation_map_to_binary_masks():
    seg = semantic_map()
    masks, labels = convert_segmentation_map_to_binary_masks(seg, ignore_index=255)
    assert masks.shape == (3, 40, 60) and labels.tolist() == [0, 1, 3]
    torch.testing.assert_close(reconstruct(masks, labels), torch.from_numpy(seg).long())
    masks, labels = convert_segmentation_map_to_binary_masks(seg, do_reduce_labels=True)
    assert labels.tolist() == [0, 2]
    empty_masks, empty_labels = convert_segmentation_map_to_binary_masks(np.full((40, 60), 255))
    assert empty_masks.shape == (0, 40, 60) and empty_labels.shape == (0,)


def test_targets_match_transformers():
    """Parity gate: same masks and labels as transformers on a same-size batch (where it pads nothing)."""
    from transformers import MaskFormerImageProcessor as ReferenceProcessor

    seg = semantic_map(50, 70)
    ours = MaskFormerImageProcessor(size=SMALL, size_divisor=0)(rgb(50, 70), seg)
    ref = ReferenceProcessor(size=SMALL, size_divisor=0, ignore_index=255)(rgb(50, 70), seg, return_tensors="pt")
    torch.testing.assert_close(ours["mask_labels"][0], ref["mask_labels"][0])
    torch.testing.assert_close(ours["class_labels"][0], ref["class_labels"][0])


# ----- configuration -----


def test_save_and_load_round_trip(tmp_path):
    settings = [
        {"size": {"shortest_edge": 512, "longest_edge": 2048}, "ignore_index": None, "num_labels": 150},
        {"do_reduce_labels": True, "size_divisor": 64, "image_mean": [0.5] * 3, "image_std": [0.25] * 3},
        {"resample": 3, "do_pad": False, "rescale_factor": 0.5, "do_normalize": False},
    ]
    for i, kwargs in enumerate(settings):
        processor = MaskFormerImageProcessor(**kwargs)
        processor.save_pretrained(tmp_path / str(i))
        loaded = MaskFormerImageProcessor.from_pretrained(tmp_path / str(i))
        assert loaded.to_dict() == processor.to_dict()
        for key, value in kwargs.items():
            assert getattr(loaded, key) == value


def test_load_transformers_preprocessor_config(tmp_path):
    config = {
        "image_processor_type": "MaskFormerImageProcessor",
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "do_reduce_labels": False,
        "ignore_index": 255,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "num_labels": 150,
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 800, "longest_edge": 1333},
        "size_divisor": 32,
        "do_convert_rgb": None,
        "default_to_square": False,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    processor = MaskFormerImageProcessor.from_pretrained(tmp_path)
    assert processor.num_labels == 150 and processor.ignore_index == 255
    assert processor.size == {"shortest_edge": 800, "longest_edge": 1333}
    assert not hasattr(processor, "do_convert_rgb")
    overridden = MaskFormerImageProcessor.from_pretrained(tmp_path, ignore_index=0, num_labels=10)
    assert overridden.ignore_index == 0 and overridden.num_labels == 10


def test_load_legacy_hub_config(tmp_path):
    """Older Hub configs: int size with max_size, reduce_labels, size_divisibility, feature extractor type."""
    config = {
        "feature_extractor_type": "MaskFormerFeatureExtractor",
        "do_normalize": True,
        "do_resize": True,
        "ignore_index": 255,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "max_size": 2048,
        "reduce_labels": True,
        "size": 512,
        "size_divisibility": 64,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    processor = MaskFormerImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"shortest_edge": 512, "longest_edge": 2048}
    assert processor.do_reduce_labels is True and processor.size_divisor == 64
    assert "reduce_labels" not in processor.to_dict() and "max_size" not in processor.to_dict()


def test_load_config_saved_by_transformers(tmp_path):
    from transformers import MaskFormerImageProcessor as ReferenceProcessor

    ReferenceProcessor(
        size={"shortest_edge": 512, "longest_edge": 1024}, ignore_index=0, num_labels=20
    ).save_pretrained(tmp_path)
    processor = MaskFormerImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"shortest_edge": 512, "longest_edge": 1024}
    assert processor.ignore_index == 0 and processor.num_labels == 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": {"width": 3}}, "keys"),
        ({"size": {"shortest_edge": 0}}, "positive int"),
        ({"size": {"shortest_edge": 900, "longest_edge": 800}}, "longest_edge must be >="),
        ({"image_std": [1.0, 0.0, 1.0]}, "image_std"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"resample": 4}, "resample"),
        ({"ignore_index": -1}, "ignore_index"),
        ({"num_labels": 0}, "num_labels"),
        ({"size_divisor": -32}, "size_divisor"),
        ({"rescale_factor": 0}, "rescale_factor"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskFormerImageProcessor(**kwargs)
    with pytest.raises(ValueError, match=match):
        MaskFormerImageProcessor(size=SMALL)(rgb(), **kwargs)


# ----- post-processing wrappers -----


@dataclass
class FakeOutput(ModelOutput):
    class_queries_logits: torch.Tensor | None = None
    masks_queries_logits: torch.Tensor | None = None
    pixel_mask: torch.Tensor | None = None


def fake_outputs(with_pixel_mask: bool = True) -> FakeOutput:
    """Two images padded to 64x96: the first fills it, the second is 48x80. Query 0 says class 1 on the real
    pixels, query 1 says class 2 only on the padding; so cropping the padding must leave class 1 only."""
    class_logits = torch.full((2, 2, 4), -10.0)
    class_logits[:, 0, 1] = 10.0
    class_logits[:, 1, 2] = 10.0
    pixel_mask = torch.zeros(2, 64, 96, dtype=torch.long)
    pixel_mask[0] = 1
    pixel_mask[1, :48, :80] = 1
    real = torch.zeros(2, 16, 24, dtype=torch.bool)  # at mask-logit resolution (stride 4)
    real[0] = True
    real[1, :13, :21] = True  # one cell beyond 48x80, so bilinear upsampling stays clean up to the crop
    mask_logits = torch.stack([torch.where(real, 10.0, -10.0), torch.where(real, -10.0, 10.0)], dim=1)
    return FakeOutput(class_logits, mask_logits, pixel_mask if with_pixel_mask else None)


def test_post_processing_geometry_from_pixel_mask(processor):
    _, _, geometry = processor.post_processing_inputs(fake_outputs(), [(40, 60), (30, 50)])
    assert geometry == {
        "padded_size": (64, 96),
        "valid_sizes": [(64, 96), (48, 80)],
        "target_sizes": [(40, 60), (30, 50)],
    }
    _, _, geometry = processor.post_processing_inputs(dict(fake_outputs()), None)
    # No target sizes: transformers' default, the mask logits' resolution.
    assert geometry["valid_sizes"] == [(64, 96), (48, 80)] and geometry["target_sizes"] == [
        (16, 24),
        (16, 24),
    ]


def test_post_processing_geometry_without_pixel_mask(processor):
    outputs = fake_outputs(with_pixel_mask=False)
    _, _, geometry = processor.post_processing_inputs(outputs, torch.tensor([[40, 60], [30, 50]]))
    # As transformers: the whole padded input (4 x logits) is valid, whatever the target size.
    assert geometry == {"padded_size": (64, 96), "valid_sizes": None, "target_sizes": [(40, 60), (30, 50)]}
    _, _, geometry = processor.post_processing_inputs(outputs, [(800, 1200)] * 2)  # larger than the input: fine
    assert geometry["valid_sizes"] is None and geometry["target_sizes"] == [(800, 1200)] * 2


def test_post_processing_bad_arguments(processor):
    with pytest.raises(ValueError, match="1 target sizes for a batch of 2"):
        processor.post_processing_inputs(fake_outputs(), [(40, 60)])
    with pytest.raises(ValueError, match=r"target_sizes\[1\]"):
        processor.post_processing_inputs(fake_outputs(), [(40, 60), (30, -1)])
    with pytest.raises(TypeError, match="class_queries_logits"):
        processor.post_processing_inputs({"logits": torch.zeros(1)}, None)


@pytest.mark.skipif(not POST_PROCESSING_READY, reason="image_processing/post_processing.py not written yet")
def test_post_process_semantic_crops_padding(processor):
    maps = processor.post_process_semantic_segmentation(fake_outputs(), target_sizes=[(40, 60), (30, 50)])
    assert [tuple(m.shape) for m in maps] == [(40, 60), (30, 50)]
    assert all((m == 1).all() for m in maps)  # class 2 lived only in the padding
    unresized = processor.post_process_semantic_segmentation(dict(fake_outputs()))
    assert [tuple(m.shape) for m in unresized] == [(16, 24), (16, 24)]  # transformers' default size


@pytest.mark.skipif(not POST_PROCESSING_READY, reason="image_processing/post_processing.py not written yet")
def test_post_process_instance_and_panoptic(processor):
    instance = processor.post_process_instance_segmentation(fake_outputs(), target_sizes=[(40, 60), (30, 50)])
    panoptic = processor.post_process_panoptic_segmentation(fake_outputs(), target_sizes=[(40, 60), (30, 50)])
    for results in (instance, panoptic):
        assert [tuple(r["segmentation"].shape) for r in results] == [(40, 60), (30, 50)]
        for result in results:
            assert [s["label_id"] for s in result["segments_info"]] == [1]
            segment_id = result["segments_info"][0]["id"]
            assert (result["segmentation"] == segment_id).all()
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_panoptic_segmentation(fake_outputs(), target_sizes=[(40, 60)])
