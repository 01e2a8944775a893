"""Semantic, instance and panoptic post-processing: hand-computed cases, and exact equality with the authors'
algorithm (tests/reference_inference.py, written from their code) up to float ties (tests/exact.py), on random,
crafted and recorded outputs, through each `method`.

Hand-built cases: 8x8 mask logits of a 32x32 padded input (stride 4). "Left" masks are +20 on low-res
columns 0..3 and -20 elsewhere, so the upsampled logit is 20 on columns 0..13, 15 on column 14, 5 on 15,
-5 on 16, -15 on 17 and -20 beyond ("right" mirrors it); the sigmoid comes after the upsampling, as in
the original: probability 1.0 on columns 0..14 (to float precision), 0.9933 on 15, 0.0067 on 16.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import MaskFormerImageProcessor

from benchmarks.common import random_outputs
from benchmarks.recorded import SETS, load_recorded
from modeling_maskformer.image_processing import MaskFormerImageProcessor as OurProcessor
from modeling_maskformer.image_processing.post_processing import (
    instance_segmentation,
    panoptic_segmentation,
    semantic_scores,
    semantic_segmentation,
)
from modeling_maskformer.image_processing.resampling import Geometry
from modeling_maskformer.image_processing.tiles import Tiles

import exact
import reference_inference as reference

PADDED = (32, 32)
LEFT = torch.full((8, 8), -20.0)
LEFT[:, :4] = 20.0
RIGHT, EVERYWHERE = LEFT.flip(-1), torch.full((8, 8), 20.0)
# Low-res column 2 onwards: probability >= 0.5 from pixel column 8 on.
FROM_COL_2 = torch.full((8, 8), -20.0)
FROM_COL_2[:, 2:] = 20.0


def outputs(*queries: tuple[list[float], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities over K classes + "no object", 8x8 mask logits) per query -> (B=1) logits."""
    class_logits = torch.tensor([probs for probs, _ in queries]).clamp(min=1e-8).log()
    return class_logits[None], torch.stack([mask for _, mask in queries])[None]


def columns(*spans: tuple[int, int, int], height: int = 32) -> torch.Tensor:
    """A map filled span by span: (first column, end column, value)."""
    out = torch.zeros(height, max(end for _, end, _ in spans), dtype=torch.int64)
    for first, end, value in spans:
        out[:, first:end] = value
    return out


def ids_labels_fused(segments: list[dict]) -> list[tuple]:
    return [(s["id"], s["label_id"], s.get("was_fused", False)) for s in segments]


# ----------------------------------------------------------------------------------------------------
# Semantic
# ----------------------------------------------------------------------------------------------------
# Class 0 on the left, class 2 on the right, symmetric probabilities: the boundary is where the two
# masks are equal.
SEMANTIC = outputs(([0.9, 0.04, 0.03, 0.03], LEFT), ([0.03, 0.04, 0.9, 0.03], RIGHT))


def test_semantic_halves():
    (segmentation,) = semantic_segmentation(*SEMANTIC, padded_size=PADDED)
    assert segmentation.dtype == torch.int64
    assert torch.equal(segmentation, columns((0, 16, 0), (16, 32, 2)))


def test_semantic_target_size():
    (segmentation,) = semantic_segmentation(*SEMANTIC, padded_size=PADDED, target_sizes=[(16, 64)])
    assert torch.equal(segmentation, columns((0, 32, 0), (32, 64, 2), height=16))


def test_semantic_crops_the_padding_before_resizing():
    # Only columns 0..23 are image: cropped and stretched back to 32 columns, the class-0 region
    # (columns 0..15 of the padded input) covers 0..20 (worked out from the bilinear weights).
    (cropped,) = semantic_segmentation(*SEMANTIC, padded_size=PADDED, valid_sizes=[(32, 24)], target_sizes=[(32, 32)])
    assert torch.equal(cropped, columns((0, 21, 0), (21, 32, 2)))
    (valid_only,) = semantic_segmentation(*SEMANTIC, padded_size=PADDED, valid_sizes=[(32, 24)])
    assert torch.equal(valid_only, columns((0, 16, 0), (16, 24, 2)))


