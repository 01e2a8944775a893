"""Post-processing in bands and at large sizes: every task through each `method`, with small bands (so that many
band seams cross the maps), in the regimes that stress each path (trained-like blobs, an untrained model's
near-uniform classes, i.i.d. noise), magnified, shrunk and at the padded size, still equal to the authors'
algorithm (tests/reference_inference.py) outside float ties (tests/exact.py: the tie rule is stated there: a pixel
where the reference's two best competitors are within 1e-5 of the largest value, or a sigmoid within 1e-6 of the
mask threshold, may take either; such pixels stay under 1 % of an image). Then the cost model behind
method="auto", and the compact instance outputs.
"""

from __future__ import annotations

import pytest
import torch
from test_post_processing import check_all_tasks
from transformers.models.maskformer.image_processing_maskformer import (
    convert_segmentation_to_rle as transformers_rle,
)

from benchmarks.common import random_outputs
from benchmarks.recorded import load_recorded
from modeling_maskformer.image_processing import bounded, convert_segmentation_to_rle, cost
from modeling_maskformer.image_processing import post_processing as pp
from modeling_maskformer.image_processing.resampling import Geometry

import exact


def regime_outputs(regime: str, *, queries: int, classes: int, low: tuple[int, int], seed: int = 0):
    """(class logits (1, Q, K + 1), mask logits (1, Q, h, w)) of a regime (as the large benchmark section's)."""
    generator = torch.Generator().manual_seed(seed)
    if regime == "trained-like":
        return random_outputs(
            "confident", num_queries=queries, num_classes=classes, mask_size=low, num_objects=5, seed=seed
        )
    if regime == "random-init":  # near-uniform classes, rough masks
        class_logits = torch.randn(1, queries, classes + 1, generator=generator) * 0.31
        noise = torch.randn(queries, 1, *low, generator=generator)
        masks = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False) * 8 - 0.6
        return class_logits, masks[None, :, 0]
    class_logits = torch.randn(1, queries, classes + 1, generator=generator) * 4
    return class_logits, torch.randn(1, queries, *low, generator=generator) * 4


GEOMETRIES = [
    pytest.param({"padded_size": (96, 128), "valid_sizes": [(90, 121)], "target_sizes": [(270, 365)]}, id="magnified"),
    pytest.param({"padded_size": (96, 128), "valid_sizes": [(96, 100)], "target_sizes": [(41, 57)]}, id="shrunk"),
    pytest.param({"padded_size": (96, 128), "valid_sizes": [(90, 121)]}, id="cropped"),
    pytest.param({"padded_size": (100, 131), "valid_sizes": [(97, 131)], "target_sizes": [(150, 201)]}, id="not-4x"),
]


@pytest.mark.parametrize("sizes", GEOMETRIES)
@pytest.mark.parametrize("regime", ["trained-like", "random-init", "noise"])
def test_small_bands_keep_the_original_maps(regime, sizes):
    """7-row bands (the map crosses 6 to 39 seams) and the default one, both methods, equal to the reference."""
    class_logits, mask_logits = regime_outputs(regime, queries=12, classes=6, low=(24, 32))
    options = {"threshold": 0.0} if regime != "trained-like" else {}
    for band_rows in (7, None):
        check = {"methods": ("dense", "bounded"), "instance": options or None, "panoptic": options or None}
        check_all_tasks(class_logits, mask_logits, sizes, band_rows=band_rows, **check)


@pytest.mark.parametrize("regime", ["random-init", "noise"])
@pytest.mark.parametrize(
    "sizes", [{"padded_size": (256, 128)}, {"padded_size": (256, 128), "valid_sizes": [(250, 121)]}]
)
def test_semantic_with_every_cell_open_is_the_originals(regime, sizes, monkeypatch):
    """Untrained or noisy outputs where the probe finds nothing for the bounds to decide and no resize follows (as at
    Cityscapes' size): whole cell rows straight onto the map (`_Sources._whole_cells`), in 7-row bands and the
    default ones, equal to the reference."""
    monkeypatch.setattr(bounded, "_PROBE_ABOVE", 0)  # probe these small logits as it does large ones
    whole_cells = []
    original = bounded._Sources._whole_cells
    monkeypatch.setattr(bounded._Sources, "_whole_cells", lambda *a: whole_cells.append(1) or original(*a))
    class_logits, mask_logits = regime_outputs(regime, queries=12, classes=6, low=(64, 32), seed=4)
    for band_rows in (7, None):
        results = {
            "bounded": pp.semantic_segmentation(
                class_logits, mask_logits, method="bounded", band_rows=band_rows, **sizes
            )
        }
        exact.check_semantic(results, class_logits, mask_logits, sizes)
    assert whole_cells, "the every-cell-open path was not taken"


