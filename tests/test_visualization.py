"""draw(): blended overlay, outlines and legend; stable colours per class."""

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_maskformer.inference.visualization import class_colour, draw, grid

GREY = 100
ID2LABEL = {0: "circle", 1: "square", 2: "sky"}


def flat_image(height=64, width=80):
    return Image.fromarray(np.full((height, width, 3), GREY, dtype=np.uint8))


def semantic_map(height=64, width=80):
    labels = torch.full((height, width), 2, dtype=torch.long)  # sky
    labels[10:30, 10:30] = 0  # circle
    labels[40:60, 50:70] = 255  # ignored: left as it is
    return labels


def test_colours_are_stable_and_distinct():
    assert class_colour(7) == class_colour(7)
    assert len({class_colour(i) for i in range(150)}) == 150
    assert class_colour(3, shade=0) != class_colour(3, shade=1)


def test_semantic_overlay_blends_outlines_and_leaves_unlabelled_pixels():
    picture = draw(flat_image(), semantic_map(), ID2LABEL, task="semantic", min_size=0)
    pixels = np.asarray(picture).astype(int)
    assert picture.height == 64 and picture.width > 80  # legend panel on the right
    expected_circle = np.round(0.5 * GREY + 0.5 * np.array(class_colour(0)))
    np.testing.assert_array_equal(pixels[20, 20], expected_circle)  # inside the circle
    expected_sky = np.round(0.5 * GREY + 0.5 * np.array(class_colour(2)))
    np.testing.assert_array_equal(pixels[5, 60], expected_sky)
    np.testing.assert_array_equal(pixels[50, 60], [GREY] * 3)  # ignore value: the photo shows through
    np.testing.assert_array_equal(pixels[20, 10], [255, 255, 255])  # outline on the boundary
    np.testing.assert_array_equal(pixels[20, 9], [255, 255, 255])
    legend = pixels[:, 80:]
    for class_id in (0, 2):  # a swatch of each class present, none for absent classes
        assert (legend == class_colour(class_id)).all(-1).sum() > 20
    assert (legend == class_colour(1)).all(-1).sum() == 0


def test_panoptic_segments_of_one_class_get_their_own_shades():
    segmentation = torch.zeros(64, 80, dtype=torch.int32)
    segmentation[0:30, :] = 1
    segmentation[40:64, :] = 2
    result = {
        "segmentation": segmentation,
        "segments_info": [
            {"id": 1, "label_id": 1, "score": 0.9, "was_fused": False},
            {"id": 2, "label_id": 1, "score": 0.7, "was_fused": False},
        ],
    }
    pixels = np.asarray(draw(flat_image(), result, ID2LABEL, task="panoptic", min_size=0)).astype(int)
    first, second = pixels[10, 40], pixels[50, 40]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, np.round(0.5 * GREY + 0.5 * np.array(class_colour(1, 0))))
    np.testing.assert_array_equal(second, np.round(0.5 * GREY + 0.5 * np.array(class_colour(1, 1))))
    np.testing.assert_array_equal(pixels[35, 40], [GREY] * 3)  # id 0: no segment


def test_instance_binary_maps_and_minimum_size():
    masks = torch.zeros(2, 32, 40, dtype=torch.bool)
    masks[0, :10] = True
    masks[1, 20:] = True
    result = {
        "segmentation": masks,
        "segments_info": [{"id": 0, "label_id": 0, "score": 0.8}, {"id": 1, "label_id": 2, "score": 0.6}],
    }
    picture = draw(flat_image(32, 40), result, ID2LABEL, task="instance", min_size=128)
    assert picture.height == 128  # enlarged 4x for legibility
    pixels = np.asarray(picture).astype(int)
    np.testing.assert_array_equal(pixels[10, 60], np.round(0.5 * GREY + 0.5 * np.array(class_colour(0))))
    np.testing.assert_array_equal(pixels[120, 60], np.round(0.5 * GREY + 0.5 * np.array(class_colour(2))))


def test_no_legend_and_empty_result():
    picture = draw(flat_image(), torch.full((64, 80), 255), ID2LABEL, legend=False, min_size=0)
    assert picture.size == (80, 64)
    np.testing.assert_array_equal(np.asarray(picture), np.asarray(flat_image()))
    empty = draw(flat_image(), {"segmentation": torch.zeros(64, 80), "segments_info": []}, ID2LABEL, min_size=0)
    assert empty.width > 80  # a legend saying "no segments"


def test_clear_errors():
    with pytest.raises(ValueError, match="target_sizes"):
        draw(flat_image(), torch.zeros(32, 32, dtype=torch.long), ID2LABEL)
    with pytest.raises(ValueError, match="task must be"):
        draw(flat_image(), semantic_map(), ID2LABEL, task="depth")
    with pytest.raises(ValueError, match="segments_info"):
        draw(flat_image(), semantic_map(), ID2LABEL, task="panoptic")


def test_grid_has_a_title_row():
    cells = [[flat_image(20, 30), flat_image(20, 50)], [flat_image(20, 30), flat_image(20, 50)]]
    out = grid(cells, titles=["image", "prediction"], gap=2)
    assert out.width == 30 + 50 + 2 and out.height > 2 * 20 + 2
    assert (np.asarray(out)[:16] < 128).any()  # dark title text above the cells
