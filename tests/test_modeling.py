"""Model behaviour: shapes, gradients, finiteness, losses, attention implementations, persistence."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
import transformers
from transformers import AutoModel, AutoModelForInstanceSegmentation, ConvNextConfig, Dinov2Config, SwinConfig

from modeling_maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation, MaskFormerModel
from modeling_maskformer.loss import dice_loss, focal_loss
from modeling_maskformer.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_focal

from builders import random_targets, tiny_backbone_config, tiny_config, tiny_model

B, H, W = 2, 64, 96


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(0)
    return torch.randn(B, 3, H, W)


@pytest.mark.parametrize("decoder", ["fpn", "fpn_transformer_encoder"])
def test_output_shapes(inputs, decoder):
    model = tiny_model(pixel_decoder_type=decoder).eval()
    with torch.no_grad():
        out = model(inputs, output_hidden_states=True, output_auxiliary_logits=True)
    assert out.class_queries_logits.shape == (B, 10, 3 + 1)  # (B, Q, K+1)
    assert out.masks_queries_logits.shape == (B, 10, H // 4, W // 4)  # (B, Q, H/4, W/4)
    assert out.pixel_decoder_last_hidden_state.shape == (B, 32, H // 4, W // 4)
    assert out.transformer_decoder_last_hidden_state.shape == (B, 10, 32)
    assert len(out.encoder_hidden_states) == 4 and len(out.pixel_decoder_hidden_states) == 3
    # Deep supervision: L-1 = 1 intermediate layer, no zero-input "layer 0".
    assert len(out.auxiliary_logits) == 1
    assert out.loss is None
    assert torch.isfinite(out.class_queries_logits).all() and torch.isfinite(out.masks_queries_logits).all()


def test_base_model_outputs(inputs):
    torch.manual_seed(0)
    model = MaskFormerModel(tiny_config()).eval()
    with torch.no_grad():
        out = model(inputs)
    assert out.transformer_decoder_last_hidden_state.shape == (B, 10, 32)
    assert out.encoder_last_hidden_state.shape == (B, 64, H // 32, W // 32)


def test_auxiliary_outputs_use_the_final_layernorm(inputs):
    model = tiny_model(decoder_layers=3).eval()
    decoder = model.model.transformer_decoder
    captured = []
    hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(o)) for layer in decoder.layers]
    with torch.no_grad():
        out = model(inputs, output_auxiliary_logits=True)
    for hook in hooks:
        hook.remove()
    assert len(out.auxiliary_logits) == 2
    mask_features = out.pixel_decoder_last_hidden_state
    for layer_output, aux in zip(captured[:2], out.auxiliary_logits):
        expected_class, expected_masks = model.predict(decoder.layernorm(layer_output), mask_features)
        torch.testing.assert_close(aux["class_queries_logits"], expected_class)
        torch.testing.assert_close(aux["masks_queries_logits"], expected_masks)


@pytest.mark.parametrize(
    "mode,decoder", list(itertools.product(["dense", "point"], ["fpn", "fpn_transformer_encoder"]))
)
def test_every_parameter_gets_a_gradient(inputs, mode, decoder):
    model = tiny_model(mask_loss_mode=mode, pixel_decoder_type=decoder)
    mask_labels, class_labels = random_targets(B, H, W)
    out = model(inputs, mask_labels=mask_labels, class_labels=class_labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    expected = {
        "loss_cross_entropy",
        "loss_mask",
        "loss_dice",
        "loss_cross_entropy_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    assert set(out.loss_dict) == expected
    torch.testing.assert_close(out.loss, sum(out.loss_dict.values()))


@pytest.mark.parametrize("mode", ["dense", "point"])
def test_batch_without_any_target_trains_on_no_object(inputs, mode):
    model = tiny_model(mask_loss_mode=mode)
    empty_masks = [torch.zeros(0, H, W) for _ in range(B)]
    empty_classes = [torch.zeros(0, dtype=torch.long) for _ in range(B)]
    out = model(inputs, mask_labels=empty_masks, class_labels=empty_classes)
    assert out.loss_dict["loss_mask"].item() == 0 and out.loss_dict["loss_dice"].item() == 0
    assert out.loss_dict["loss_cross_entropy"].item() > 0
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_overfitting_one_batch_drives_the_loss_down(inputs):
    model = tiny_model(dropout=0.0, attention_dropout=0.0)
    mask_labels, class_labels = random_targets(B, H, W)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = model(inputs, mask_labels=mask_labels, class_labels=class_labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], losses[::10]


def test_sdpa_and_eager_agree(inputs):
    model = tiny_model(pixel_decoder_type="fpn_transformer_encoder").eval()
    with torch.no_grad():
        sdpa = model(inputs)
        model.config._attn_implementation = "eager"
        eager = model(inputs)
    torch.testing.assert_close(sdpa.masks_queries_logits, eager.masks_queries_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa.class_queries_logits, eager.class_queries_logits, atol=1e-5, rtol=1e-5)


def test_attn_implementation_argument(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"


def test_gradient_checkpointing_gives_the_same_gradients(inputs):
    mask_labels, class_labels = random_targets(B, H, W)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(dropout=0.0, attention_dropout=0.0, mask_loss_mode="dense")
        if checkpointing:
            model.gradient_checkpointing_enable() if not hasattr(
                model, "activation_checkpointing_enable"
            ) else model.activation_checkpointing_enable()
            assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
        model(inputs, mask_labels=mask_labels, class_labels=class_labels).loss.backward()
        grads.append(model.model.transformer_decoder.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_autocast_on_cpu(inputs):
    model = tiny_model()
    mask_labels, class_labels = random_targets(B, H, W)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs, mask_labels=mask_labels, class_labels=class_labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_bf16_weights_forward(inputs):
    model = tiny_model().eval().to(torch.bfloat16)
    with torch.no_grad():
        out = model(inputs.to(torch.bfloat16))
    assert out.masks_queries_logits.dtype == torch.bfloat16
    assert torch.isfinite(out.masks_queries_logits.float()).all()


# --- matcher -------------------------------------------------------------------------------------------


def brute_force_assignment(cost: torch.Tensor) -> float:
    """Lowest total cost over all injective assignments of targets to predictions."""
    num_queries, num_targets = cost.shape
    return min(
        sum(cost[q, t].item() for t, q in enumerate(perm))
        for perm in itertools.permutations(range(num_queries), num_targets)
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_points", [None, 64])
def test_matcher_finds_the_optimal_assignment(seed, num_points):
    torch.manual_seed(seed)
    num_queries, num_targets = 5, 3
    matcher = HungarianMatcher(num_points=num_points)
    class_logits = torch.randn(1, num_queries, 4)
    mask_logits = torch.randn(1, num_queries, 8, 8) * 3
    classes = torch.randint(0, 3, (num_targets,))
    masks = (torch.rand(num_targets, 8, 8) > 0.5).float()
    torch.manual_seed(123)
    cost = matcher.cost_matrix(class_logits[0], mask_logits[0], classes, masks)
    torch.manual_seed(123)
    [(rows, cols)] = matcher(class_logits, mask_logits, [classes], [masks])
    assert len(rows) == num_targets and sorted(cols.tolist()) == list(range(num_targets))
    assert cost[rows, cols].sum().item() == pytest.approx(brute_force_assignment(cost), abs=1e-5)


def test_matcher_survives_nan_and_inf_logits():
    matcher = HungarianMatcher()
    class_logits = torch.randn(1, 4, 3)
    class_logits[0, 0] = float("nan")
    mask_logits = torch.randn(1, 4, 8, 8)
    mask_logits[0, 1] = float("inf")
    mask_logits[0, 2, 0, 0] = float("nan")
    classes = torch.tensor([0, 1])
    masks = (torch.rand(2, 8, 8) > 0.5).float()
    cost = matcher.cost_matrix(class_logits[0], mask_logits[0], classes, masks)
    assert torch.isfinite(cost).all()
    [(rows, cols)] = matcher(class_logits, mask_logits, [classes], [masks])
    assert len(rows) == 2


def test_matcher_cost_is_fp32_under_autocast():
    matcher = HungarianMatcher()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = matcher.cost_matrix(
            torch.randn(3, 4).bfloat16(),
            torch.randn(3, 8, 8).bfloat16(),
            torch.tensor([1]),
            torch.ones(1, 8, 8),
        )
    assert cost.dtype == torch.float32


def test_pairwise_costs_match_the_per_pair_losses():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 50), (torch.rand(3, 50) > 0.5).float()
    focal = pairwise_sigmoid_focal(logits, targets)
    dice = pairwise_dice(logits, targets)
    for q in range(4):
        for n in range(3):
            assert focal[q, n].item() == pytest.approx(
                focal_loss(logits[q : q + 1], targets[n : n + 1], 1.0, alpha=0.25, gamma=2.0).item(), rel=1e-5
            )
            assert dice[q, n].item() == pytest.approx(
                dice_loss(logits[q : q + 1], targets[n : n + 1], 1.0).item(), rel=1e-5
            )


# --- focal and dice against hand-computed values ----------------------------------------------------------


def test_dice_loss_by_hand():
    # logits 0 -> p = 0.5 everywhere; 4 points, target [1, 1, 0, 0]:
    # 2 * sum(p*t) = 2 * 1.0 = 2; sum(p) + sum(t) = 2 + 2 = 4; dice = 1 - (2 + 1) / (4 + 1) = 0.4
    logits = torch.zeros(1, 4)
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert dice_loss(logits, targets, num_masks=1).item() == pytest.approx(0.4)
    assert dice_loss(logits, targets, num_masks=2).item() == pytest.approx(0.2)


def test_focal_loss_by_hand():
    # logit 0, p = 0.5: BCE = ln 2; positive: alpha * (1-p)^2 * ln2 = 0.25 * 0.25 * ln2;
    # negative: (1-alpha) * p^2 * ln2 = 0.75 * 0.25 * ln2. Mean over 2 points of one of each:
    import math

    logits = torch.zeros(1, 2)
    targets = torch.tensor([[1.0, 0.0]])
    expected = (0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)) / 2
    assert focal_loss(logits, targets, 1.0, alpha=0.25, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)
    # a confident correct logit of +4 on a positive: alpha * (1 - s)^2 * softplus(-4)
    s = 1 / (1 + math.exp(-4))
    expected = 0.25 * (1 - s) ** 2 * math.log1p(math.exp(-4))
    assert focal_loss(
        torch.tensor([[4.0]]), torch.tensor([[1.0]]), 1.0, alpha=0.25, gamma=2.0
    ).item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_weights_no_object():
    model = tiny_model(no_object_weight=0.1)
    assert model.criterion.class_weights(torch.device("cpu")).tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])


# --- backbones ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backbone_config",
    [
        SwinConfig(
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            window_size=4,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        ConvNextConfig(
            hidden_sizes=[8, 16, 32, 64],
            depths=[1, 1, 1, 1],
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            image_size=64,
            out_features=["stage1", "stage2"],
        ),
        {
            "model_type": "maskformer-swin",
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 4,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
    ],
    ids=["swin", "convnext", "dinov2", "maskformer-swin"],
)
def test_backbones(backbone_config):
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config(backbone_config=backbone_config)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.class_queries_logits.shape == (1, 10, 4)
    assert torch.isfinite(out.masks_queries_logits).all()


def test_timm_backbone():
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config(backbone_config=None, backbone="resnet18")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.masks_queries_logits.shape == (1, 10, 16, 16)


def test_pretrained_backbone_really_loads_weights(tmp_path):
    from transformers import ResNetBackbone

    torch.manual_seed(1)
    pretrained = ResNetBackbone(tiny_backbone_config())
    pretrained.save_pretrained(tmp_path / "backbone")
    config = tiny_config(backbone=str(tmp_path / "backbone"), use_pretrained_backbone=True)
    model = MaskFormerForInstanceSegmentation(config)
    torch.testing.assert_close(
        model.model.backbone.body.embedder.embedder.convolution.weight,
        pretrained.embedder.embedder.convolution.weight,
    )


def test_pretrained_backbone_that_cannot_load_is_a_clear_error(tmp_path):
    config = tiny_config(backbone=str(tmp_path / "does-not-exist"), use_pretrained_backbone=True)
    with pytest.raises(OSError, match="could not load pretrained backbone weights.*use_pretrained_backbone=False"):
        MaskFormerForInstanceSegmentation(config)


@pytest.mark.slow
def test_pretrained_timm_backbone_without_network_is_a_clear_error():
    # slow: timm tries its download mirrors before giving up (~45 s with no network)
    config = tiny_config(backbone_config=None, backbone="resnet18", use_pretrained_backbone=True)
    with pytest.raises(OSError, match="could not load pretrained backbone weights"):
        MaskFormerForInstanceSegmentation(config)


# --- persistence and Auto classes ---------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, inputs):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path / "remote", folder_format="remote_code")
    model.save_pretrained(tmp_path / "native")  # transformers' own format: its Auto classes give its own model
    for folder, loader, cls in (
        ("remote", MaskFormerForInstanceSegmentation, MaskFormerForInstanceSegmentation),
        ("remote", AutoModelForInstanceSegmentation, MaskFormerForInstanceSegmentation),
        ("native", AutoModelForInstanceSegmentation, transformers.MaskFormerForInstanceSegmentation),
        ("native", MaskFormerForInstanceSegmentation, MaskFormerForInstanceSegmentation),
    ):
        assert (tmp_path / folder / "model.safetensors").exists()
        loaded = loader.from_pretrained(tmp_path / folder).eval()
        assert type(loaded) is cls
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(inputs).masks_queries_logits, model(inputs).masks_queries_logits, rtol=0, atol=0
            )
    assert type(AutoModel.from_pretrained(tmp_path / "remote")) is MaskFormerModel
    # The loss of the reloaded model is the same too (no state left uninitialised by from_pretrained).
    mask_labels, class_labels = random_targets(B, H, W)
    with torch.no_grad():
        expected = model(inputs, mask_labels=mask_labels, class_labels=class_labels).loss
        reloaded = loaded(inputs, mask_labels=mask_labels, class_labels=class_labels).loss
    torch.testing.assert_close(reloaded, expected)


def test_loading_with_other_num_labels_warns_and_reinitialises_the_class_head(tmp_path, caplog):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        loaded = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, num_labels=7)
    assert loaded.class_head.out_features == 8
    assert "has 3 classes but the model is built with num_labels=7" in caplog.text
    torch.testing.assert_close(loaded.mask_head.layers[0].weight, model.mask_head.layers[0].weight)


def test_from_pretrained_never_fetches_backbone_weights(tmp_path):
    tiny_model(backbone="resnet18-from-nowhere").save_pretrained(tmp_path)
    config = MaskFormerConfig.from_pretrained(tmp_path)
    config.use_pretrained_backbone = True
    config.save_pretrained(tmp_path)
    MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)  # no download attempted, no error


# --- bad configs and inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"hidden_size": 30}, "hidden_size"),
        ({"fpn_feature_size": 48}, "fpn_feature_size"),
        ({"pixel_decoder_type": "msdeform"}, "pixel_decoder_type"),
        ({"mask_loss_mode": "sparse"}, "mask_loss_mode"),
        ({"num_labels": 0}, "num_labels"),
        ({"dice_weight": -1.0}, "dice_weight"),
        ({"no_object_weight": -0.1}, "no_object_weight"),
        ({"backbone_config": {"model_type": "bert"}}, "backbone_config"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_queries": 0}, "num_queries"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    "pixel_values,error,match",
    [
        (torch.randn(3, 64, 64), ValueError, "4-D"),
        (torch.randn(1, 4, 64, 64), ValueError, "channels"),
        (torch.randn(1, 3, 16, 64), ValueError, "at least 32"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "floating point"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_pixel_values(pixel_values, error, match):
    with pytest.raises(error, match=match):
        tiny_model()(pixel_values)


def test_bad_labels(inputs):
    model = tiny_model()
    mask_labels, class_labels = random_targets(B, H, W)
    with pytest.raises(ValueError, match="both mask_labels and class_labels"):
        model(inputs, mask_labels=mask_labels)
    with pytest.raises(ValueError, match=r"class_labels must be in \[0, 3\)"):
        model(inputs, mask_labels=mask_labels, class_labels=[torch.tensor([0, 7]), class_labels[1]])
    with pytest.raises(ValueError, match="padded input size"):
        model(inputs, mask_labels=[m[:, :32] for m in mask_labels], class_labels=class_labels)
    with pytest.raises(ValueError, match="for a batch of 2"):
        model(inputs, mask_labels=mask_labels[:1], class_labels=class_labels[:1])
