"""Drop-in for transformers' MaskFormer: the public signatures of transformers' classes walked against ours
(a new gap fails), and each behaviour compared with transformers' own model and processor on the same weights
(the reference is transformers, not our code)."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import numpy as np
import pytest
import torch
import transformers
from transformers import DetrConfig, SwinConfig
from transformers.models.maskformer import modeling_maskformer as transformers_maskformer
from transformers.models.maskformer.image_processing_maskformer import MaskFormerImageProcessorKwargs

from modeling_maskformer import (
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    MaskFormerImageProcessor,
    MaskFormerModel,
)
from modeling_maskformer.image_processing import binary_mask_to_rle, convert_segmentation_to_rle

from builders import random_targets, tiny_model

PAIRS = {
    "MaskFormerImageProcessor": (transformers.MaskFormerImageProcessor, MaskFormerImageProcessor),
    "MaskFormerModel": (transformers.MaskFormerModel, MaskFormerModel),
    "MaskFormerForInstanceSegmentation": (
        transformers.MaskFormerForInstanceSegmentation,
        MaskFormerForInstanceSegmentation,
    ),
    "MaskFormerConfig": (transformers.MaskFormerConfig, MaskFormerConfig),
}
# Documented deliberate differences (docs/api.md, "Drop-in for transformers' MaskFormer"): (class, name) -> why.
# (Ours subclasses transformers' processor, so its backend methods are transformers' own: none is left out.)
DELIBERATE: dict[tuple[str, str], str] = {}


def public_methods(cls) -> dict[str, typing.Callable]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))}


def parameters(function) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return {}


def gaps(name: str) -> list[str]:
    theirs, ours = PAIRS[name]
    found = []
    for method, function in public_methods(theirs).items():
        if not hasattr(ours, method):
            found.append(method)
            continue
        ours_parameters = parameters(getattr(ours, method))
        forwards = any(p.kind is p.VAR_KEYWORD for p in ours_parameters.values())
        if method in (
            "forward",
            "preprocess",
            "post_process_semantic_segmentation",
            "post_process_instance_segmentation",
            "post_process_panoptic_segmentation",
        ):
            forwards = False  # these must name every argument: no **kwargs that could swallow one
        for argument, parameter in parameters(function).items():
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or argument in ours_parameters:
                continue
            if not forwards:
                found.append(f"{method}.{argument}")
    if name == "MaskFormerImageProcessor":  # both declare preprocess's keywords once, in a TypedDict (an unknown
        declared = typing.get_type_hints(ours.valid_kwargs)  # one raises TypeError: see the test below)
        found += [
            f"preprocess.{k}" for k in typing.get_type_hints(MaskFormerImageProcessorKwargs) if k not in declared
        ]
    if name == "MaskFormerConfig":  # its fields, read on an instance
        config = ours(num_labels=3)
        found += [f.name for f in dataclasses.fields(theirs) if not hasattr(config, f.name)]
    return sorted(g for g in found if (name, g) not in DELIBERATE)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_public_argument_and_method_of_transformers_exists_on_ours(name):
    assert gaps(name) == []


def test_forward_takes_no_unknown_keyword():
    model = tiny_model().eval()
    with pytest.raises(TypeError, match="output_attention"):
        model(torch.randn(1, 3, 64, 64), output_attention=True)  # a typo, not silently ignored
    with pytest.raises(ValueError, match="output_attentions=True is not supported"):
        model(torch.randn(1, 3, 64, 64), output_attentions=True)
    with pytest.raises(TypeError):
        MaskFormerImageProcessor()(np.zeros((40, 40, 3), np.uint8), do_resise=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Ours (weights perturbed: every LayerNorm away from 1/0, so that a missing or extra one shows) and
    transformers' model on the same weights, through the native folder."""
    model = tiny_model(seed=4).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    folder = tmp_path_factory.mktemp("api")
    model.save_pretrained(folder)
    return model, transformers.MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()


def test_hidden_states_in_transformers_fields(pair):
    ours, theirs = pair
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = (
            theirs(pixel_values, output_hidden_states=True),
            ours(pixel_values, output_hidden_states=True),
        )
    for field in (
        "encoder_hidden_states",
        "pixel_decoder_hidden_states",
        "transformer_decoder_hidden_states",
        "hidden_states",
    ):
        assert len(getattr(got, field)) == len(getattr(expected, field)), field
        for a, b in zip(getattr(got, field), getattr(expected, field)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=field)
    with torch.no_grad():
        base = ours.model(pixel_values, output_hidden_states=True)
    assert len(base.transformer_decoder_hidden_states) == ours.config.decoder_layers + 1
    # Our output classes are transformers' (subclasses), so isinstance checks written for transformers hold.
    assert isinstance(got, type(expected)) and isinstance(base, transformers_maskformer.MaskFormerModelOutput)


