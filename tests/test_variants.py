"""The registry of model variants: every name builds, and the shapes are the published ones."""

import pytest

from modeling_maskformer.configuration import MaskFormerConfig
from modeling_maskformer.configuration.backbones import BACKBONE_SHAPES, STAGES, build_backbone_config
from modeling_maskformer.interop.authors_checkpoints import PRESETS
from modeling_maskformer.paper.zoo import MODEL_ZOO
from modeling_maskformer.training.presets import preset_config
from modeling_maskformer.training.recipes import RECIPES, choose_recipe
from modeling_maskformer.variants import AUTHORS_CHECKPOINTS, TRAINING_PRESETS, VARIANTS, variant_config

# Swin (Liu et al. 2021, Sec. 3.3): C, layer numbers, heads of stage 1 and the window of the 384 px models.
SWIN_PAPER = {
    "swin-tiny": (96, [2, 2, 6, 2], 3, 7),
    "swin-small": (96, [2, 2, 18, 2], 3, 7),
    "swin-base": (128, [2, 2, 18, 2], 4, 12),
    "swin-large": (192, [2, 2, 18, 2], 6, 12),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_builds_a_valid_config(name):
    config = variant_config(name)
    assert list(config.backbone_config.out_features) == STAGES
    if VARIANTS[name].num_labels is not None:
        assert config.num_labels == VARIANTS[name].num_labels


@pytest.mark.parametrize("name", list(SWIN_PAPER))
def test_swin_shapes_are_the_papers(name):
    embed_dim, depths, heads, window = SWIN_PAPER[name]
    config = build_backbone_config(name)
    assert (config.embed_dim, list(config.depths), config.window_size) == (embed_dim, depths, window)
    assert list(config.num_heads) == [heads, 2 * heads, 4 * heads, 8 * heads]


def test_the_default_config_is_the_swin_tiny_preset():
    default, preset = MaskFormerConfig().backbone_config, variant_config("swin-tiny").backbone_config
    assert default.to_diff_dict() == preset.to_diff_dict() and default.drop_path_rate == 0.3


def test_presets_zoo_and_conversion_read_the_registry():
    assert set(PRESETS) == set(AUTHORS_CHECKPOINTS) and {entry.name for entry in MODEL_ZOO} <= set(PRESETS)
    for entry in MODEL_ZOO:  # the authors' configs: INPUT.MIN_SIZE_TEST and the labels' ignore value
        assert entry.test_size == PRESETS[entry.name].processor["size"]["shortest_edge"]
    config = preset_config("resnet50", {0: "a", 1: "b"})
    assert config.backbone == "microsoft/resnet-50" and config.num_labels == 2 and "demo" in TRAINING_PRESETS
    with pytest.raises(ValueError, match="unknown --model_preset 'swin-tiny-ade'"):
        preset_config("swin-tiny-ade", {0: "a"})


def test_every_backbone_type_has_the_papers_recipe():
    assert {shape["model_type"] for shape in BACKBONE_SHAPES.values()} <= set(RECIPES)
    for name in ("demo", "swin-tiny", "resnet50"):
        expected = "scratch" if name == "demo" else VARIANTS[name].config().backbone_config.model_type
        assert choose_recipe(variant_config(name)).name == expected