def test_semantic_follows_the_original_order_not_transformers():
    """transformers applies the sigmoid at stride 4, before resizing; the authors upsample the logits first.
    Without padding the two differ only in that order: ours equals the original, not transformers."""
    class_logits, mask_logits = random_outputs(
        "confident", batch_size=2, num_queries=20, num_classes=10, mask_size=(32, 32), num_objects=5
    )
    theirs = MaskFormerImageProcessor().post_process_semantic_segmentation(
        SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
        target_sizes=[(128, 128)] * 2,
    )
    ours = semantic_segmentation(class_logits, mask_logits, padded_size=(128, 128))
    original = reference.semantic(class_logits, mask_logits, padded_size=(128, 128))
    assert all(torch.equal(a, b) for a, b in zip(ours, original))
    assert not all(torch.equal(a, b) for a, b in zip(ours, theirs))


# ----------------------------------------------------------------------------------------------------
# Instance
# ----------------------------------------------------------------------------------------------------
def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Mean probability inside a half mask (probability > 0.5: columns 0..15, logits 20 x 14, 15, 5).
HALF_MEAN = (14 * _sigmoid(20) + _sigmoid(15) + _sigmoid(5)) / 16


def test_instance_scores_ids_and_map():
    class_logits, mask_logits = outputs(
        ([0.9, 0.05, 0.05], LEFT),
        ([0.1, 0.8, 0.1], RIGHT),
        ([0.01, 0.01, 0.98], EVERYWHERE),  # no object
    )
    (result,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED)
    assert ids_labels_fused(result["segments_info"]) == [(0, 0, False), (1, 1, False)]
    scores = [s["score"] for s in result["segments_info"]]
    assert scores == pytest.approx([0.9 * HALF_MEAN, 0.8 * HALF_MEAN], abs=1e-5)
    assert result["segmentation"].dtype == torch.int32
    assert torch.equal(result["segmentation"].long(), columns((0, 16, 0), (16, 32, 1)))

    (strict,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED, threshold=0.8)
    assert ids_labels_fused(strict["segments_info"]) == [(0, 0, False)]
    assert torch.equal(strict["segmentation"].long(), columns((0, 16, 0), (16, 32, -1)))

    # A stricter mask threshold drops column 15 (probability sigmoid(5) = 0.9933) from the binary mask.
    (sharp,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED, mask_threshold=0.995)
    sharp_mean = (14 * _sigmoid(20) + _sigmoid(15)) / 15
    assert [s["score"] for s in sharp["segments_info"]] == pytest.approx(
        [0.9 * sharp_mean, 0.8 * sharp_mean], abs=1e-5
    )
    assert torch.equal(sharp["segmentation"].long(), columns((0, 15, 0), (15, 17, -1), (17, 32, 1)))


def test_instance_overlap_threshold_and_binary_maps():
    # Instance 1 (score 0.8) covers everything; instance 0 (score 0.9 * HALF_MEAN = 0.8996) outbids it on its
    # whole mask, columns 0..15 (0.8996 * 0.9933 > 0.8 on column 15). Visible / own area: 16/16 and 16/32.
    class_logits, mask_logits = outputs(([0.9, 0.05, 0.05], LEFT), ([0.1, 0.8, 0.1], EVERYWHERE))
    kw = {"padded_size": PADDED}
    (result,) = instance_segmentation(class_logits, mask_logits, **kw)
    assert ids_labels_fused(result["segments_info"]) == [(0, 0, False)]
    assert torch.equal(result["segmentation"].long(), columns((0, 16, 0), (16, 32, -1)))

    (loose,) = instance_segmentation(class_logits, mask_logits, overlap_mask_area_threshold=0.5, **kw)
    assert ids_labels_fused(loose["segments_info"]) == [(0, 0, False), (1, 1, False)]
    assert torch.equal(loose["segmentation"].long(), columns((0, 16, 0), (16, 32, 1)))

    (binary,) = instance_segmentation(
        class_logits, mask_logits, overlap_mask_area_threshold=0.5, return_binary_maps=True, **kw
    )
    maps = binary["segmentation"]
    assert maps.dtype == torch.bool and maps.shape == (2, 32, 32)
    assert torch.equal(maps[0].long(), columns((0, 16, 1), (16, 32, 0)))  # whole masks, overlaps kept
    assert bool(maps[1].all())