def test_return_dict_false_gives_transformers_tuple(pair):
    ours, theirs = pair
    pixel_values = torch.randn(1, 3, 64, 64)
    for kwargs in ({}, {"output_hidden_states": True}):
        with torch.no_grad():
            expected, got = (
                theirs(pixel_values, return_dict=False, **kwargs),
                ours(pixel_values, return_dict=False, **kwargs),
            )
        assert isinstance(got, tuple) and len(got) == len(expected)
        for a, b in zip(got, expected):
            if isinstance(a, tuple):
                assert len(a) == len(b) and all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        got = ours.model(pixel_values, return_dict=False)
    assert [tuple(t.shape) for t in got] == [
        (1, 64, 2, 2),
        (1, 32, 16, 16),
        (1, 10, 32),
    ]  # transformers' order


def test_get_logits_get_loss_dict_get_loss_are_forwards_parts(pair):
    ours = pair[0]
    pixel_values = torch.randn(2, 3, 64, 64)
    mask_labels, class_labels = random_targets(2, 64, 64)
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = ours(pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        base = ours.model(pixel_values, return_intermediate=True)
        class_logits, mask_logits, auxiliary = ours.get_logits(base)
        loss_dict = ours.get_loss_dict(mask_logits, class_logits, mask_labels, class_labels, auxiliary)
    assert torch.equal(class_logits, outputs.class_queries_logits) and len(auxiliary) == ours.config.decoder_layers - 1
    assert set(loss_dict) == set(outputs.loss_dict)
    torch.testing.assert_close(ours.get_loss(loss_dict), outputs.loss)


def test_config_accepts_transformers_constructor_arguments():
    swin = {"embed_dim": 16, "depths": [1, 2, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4}
    config = MaskFormerConfig(
        backbone_config=SwinConfig(**swin),
        decoder_config=DetrConfig(d_model=64, num_queries=20, decoder_layers=3),
        cross_entropy_weight=2.0,
        num_labels=5,
    )
    assert config.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert (config.hidden_size, config.num_queries, config.decoder_layers) == (64, 20, 3)
    assert config.class_weight == config.cross_entropy_weight == 2.0
    assert config.decoder_config.d_model == 64
    model = MaskFormerForInstanceSegmentation(config)  # the pixel decoder gets the four maps
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).masks_queries_logits.shape == (1, 20, 16, 16)
    with pytest.raises(ValueError, match="give one"):
        MaskFormerConfig(class_weight=3.0, cross_entropy_weight=2.0)


def test_every_parameter_gets_a_gradient_with_a_swin_backbone():
    swin = {"embed_dim": 16, "depths": [1, 2, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4}
    model = tiny_model(backbone_config=SwinConfig(**swin))
    mask_labels, class_labels = random_targets(2, 64, 64)
    model(torch.randn(2, 3, 64, 64), mask_labels=mask_labels, class_labels=class_labels).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_meta_device_loading_behaves_as_transformers(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    errors = []
    for cls in (transformers.MaskFormerForInstanceSegmentation, MaskFormerForInstanceSegmentation):
        with torch.device("meta"), pytest.raises(RuntimeError) as error:
            cls.from_pretrained(tmp_path)
        errors.append(str(error.value))
    assert errors[0] == errors[1] and "from_config" in errors[1]
    with torch.device("meta"):  # what transformers' error recommends
        empty = MaskFormerForInstanceSegmentation(model.config)
    assert {p.device.type for p in empty.parameters()} == {"meta"}
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, device_map="cpu", low_cpu_mem_usage=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


# ---------------------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processors():
    settings = {"size": {"shortest_edge": 64, "longest_edge": 96}}
    return MaskFormerImageProcessor(**settings), transformers.MaskFormerImageProcessor(**settings)


def test_helper_methods_give_transformers_results(processors):
    ours, theirs = processors
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 20, 30, generator=generator)
    maps = [torch.randint(0, 5, (1, 20, 30), generator=generator) for _ in range(2)]
    for a, b in zip(ours.pad(images, (32, 40), maps), theirs.pad(images, (32, 40), maps)):
        for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            assert torch.equal(x, y)
    image = (255 * torch.rand(3, 50, 70, generator=generator)).to(torch.uint8)
    from transformers.image_utils import SizeDict

    for size, divisor in (
        (SizeDict(shortest_edge=64, longest_edge=96), 0),
        (SizeDict(height=40, width=50), 32),
    ):
        torch.testing.assert_close(
            ours.resize(image, size, size_divisor=divisor).float(),
            theirs.resize(image, size, size_divisor=divisor).float(),
            rtol=0,
            atol=1.0,  # uint8 rounding of the same bilinear antialiased filter
        )
    args = (True, 1 / 255, True, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))  # tuples: transformers caches on them
    torch.testing.assert_close(
        ours.rescale_and_normalize(image[None], *args), theirs.rescale_and_normalize(image[None], *args)
    )
    labels_ours, labels_theirs = [torch.tensor([[0, 1, 255, 7]])], [torch.tensor([[0, 1, 255, 7]])]
    ours.reduce_label(labels_ours)
    theirs.reduce_label(labels_theirs)
    assert torch.equal(labels_ours[0], labels_theirs[0])
    gray, rgba = torch.randint(0, 255, (1, 8, 8), dtype=torch.uint8), torch.rand(4, 8, 8)
    for x in (gray, rgba):
        torch.testing.assert_close(ours.convert_to_rgb(x), theirs.convert_to_rgb(x))


def test_rle_as_transformers():
    from transformers.models.maskformer.image_processing_maskformer import (
        binary_mask_to_rle as theirs_rle,
    )
    from transformers.models.maskformer.image_processing_maskformer import (
        convert_segmentation_to_rle as theirs_convert,
    )

    segmentation = torch.randint(-1, 3, (9, 13), generator=torch.Generator().manual_seed(1))
    assert binary_mask_to_rle(segmentation == 1) == theirs_rle(segmentation == 1)
    assert convert_segmentation_to_rle(segmentation) == theirs_convert(segmentation)


def test_preprocess_takes_transformers_keywords(processors):
    ours, theirs = processors
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    small = ours(np.zeros((20, 31, 3), np.uint8), do_resize=False)  # under 32 px: padded, as transformers
    assert small["pixel_values"].shape == (1, 3, 32, 32) and small["pixel_mask"].sum() == 20 * 31
    channels_first = np.ascontiguousarray(image.transpose(2, 0, 1))
    a = ours(channels_first, input_data_format="channels_first")["pixel_values"]
    b = ours(image, input_data_format="channels_last")["pixel_values"]
    assert torch.equal(a, b)
    from transformers.image_utils import SizeDict

    padded = ours(image, pad_size={"height": 128, "width": 160})
    assert (
        padded["pixel_values"].shape
        == theirs(image, pad_size=SizeDict(height=128, width=160), return_tensors="pt")["pixel_values"].shape
    )
    assert ours(image, disable_grouping=True, do_convert_rgb=True, device="cpu")["pixel_values"].shape[1] == 3
    with pytest.raises(ValueError, match="do_convert_rgb=False is not supported"):
        ours(image, do_convert_rgb=False)
    with pytest.raises(ValueError, match="do_center_crop=True"):
        ours(image, do_center_crop=True)


@pytest.fixture(scope="module")
def outputs():
    model = tiny_model(seed=6).eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, 64, 96))  # no pixel_mask: outputs as the user's own code builds them


