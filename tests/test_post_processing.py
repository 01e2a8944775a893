"""Semantic, instance and panoptic post-processing: hand-computed cases, parity with the literal
reference implementations, and with transformers where it runs the same algorithm.

Hand-built cases: 8x8 mask logits of a 32x32 padded input (stride 4). "Left" masks are +20 on low-res
columns 0..3 and -20 elsewhere, so after bilinear upsampling the probability is 1 on columns 0..13,
0.875 on column 14, 0.625 on 15, 0.375 on 16, 0.125 on 17 and 0 beyond ("right" mirrors it).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import MaskFormerImageProcessor

from modeling_maskformer.benchmarks.common import random_outputs
from modeling_maskformer.image_processing.post_processing import (
    _reference_instance,
    _reference_panoptic,
    _reference_semantic,
    instance_segmentation,
    panoptic_segmentation,
    semantic_segmentation,
)

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
    (cropped,) = semantic_segmentation(
        *SEMANTIC, padded_size=PADDED, valid_sizes=[(32, 24)], target_sizes=[(32, 32)]
    )
    assert torch.equal(cropped, columns((0, 21, 0), (21, 32, 2)))
    (valid_only,) = semantic_segmentation(*SEMANTIC, padded_size=PADDED, valid_sizes=[(32, 24)])
    assert torch.equal(valid_only, columns((0, 16, 0), (16, 24, 2)))


def test_semantic_matches_transformers_without_padding():
    """transformers resizes without cropping: the same algorithm when there is nothing to crop."""
    class_logits, mask_logits = random_outputs(
        "confident", batch_size=2, num_queries=20, num_classes=10, mask_size=(32, 32), num_objects=5
    )
    theirs = MaskFormerImageProcessor().post_process_semantic_segmentation(
        SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits),
        target_sizes=[(128, 128)] * 2,
    )
    ours = semantic_segmentation(class_logits, mask_logits, padded_size=(128, 128))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------
# Instance
# ----------------------------------------------------------------------------------------------------
# Mean probability inside a half mask (prob > 0.5: 14 columns of 1, then 0.875 and 0.625).
HALF_MEAN = (14 + 0.875 + 0.625) / 16


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

    # A stricter mask threshold shrinks the binary mask to the columns of probability 1.
    (sharp,) = instance_segmentation(class_logits, mask_logits, padded_size=PADDED, mask_threshold=0.9)
    assert [s["score"] for s in sharp["segments_info"]] == pytest.approx([0.9, 0.8], abs=1e-5)
    assert torch.equal(sharp["segmentation"].long(), columns((0, 14, 0), (14, 18, -1), (18, 32, 1)))


def test_instance_overlap_threshold_and_binary_maps():
    # Instance 1 (score 0.8) covers everything; instance 0 (score 0.871875) outbids it on columns
    # 0..13 only (0.871875 * 0.875 < 0.8 on column 14). Visible / own area: 14/16 and 18/32.
    class_logits, mask_logits = outputs(([0.9, 0.05, 0.05], LEFT), ([0.1, 0.8, 0.1], EVERYWHERE))
    kw = {"padded_size": PADDED}
    (result,) = instance_segmentation(class_logits, mask_logits, **kw)
    assert ids_labels_fused(result["segments_info"]) == [(0, 0, False)]
    assert torch.equal(result["segmentation"].long(), columns((0, 14, 0), (14, 32, -1)))

    (loose,) = instance_segmentation(class_logits, mask_logits, overlap_mask_area_threshold=0.5, **kw)
    assert ids_labels_fused(loose["segments_info"]) == [(0, 0, False), (1, 1, False)]
    assert torch.equal(loose["segmentation"].long(), columns((0, 14, 0), (14, 32, 1)))

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

    # Query 1 (0.85) owns columns >= 8 (24 columns) but wins only 14..31 against query 0 (0.9):
    # 18/24 = 0.75 < 0.8, dropped, leaving those pixels without a segment; kept at 0.7.
    queries = (([0.9, 0.05, 0.05], LEFT), ([0.05, 0.85, 0.1], FROM_COL_2))
    strict = panoptic(*queries)
    assert ids_labels_fused(strict["segments_info"]) == [(1, 0, False)]
    assert torch.equal(strict["segmentation"].long(), columns((0, 14, 1), (14, 32, 0)))
    loose = panoptic(*queries, overlap_mask_area_threshold=0.7)
    assert ids_labels_fused(loose["segments_info"]) == [(1, 0, False), (2, 1, False)]
    assert torch.equal(loose["segmentation"].long(), columns((0, 14, 1), (14, 32, 2)))

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
# Parity with the literal algorithms on random confident outputs
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


def agreement(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return (ours.long() == reference.long()).double().mean().item()


def same_segments(ours: list[dict], reference: list[dict]) -> bool:
    return ids_labels_fused(ours) == ids_labels_fused(reference) and all(
        abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(ours, reference)
    )


@pytest.mark.parametrize("kind", ["confident", "noisy"])
@pytest.mark.parametrize("sizes", SIZES)
def test_parity_with_reference(kind, sizes):
    class_logits, mask_logits = random_outputs(
        kind, batch_size=2, num_queries=20, num_classes=10, mask_size=(32, 32), num_objects=6
    )
    for ours, reference in zip(
        semantic_segmentation(class_logits, mask_logits, **sizes),
        _reference_semantic(class_logits, mask_logits, **sizes),
    ):
        assert agreement(ours, reference) >= 0.999
    for function, reference_function, options in [
        (instance_segmentation, _reference_instance, {"threshold": 0.3}),
        (panoptic_segmentation, _reference_panoptic, {"label_ids_to_fuse": {0, 1, 2}}),
    ]:
        for ours, reference in zip(
            function(class_logits, mask_logits, **sizes, **options),
            reference_function(class_logits, mask_logits, **sizes, **options),
        ):
            assert agreement(ours["segmentation"], reference["segmentation"]) >= 0.999
            assert same_segments(ours["segments_info"], reference["segments_info"])


def test_parity_on_tiny_and_coarse_grids():
    """Mask grids smaller than a 3x3 window and a target smaller than the mask grid."""
    for mask_size, padded, valid, target in [
        ((2, 3), (8, 12), (7, 12), (29, 5)),
        ((16, 16), (64, 64), (50, 64), (9, 11)),
    ]:
        class_logits, mask_logits = random_outputs(
            "noisy", num_queries=8, num_classes=4, mask_size=mask_size, num_objects=3
        )
        sizes = {"padded_size": padded, "valid_sizes": [valid], "target_sizes": [target]}
        assert (
            agreement(
                semantic_segmentation(class_logits, mask_logits, **sizes)[0],
                _reference_semantic(class_logits, mask_logits, **sizes)[0],
            )
            == 1.0
        )
        ours = panoptic_segmentation(class_logits, mask_logits, threshold=0.2, **sizes)[0]
        reference = _reference_panoptic(class_logits, mask_logits, threshold=0.2, **sizes)[0]
        assert agreement(ours["segmentation"], reference["segmentation"]) == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_gpu():
    class_logits, mask_logits = random_outputs(
        "confident", num_queries=20, num_classes=10, mask_size=(32, 32), num_objects=6
    )
    sizes = {"padded_size": (128, 128), "valid_sizes": [(128, 96)], "target_sizes": [(150, 100)]}
    on_gpu = (class_logits.cuda(), mask_logits.cuda())
    assert torch.equal(
        semantic_segmentation(*on_gpu, **sizes)[0].cpu(),
        semantic_segmentation(class_logits, mask_logits, **sizes)[0],
    )
    for function in (instance_segmentation, panoptic_segmentation):
        gpu, cpu = function(*on_gpu, **sizes)[0], function(class_logits, mask_logits, **sizes)[0]
        assert agreement(gpu["segmentation"].cpu(), cpu["segmentation"]) >= 0.999
        assert same_segments(gpu["segments_info"], cpu["segments_info"])


def test_input_checks():
    with pytest.raises(ValueError, match="does not fit"):
        semantic_segmentation(*SEMANTIC, padded_size=PADDED, valid_sizes=[(40, 32)])
    with pytest.raises(ValueError, match="target_sizes"):
        panoptic_segmentation(*SEMANTIC, padded_size=PADDED, target_sizes=[(32, 32), (32, 32)])