def test_instance_nothing_found():
    class_logits, mask_logits = outputs(([0.01, 0.01, 0.98], LEFT))
    (result,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED, target_sizes=[(10, 12)])
    assert result["segments_info"] == []
    assert torch.equal(result["segmentation"], torch.full((10, 12), -1, dtype=torch.int32))
    (theirs,) = MaskFormerImageProcessor().post_process_instance_segmentation(
        SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
        target_sizes=[(10, 12)],
    )
    assert torch.equal(theirs["segmentation"].int(), result["segmentation"])  # transformers fills -1 too
    (binary,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED, return_binary_maps=True)
    assert binary["segmentation"].shape == (0, 32, 32)


def test_instance_format_matches_transformers():
    class_logits, mask_logits = outputs(([0.9, 0.05, 0.05], LEFT), ([0.1, 0.8, 0.1], RIGHT))
    (theirs,) = MaskFormerImageProcessor().post_process_instance_segmentation(
        SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
        target_sizes=[PADDED],
    )
    (ours,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED)
    assert ours.keys() == theirs.keys()
    assert [s.keys() for s in ours["segments_info"]] == [s.keys() for s in theirs["segments_info"]]


# ----------------------------------------------------------------------------------------------------
# Panoptic
# ----------------------------------------------------------------------------------------------------
def panoptic(*queries, **kwargs) -> dict:
    return panoptic_segmentation(*outputs(*queries), padded_size=PADDED, **kwargs)[0]


def test_panoptic_segments_and_no_object():
    result = panoptic(
        ([0.9, 0.05, 0.03, 0.02], LEFT),
        ([0.02, 0.02, 0.05, 0.91], EVERYWHERE),
        ([0.05, 0.9, 0.03, 0.02], RIGHT),
    )
    assert ids_labels_fused(result["segments_info"]) == [
        (1, 0, False),
        (2, 1, False),
    ]  # "no object" query skipped
    assert [s["score"] for s in result["segments_info"]] == pytest.approx([0.9, 0.9])
    assert result["segmentation"].dtype == torch.int32
    assert torch.equal(result["segmentation"].long(), columns((0, 16, 1), (16, 32, 2)))


def test_panoptic_fuses_stuff():
    queries = (([0.9, 0.05, 0.05], LEFT), ([0.9, 0.05, 0.05], RIGHT))
    separate = panoptic(*queries)
    assert ids_labels_fused(separate["segments_info"]) == [(1, 0, False), (2, 0, False)]
    fused = panoptic(*queries, label_ids_to_fuse={0})
    assert ids_labels_fused(fused["segments_info"]) == [(1, 0, True)]
    assert torch.equal(fused["segmentation"], torch.ones(32, 32, dtype=torch.int32))


def test_panoptic_threshold_and_overlap_drops():
    # Score 0.6 <= threshold 0.7: the right query goes, the left one then claims every pixel.
    weak = panoptic(([0.9, 0.05, 0.05], LEFT), ([0.05, 0.6, 0.35], RIGHT), threshold=0.7)
    assert ids_labels_fused(weak["segments_info"]) == [(1, 0, False)]
    assert torch.equal(weak["segmentation"], torch.ones(32, 32, dtype=torch.int32))

    # Query 1 (0.85) owns columns >= 8 (24 columns) but wins only 16..31 against query 0 (0.9, probability
    # 0.9933 on column 15): 16/24 = 0.67 < 0.8, dropped, leaving those pixels without a segment; kept at 0.6.
    queries = (([0.9, 0.05, 0.05], LEFT), ([0.05, 0.85, 0.1], FROM_COL_2))
    strict = panoptic(*queries)
    assert ids_labels_fused(strict["segments_info"]) == [(1, 0, False)]
    assert torch.equal(strict["segmentation"].long(), columns((0, 16, 1), (16, 32, 0)))
    loose = panoptic(*queries, overlap_mask_area_threshold=0.6)
    assert ids_labels_fused(loose["segments_info"]) == [(1, 0, False), (2, 1, False)]
    assert torch.equal(loose["segmentation"].long(), columns((0, 16, 1), (16, 32, 2)))

    # Outbid everywhere: no visible pixel, no segment (ids stay consecutive).
    covered = panoptic(([0.9, 0.05, 0.05], LEFT), ([0.02, 0.95, 0.03], EVERYWHERE))
    assert ids_labels_fused(covered["segments_info"]) == [(1, 1, False)]
    assert torch.equal(covered["segmentation"], torch.ones(32, 32, dtype=torch.int32))