def test_post_processing_arguments_of_transformers(processors, outputs):
    ours, theirs = processors
    # No pixel_mask: the whole input is valid, and target sizes larger than the input are fine.
    big = [(200, 300), (128, 192)]
    maps = ours.post_process_semantic_segmentation(outputs, target_sizes=big)
    assert [tuple(m.shape) for m in maps] == big
    # Without target_sizes: transformers' size, the mask logits' resolution.
    assert [tuple(m.shape) for m in ours.post_process_semantic_segmentation(outputs)] == [
        tuple(m.shape) for m in theirs.post_process_semantic_segmentation(outputs)
    ]
    scored = ours.post_process_semantic_segmentation(outputs, target_sizes=big, return_segmentation_scores=True)
    expected = theirs.post_process_semantic_segmentation(outputs, target_sizes=big, return_segmentation_scores=True)
    for a, b, plain in zip(scored, expected, maps):
        assert a.segmentation_scores.shape == b.segmentation_scores.shape
        assert torch.equal(a.segmentation, plain)
        # Ours: sigmoid after upsampling to the input (the original's order); transformers: sigmoid at 1/4, then
        # resize. Close, not equal: mean difference and the argmax.
        assert (a.segmentation_scores - b.segmentation_scores).abs().mean() < 0.01
        assert (a.segmentation == b.segmentation).float().mean() > 0.97
    instances = ours.post_process_instance_segmentation(outputs, threshold=0.0, return_coco_annotation=True)
    for result in instances:
        assert isinstance(result["segmentation"], list) and all(
            isinstance(run, list) for run in result["segmentation"]
        )
    panoptic = ours.post_process_panoptic_segmentation(outputs, threshold=0.0, label_ids_to_fuse={0})
    assert all(
        info["label_id"] != 0 or info["was_fused"] in (True, False) for r in panoptic for info in r["segments_info"]
    )