def test_a_large_output_in_small_bands():
    """A 1200x1600 output of 48x64 logits (25x magnification, 2 MP) in 64-row bands: every task, both methods."""
    class_logits, mask_logits = regime_outputs("trained-like", queries=8, classes=5, low=(48, 64), seed=2)
    sizes = {"padded_size": (192, 256), "valid_sizes": [(188, 250)], "target_sizes": [(1200, 1600)]}
    check_all_tasks(class_logits, mask_logits, sizes, methods=("dense", "bounded"), band_rows=64)


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["trained-like", "noise"])
def test_a_12_mp_output_is_the_originals(regime):
    """3000x4000 from 128x176 logits (a 512x683 input in 512x704), 16 queries and 8 classes: method="auto" (the
    bounded path here) and the dense path in 256-row bands, against the reference."""
    class_logits, mask_logits = regime_outputs(regime, queries=16, classes=8, low=(128, 176), seed=3)
    sizes = {"padded_size": (512, 704), "valid_sizes": [(512, 683)], "target_sizes": [(3000, 4000)]}
    for method, band_rows in (("auto", None), ("dense", 256)):
        (ours,) = pp.semantic_segmentation(class_logits, mask_logits, method=method, band_rows=band_rows, **sizes)
        exact.check_semantic([ours], class_logits, mask_logits, sizes)


def test_the_recorded_demo_outputs_brought_to_a_photo_size():
    """The `make demo` model's 384 px outputs at 1536x1536 (a 16x larger map), 96-row bands, both methods."""
    recorded = load_recorded("demo_384")
    sizes = {"padded_size": (384, 384), "target_sizes": [(1536, 1536)]}
    check_all_tasks(
        recorded["class_queries_logits"],
        recorded["masks_queries_logits"],
        sizes,
        methods=("dense", "bounded"),
        band_rows=96,
        instance={"threshold": 0.5},
        panoptic={"threshold": 0.8, "label_ids_to_fuse": {6, 7, 8}},
    )


def test_band_rows_are_checked():
    class_logits, mask_logits = regime_outputs("noise", queries=4, classes=3, low=(8, 8))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="band_rows must be a positive int"):
            pp.semantic_segmentation(class_logits, mask_logits, padded_size=(32, 32), band_rows=bad)


# ----------------------------------------------------------------------------------------------------
# The cost model behind method="auto"
# ----------------------------------------------------------------------------------------------------
def test_the_machine_is_measured_once():
    first = cost.speeds()
    assert all(value > 0 for value in vars(first).values())
    assert cost.speeds() is first  # cached per thread count


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_auto_takes_the_cheaper_fixed_cost_for_tiny_maps_and_dense_off_the_cpu(task):
    """Where a map is as small as the tiny image that measures each path's fixed cost, that cost decides."""
    tiny = Geometry((8, 8), (32, 32), (32, 32), (32, 32), torch.device("cpu"))
    fixed = {method: cost.fixed_seconds(task, method, pp._tiny) for method in ("dense", "bounded")}
    chosen = cost.use_bounded(task, "auto", tiny, maps=4, classes=3, open_share=1.0, tiny=pp._tiny)
    if max(fixed.values()) > 1.5 * min(fixed.values()):  # else the maps' own work may tip it
        assert chosen == (fixed["bounded"] < fixed["dense"]), fixed
    elsewhere = Geometry((128, 176), (512, 704), (512, 683), (3000, 4000), torch.device("meta"))
    assert not cost.use_bounded(task, "auto", elsewhere, maps=100, classes=150, open_share=0.0, tiny=pp._tiny)
    assert cost.use_bounded(task, "bounded", tiny, maps=4) and not cost.use_bounded(task, "dense", elsewhere, maps=4)