def test_panoptic_empty():
    result = panoptic_segmentation(
        *outputs(([0.01, 0.01, 0.98], LEFT), ([0.3, 0.3, 0.4], RIGHT)),
        padded_size=PADDED,
        target_sizes=[(20, 30)],
    )[0]
    assert result["segments_info"] == []
    assert torch.equal(result["segmentation"], torch.zeros(20, 30, dtype=torch.int32))


def test_panoptic_crops_the_padding():
    queries = (([0.9, 0.05, 0.05], LEFT), ([0.05, 0.9, 0.05], RIGHT))
    result = panoptic(*queries, valid_sizes=[(32, 24)], target_sizes=[(32, 32)])
    assert torch.equal(result["segmentation"].long(), columns((0, 21, 1), (21, 32, 2)))


def test_panoptic_matches_transformers_on_the_simple_case():
    class_logits, mask_logits = outputs(([0.9, 0.05, 0.05], LEFT), ([0.05, 0.85, 0.1], RIGHT))
    (theirs,) = MaskFormerImageProcessor().post_process_panoptic_segmentation(
        SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
        target_sizes=[PADDED],
        label_ids_to_fuse=set(),
    )
    (ours,) = panoptic_segmentation(class_logits, mask_logits, padded_size=PADDED)
    assert torch.equal(ours["segmentation"], theirs["segmentation"])
    assert ours["segments_info"] == theirs["segments_info"]


# ----------------------------------------------------------------------------------------------------
# Agreement with the original algorithm (tests/reference_inference.py)
# ----------------------------------------------------------------------------------------------------
SIZES = [
    pytest.param({"padded_size": (128, 128)}, id="unpadded"),
    pytest.param(
        {
            "padded_size": (128, 128),
            "valid_sizes": [(128, 96), (100, 128)],
            "target_sizes": [(150, 100), (90, 128)],
        },
        id="padded-resized",
    ),
    pytest.param(
        {
            "padded_size": (128, 128),
            "valid_sizes": [(77, 128), (128, 128)],
            "target_sizes": [(40, 70), (300, 301)],
        },
        id="odd",
    ),
]


METHODS = ("dense", "bounded", "auto")


def check_all_tasks(
    class_logits, mask_logits, sizes, *, instance=None, panoptic=None, methods=METHODS, band_rows=None
):
    """Every task through every method (in bands of `band_rows` output rows) equals the original's maps (float ties
    aside: tests/exact.py)."""
    instance, panoptic = instance or {"threshold": 0.3}, panoptic or {"label_ids_to_fuse": {0, 1, 2}}
    for function, check, options in [
        (semantic_segmentation, exact.check_semantic, {}),
        (instance_segmentation, exact.check_instance, instance),
        (panoptic_segmentation, exact.check_panoptic, panoptic),
    ]:
        results = {
            m: function(class_logits, mask_logits, method=m, band_rows=band_rows, **sizes, **options) for m in methods
        }
        check(results, class_logits, mask_logits, sizes, **options)


@pytest.mark.parametrize("kind", ["confident", "noisy"])
@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("num_classes", [10, 24])
def test_agrees_with_the_original_on_crafted_outputs(kind, sizes, num_classes):
    class_logits, mask_logits = random_outputs(
        kind, batch_size=2, num_queries=20, num_classes=num_classes, mask_size=(32, 32), num_objects=6
    )
    check_all_tasks(class_logits, mask_logits, sizes)