def test_auto_takes_the_bounded_path_for_a_photo_and_asks_the_data_only_when_it_matters():
    photo = Geometry((128, 176), (512, 704), (512, 683), (3000, 4000), torch.device("cpu"))
    asked = []

    def probe() -> float:
        asked.append(True)
        return 0.05

    # At 12 MP the dense path resizes 150 score maps: the bounded one wins even with everything open, so the data
    # is not asked. Instance segmentation with 20 candidates whose boxes cover 5 % of the dense path's pixels: bounded.
    assert cost.use_bounded("semantic", "auto", photo, maps=100, classes=150, open_share=probe, tiny=pp._tiny)
    assert not asked
    assert cost.use_bounded("instance", "auto", photo, maps=20, open_share=probe, tiny=pp._tiny)


def test_the_data_decides_only_between_the_worst_and_the_best_case(monkeypatch):
    """With fixed speeds (1 ns per value of any kind, 3 us per call, no fixed costs): a semantic map of 192x192,
    20 queries and 9 classes costs ~1.9 ms dense, ~3.6 ms bounded with everything open and ~1.2 ms with
    nothing open, so the probe is asked, and its answer decides."""
    monkeypatch.setattr(cost, "speeds", lambda: cost.Speeds(3e-6, 1e-9, 1e-9, 1e-11, 1e-9, 1e-9))
    geometry = Geometry((48, 48), (192, 192), (192, 192), (192, 192), torch.device("cpu"))
    speeds = cost.speeds()
    dense = cost.dense_seconds("semantic", geometry, 20, 9, speeds)
    worst, best = (cost.bounded_seconds("semantic", geometry, 20, 9, speeds, share) for share in (1.0, 0.0))
    assert best < dense <= worst
    asked = []
    for share in (0.05, 0.95):
        chosen = cost.use_bounded(
            "semantic", "auto", geometry, maps=20, classes=9, open_share=lambda s=share: asked.append(s) or s
        )
        assert asked[-1] == share
        assert chosen == (cost.bounded_seconds("semantic", geometry, 20, 9, speeds, share) < dense)
    assert cost.use_bounded("semantic", "auto", geometry, maps=20, classes=9, open_share=0.05)


# ----------------------------------------------------------------------------------------------------
# Compact outputs
# ----------------------------------------------------------------------------------------------------
def test_rle_of_a_map_in_one_pass_is_transformers():
    generator = torch.Generator().manual_seed(4)
    maps = [
        torch.randint(-1, 5, (13, 17), generator=generator),
        torch.full((4, 6), -1),
        torch.zeros(1, 1, dtype=torch.int32),
    ]
    blocky = torch.nn.functional.interpolate(
        torch.randint(0, 9, (1, 1, 6, 8), generator=generator).float(), size=(60, 80)
    )
    maps.append(blocky[0, 0].int())
    for segmentation in maps:
        assert convert_segmentation_to_rle(segmentation) == transformers_rle(segmentation)


def test_instance_results_stay_compact():
    """Binary maps are bool, the id map int32; with return_coco_annotation, RLE lists only."""
    class_logits, mask_logits = regime_outputs("trained-like", queries=10, classes=4, low=(16, 16))
    sizes = {"padded_size": (64, 64), "target_sizes": [(200, 200)], "band_rows": 16}
    (maps,) = pp.instance_segmentation(class_logits, mask_logits, return_binary_maps=True, threshold=0.3, **sizes)
    assert maps["segmentation"].dtype == torch.bool and maps["segmentation"].shape[1:] == (200, 200)
    (ids,) = pp.instance_segmentation(class_logits, mask_logits, threshold=0.3, **sizes)
    assert ids["segmentation"].dtype == torch.int32
    kept = len(ids["segments_info"])
    assert len(maps["segments_info"]) == len(maps["segmentation"]) >= kept > 0
    # Each visible instance lies inside its own binary mask.
    for segment in ids["segments_info"]:
        n = [s["id"] for s in maps["segments_info"]].index(segment["id"])
        assert not bool(((ids["segmentation"] == segment["id"]) & ~maps["segmentation"][n]).any())