def _geometry(recorded: dict, scale: float = 1.0) -> dict:
    real = recorded["pixel_mask"].bool()
    valid = torch.stack([real.any(2).sum(1), real.any(1).sum(1)], 1).tolist()
    targets = [[round(h * scale), round(w * scale)] for h, w in recorded["target_sizes"].tolist()]
    return {"padded_size": tuple(real.shape[-2:]), "valid_sizes": valid, "target_sizes": targets}


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("scale", [1.0, 1.37, 0.6])
def test_agrees_with_the_original_on_a_trained_models_outputs(name, scale):
    """Outputs of the `make demo` model on held-out scenes, recorded (demo_mixed: a padded mixed-size batch),
    at the scenes' sizes and resized up and down."""
    recorded = load_recorded(name)
    class_logits, mask_logits = recorded["class_queries_logits"], recorded["masks_queries_logits"]
    check_all_tasks(
        class_logits,
        mask_logits,
        _geometry(recorded, scale),
        instance={"threshold": 0.5},
        panoptic={"threshold": 0.8, "label_ids_to_fuse": {6, 7, 8}},
    )


def test_agrees_with_the_original_on_untrained_outputs():
    """A freshly initialised model: near-uniform class probabilities, large smooth mask logits."""
    generator = torch.Generator().manual_seed(3)
    class_logits = torch.randn(1, 30, 41, generator=generator) * 0.3
    coarse = torch.randn(1, 30, 12, 14, generator=generator) * 5
    mask_logits = torch.nn.functional.interpolate(coarse, size=(48, 56), mode="bilinear") + torch.randn(
        1, 30, 48, 56, generator=generator
    )
    sizes = {"padded_size": (192, 224), "valid_sizes": [(192, 213)], "target_sizes": [(288, 320)]}
    check_all_tasks(class_logits, mask_logits, sizes, instance={"threshold": 0.0}, panoptic={"threshold": 0.0})


def test_agrees_with_the_original_on_tiny_and_coarse_grids():
    """Mask grids smaller than a 3x3 window and a target smaller than the mask grid."""
    for mask_size, padded, valid, target in [
        ((2, 3), (8, 12), (7, 12), (29, 5)),
        ((16, 16), (64, 64), (50, 64), (9, 11)),
    ]:
        class_logits, mask_logits = random_outputs(
            "noisy", num_queries=8, num_classes=4, mask_size=mask_size, num_objects=3
        )
        sizes = {"padded_size": padded, "valid_sizes": [valid], "target_sizes": [target]}
        check_all_tasks(class_logits, mask_logits, sizes, panoptic={"threshold": 0.2})


def test_non_finite_queries_are_ignored_with_a_warning(caplog):
    class_logits, mask_logits = outputs(
        ([0.9, 0.05, 0.05], LEFT), ([0.05, 0.9, 0.05], RIGHT), ([0.05, 0.9, 0.05], EVERYWHERE)
    )
    broken_class, broken_mask = class_logits.clone(), mask_logits.clone()
    broken_class[0, 2, 0] = math.inf  # would win everywhere through a NaN softmax
    broken_mask[0, 2, 3, 3] = math.nan
    clean = (class_logits[:, :2], mask_logits[:, :2])
    with caplog.at_level("WARNING"):
        semantic = semantic_segmentation(broken_class, broken_mask, padded_size=PADDED)[0]
    assert "non-finite" in caplog.text
    assert torch.equal(semantic, semantic_segmentation(*clean, padded_size=PADDED)[0])
    assert torch.equal(semantic, columns((0, 16, 0), (16, 32, 1)))
    for function in (instance_segmentation, panoptic_segmentation):
        ours, expected = (
            function(broken_class, broken_mask, padded_size=PADDED)[0],
            function(*clean, padded_size=PADDED)[0],
        )
        assert torch.equal(ours["segmentation"], expected["segmentation"])
        assert ours["segments_info"] == expected["segments_info"]


@pytest.mark.parametrize("method", ["dense", "bounded"])
def test_panoptic_checks_only_the_masks_of_kept_queries(caplog, method):
    """A NaN mask of a query below the threshold is never read: no warning, the same segments; one of a kept query
    is ignored with a warning."""
    class_logits, mask_logits = outputs(
        ([0.9, 0.05, 0.05], LEFT), ([0.05, 0.9, 0.05], RIGHT), ([0.3, 0.3, 0.4], EVERYWHERE)
    )
    clean = panoptic_segmentation(class_logits[:, :2], mask_logits[:, :2], padded_size=PADDED, method=method)[0]
    discarded, kept = mask_logits.clone(), mask_logits.clone()
    discarded[0, 2, 3, 3] = kept[0, 1, 3, 3] = math.nan
    with caplog.at_level("WARNING"):
        ours = panoptic_segmentation(class_logits, discarded, padded_size=PADDED, method=method)[0]
    assert "non-finite" not in caplog.text
    assert torch.equal(ours["segmentation"], clean["segmentation"])
    assert ours["segments_info"] == clean["segments_info"]
    with caplog.at_level("WARNING"):
        ours = panoptic_segmentation(class_logits, kept, padded_size=PADDED, method=method)[0]
    assert "non-finite (NaN or inf) logits: [1] of 2 per image" in caplog.text
    expected = panoptic_segmentation(class_logits[:, :1], mask_logits[:, :1], padded_size=PADDED, method=method)[0]
    assert torch.equal(ours["segmentation"], expected["segmentation"])
    assert ours["segments_info"] == expected["segments_info"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("method", ["auto", "dense"])
def test_the_dense_path_on_gpu_is_the_original(method):
    """On CUDA "auto" is the dense path; its maps (brought back to the CPU) are the original's, ties aside."""
    recorded = load_recorded("demo_mixed")
    class_logits, mask_logits = recorded["class_queries_logits"], recorded["masks_queries_logits"]
    cases = [(class_logits, mask_logits, _geometry(recorded, 1.37))]
    class_logits, mask_logits = random_outputs(
        "confident", batch_size=2, num_queries=20, num_classes=10, mask_size=(32, 32), num_objects=6
    )
    cases.append(
        (
            class_logits,
            mask_logits,
            {
                "padded_size": (128, 128),
                "valid_sizes": [(128, 96), (100, 128)],
                "target_sizes": [(150, 100), (90, 128)],
            },
        )
    )
    for class_logits, mask_logits, sizes in cases:
        on_gpu = (class_logits.cuda(), mask_logits.cuda())
        exact.check_semantic(semantic_segmentation(*on_gpu, method=method, **sizes), class_logits, mask_logits, sizes)
        options = {"threshold": 0.3}
        exact.check_instance(
            instance_segmentation(*on_gpu, method=method, **sizes, **options),
            class_logits,
            mask_logits,
            sizes,
            **options,
        )
        options = {"label_ids_to_fuse": {0, 1, 2}}
        exact.check_panoptic(
            panoptic_segmentation(*on_gpu, method=method, **sizes, **options),
            class_logits,
            mask_logits,
            sizes,
            **options,
        )


def test_input_checks():
    for function in (semantic_segmentation, instance_segmentation, panoptic_segmentation):
        with pytest.raises(ValueError, match="method must be 'auto', 'dense' or 'bounded', got 'fast'"):
            function(*SEMANTIC, padded_size=PADDED, method="fast")
    with pytest.raises(ValueError, match="does not fit"):
        semantic_segmentation(*SEMANTIC, padded_size=PADDED, valid_sizes=[(40, 32)])
    with pytest.raises(ValueError, match="target_sizes"):
        panoptic_segmentation(*SEMANTIC, padded_size=PADDED, target_sizes=[(32, 32), (32, 32)])


@pytest.mark.parametrize("scale", [1.0, 1.5, 0.7])
def test_semantic_scores_are_the_originals_before_the_argmax(scale):
    recorded = load_recorded("demo_mixed")
    class_logits, mask_logits = recorded["class_queries_logits"], recorded["masks_queries_logits"]
    sizes = _geometry(recorded, scale)
    upsampled = reference.upsampled(mask_logits, sizes["padded_size"])
    scores = semantic_scores(class_logits, mask_logits, **sizes)
    for b, (valid, target) in enumerate(zip(sizes["valid_sizes"], sizes["target_sizes"])):
        semseg = torch.einsum("qc,qhw->chw", class_logits[b].softmax(-1)[:, :-1], upsampled[b].sigmoid())
        expected = reference.sem_seg_postprocess(semseg, valid, target)
        assert scores[b].shape == expected.shape
        assert torch.allclose(scores[b], expected, atol=1e-5)
    band = semantic_scores(class_logits, mask_logits, rows=(3, 11), **sizes)
    assert all(torch.equal(part, whole[:, 3:11]) for part, whole in zip(band, scores))
    with pytest.raises(ValueError, match="rows"):
        semantic_scores(class_logits, mask_logits, rows=(5, 5), **sizes)


@pytest.mark.parametrize(
    "low, padded, valid, target",
    [
        ((24, 20), (96, 80), (96, 80), (96, 80)),  # stride 4, no resize: torch's upsampling of a block
        ((24, 20), (96, 80), (90, 73), (90, 73)),  # the same, with padding cropped
        ((24, 20), (96, 80), (90, 73), (131, 57)),  # resized: the composite of both resamplings
        ((24, 20), (100, 83), (100, 83), (100, 83)),  # padded size not 4x the logits
    ],
)
def test_a_region_is_the_originals_resampling_there(low, padded, valid, target):
    """Tiles.region (the instance masks' bounding boxes) against the authors' resampling of the whole map, over
    regions touching every edge, single pixels and random boxes; to float32 rounding of the blend weights
    (a few 1e-7 of the logits' magnitude: the composite of two resamplings rounds its weights once)."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(*low, generator=generator) * 6
    whole = reference.sem_seg_postprocess(reference.upsampled(logits[None, None], padded)[0], valid, target)[0]
    geometry = Geometry(low, padded, valid, target, logits.device)
    tolerance_scale = float(logits.abs().max())
    height, width = target
    boxes = [
        ((0, height), (0, width)),
        ((0, 1), (0, 1)),
        ((height - 1, height), (width - 1, width)),
        ((2, 3), (5, 6)),
    ]
    for _ in range(100):
        top, left = (int(torch.randint(n, (1,), generator=generator)) for n in target)
        bottom = int(torch.randint(top + 1, height + 1, (1,), generator=generator))
        right = int(torch.randint(left + 1, width + 1, (1,), generator=generator))
        boxes.append(((top, bottom), (left, right)))
    for (top, bottom), (left, right) in boxes:
        region = Tiles(geometry).region(logits, (top, bottom), (left, right))
        assert region.shape == (bottom - top, right - left)
        torch.testing.assert_close(region, whole[top:bottom, left:right], atol=2e-6 * tolerance_scale, rtol=0)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("kind", ["confident", "noisy"])
def test_instance_boxes_hold_every_mask_pixel(kind, sizes):
    """The bounded instance path evaluates each candidate only inside the box its low-res logits can reach the
    threshold from; over padded, resized and odd geometries and three mask thresholds, the maps stay the original's."""
    class_logits, mask_logits = random_outputs(
        kind, batch_size=2, num_queries=20, num_classes=10, mask_size=(32, 32), num_objects=6
    )
    for mask_threshold in (0.5, 0.9, 0.02):
        options = {"threshold": 0.3, "mask_threshold": mask_threshold}
        ours = instance_segmentation(class_logits, mask_logits, method="bounded", **sizes, **options)
        exact.check_instance(ours, class_logits, mask_logits, sizes, **options)


def test_the_processor_passes_the_method_through():
    """post_process_* accept the same `method`; each gives the original's maps, and a bad one is named."""
    recorded = load_recorded("demo_mixed")
    outputs = SimpleNamespace(
        **{k: recorded[k] for k in ("class_queries_logits", "masks_queries_logits", "pixel_mask")}
    )
    targets = [tuple(size) for size in recorded["target_sizes"].tolist()]
    sizes = _geometry(recorded)
    processor, logits = OurProcessor(), (outputs.class_queries_logits, outputs.masks_queries_logits)
    for name, check in (
        ("semantic", exact.check_semantic),
        ("instance", exact.check_instance),
        ("panoptic", exact.check_panoptic),
    ):
        function = getattr(processor, f"post_process_{name}_segmentation")
        check({m: function(outputs, target_sizes=targets, method=m) for m in METHODS}, *logits, sizes)
    for name in ("semantic", "instance", "panoptic"):
        with pytest.raises(ValueError, match="method must be"):
            getattr(processor, f"post_process_{name}_segmentation")(outputs, target_sizes=targets, method="gpu")
