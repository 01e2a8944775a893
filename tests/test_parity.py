"""Parity with transformers' MaskFormer and the authors' checkpoint format (modeling_maskformer/conversion*.py).

transformers models are built at a tiny size with random weights (no network), every float tensor perturbed
so that a wrong mapping (two LayerNorms swapped, say) changes the outputs, saved, converted with the library
and compared in eval mode at TOLERANCE. transformers' `decoder_config.auxiliary_loss` stays False (its
default): True writes the final LayerNorm into the decoder's residual stream, which the original does not.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import MaskFormerSwinConfig, ResNetConfig, SwinConfig, TimmBackboneConfig

from modeling_maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from modeling_maskformer.interop.authors_checkpoints import (
    ArrayOnlyUnpickler,
    convert_from_original,
    load_original_checkpoint,
    to_original_state_dict,
)
from modeling_maskformer.interop.transformers_weights import (
    CheckpointMismatchError,
    convert_from_transformers,
    convert_to_transformers,
    resolve_source,
    state_dict_from_transformers,
)

import exact
from builders import STAGES, tiny_model

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
SIZES = [(64, 64), (64, 96), (70, 45)]  # 70x45: padding inside the backbone (Swin: to its patch/window size)
DECODER = {
    "d_model": 32,
    "decoder_layers": 2,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
    "num_queries": 10,
}
SWIN = {
    "embed_dim": 16,
    "depths": [1, 2, 1, 1],
    "num_heads": [1, 2, 2, 4],
    "window_size": 4,
    "image_size": 64,
}
BACKBONES = {
    "maskformer-swin": lambda: MaskFormerSwinConfig(**SWIN, out_features=STAGES),
    "swin": lambda: SwinConfig(**SWIN, out_features=STAGES),
    "resnet": lambda: ResNetConfig(
        embedding_size=8, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], out_features=STAGES
    ),
    "timm": lambda: TimmBackboneConfig(backbone="test_resnet", out_indices=[1, 2, 3, 4]),
}
PROCESSOR = {"size": {"shortest_edge": 64, "longest_edge": 96}, "ignore_index": 255, "do_reduce_labels": True}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: thread synchronisation costs more than it saves (and CI shares 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_(model: nn.Module, seed: int) -> None:
    """Make every float tensor distinct (LayerNorms start as ones/zeros): a wrong mapping must show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))


def transformers_model(kind: str, seed: int = 0) -> transformers.MaskFormerForInstanceSegmentation:
    torch.manual_seed(seed)
    config = transformers.MaskFormerConfig(
        backbone_config=BACKBONES[kind](),
        decoder_config=DECODER,
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
    )
    model = transformers.MaskFormerForInstanceSegmentation(config).eval()
    perturb_(model, seed)
    return model


def save_transformers_folder(model, kind: str, folder: Path) -> Path:
    """As a transformers user would: the model and transformers' own processor config."""
    model.save_pretrained(folder)
    transformers.MaskFormerImageProcessor(**PROCESSOR, num_labels=3).save_pretrained(folder)
    if kind == "swin":  # Hub checkpoints keep "swin"; save_pretrained writes the MaskFormer-Swin it built
        config = json.loads((folder / "config.json").read_text())
        config["backbone_config"] = BACKBONES["swin"]().to_dict()
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Per backbone kind: (transformers model, its folder, our converted model, our saved folder)."""
    result = {}
    for kind in BACKBONES:
        root = tmp_path_factory.mktemp(kind)
        tf_model = transformers_model(kind)
        folder = save_transformers_folder(tf_model, kind, root / "transformers")
        ours, _ = convert_from_transformers(folder, root / "ours")
        result[kind] = (tf_model, folder, ours, root / "ours")
    return result


def max_difference(a, b) -> float:
    return max(
        (a.class_queries_logits - b.class_queries_logits).abs().max().item(),
        (a.masks_queries_logits - b.masks_queries_logits).abs().max().item(),
    )


# ----------------------------------------------------------------------------------------------------
# transformers -> ours
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(BACKBONES))
def test_logits_match_transformers(converted, kind):
    tf_model, _, ours, saved = converted[kind]
    reloaded = MaskFormerForInstanceSegmentation.from_pretrained(saved).eval()
    assert reloaded.config.backbone_config.model_type == ours.config.backbone_config.model_type
    worst = 0.0
    for height, width in SIZES:
        pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        with torch.no_grad():
            expected, got, again = tf_model(pixel_values), ours(pixel_values), reloaded(pixel_values)
        assert got.masks_queries_logits.shape == expected.masks_queries_logits.shape
        worst = max(worst, max_difference(expected, got))
        assert max_difference(got, again) == 0  # our save_pretrained/from_pretrained is lossless
    print(f"max |transformers - ours| for {kind}: {worst:.2e}")
    assert worst <= TOLERANCE


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_padded_batch_matches_transformers(converted, kind):
    """Two images of different sizes, padded by our processor (transformers ignores `pixel_mask`, and so
    does our model: both see the same padded tensor)."""
    tf_model, _, ours, _ = converted[kind]
    generator = torch.Generator().manual_seed(1)
    images = [
        torch.randint(0, 256, (3, 50, 70), generator=generator, dtype=torch.uint8),
        torch.randint(0, 256, (3, 64, 40), generator=generator, dtype=torch.uint8),
    ]
    inputs = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})(images)
    assert inputs["pixel_values"].shape == (2, 3, 96, 96) and inputs["pixel_mask"][1, :, 60:].sum() == 0
    with torch.no_grad():
        expected, got = tf_model(**inputs), ours(**inputs)
    assert max_difference(expected, got) <= TOLERANCE
    assert torch.equal(got.pixel_mask, inputs["pixel_mask"])


def test_processor_settings_from_transformers(converted):
    _, folder, _, saved = converted["resnet"]
    ours = MaskFormerImageProcessor.from_pretrained(saved)
    theirs = transformers.AutoImageProcessor.from_pretrained(folder)
    assert ours.size == PROCESSOR["size"] and ours.ignore_index == 255 and ours.do_reduce_labels
    assert ours.num_labels == 3 and list(ours.image_mean) == list(theirs.image_mean)
    image = torch.randint(0, 256, (3, 48, 72), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    # 48x72 resizes to 64x96, a multiple of 32: transformers' size_divisor (a resize) and our padding agree.
    expected = theirs(image, return_tensors="pt")["pixel_values"]
    got = ours(image)["pixel_values"]
    assert got.shape == expected.shape == (1, 3, 64, 96)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_old_and_new_transformers_key_names(converted, tmp_path):
    """transformers 5.x writes 4.x names (`out_proj`, layer-level `fc1`; read above); its in-memory names
    (`o_proj`, `mlp.fc1`) convert to the same weights; a `.bin` is read with weights_only=True."""
    tf_model, folder, ours, _ = converted["resnet"]
    on_disk = json.dumps(sorted(transformers_keys(folder)))
    assert ".self_attn.out_proj." in on_disk and ".layers.0.fc1." in on_disk and ".mlp.fc1." not in on_disk
    in_memory = tf_model.state_dict()
    assert any(".o_proj." in key for key in in_memory)
    target = ours.state_dict()
    new_names = state_dict_from_transformers(in_memory, ours.config, target)
    assert all(torch.equal(new_names[key], target[key]) for key in target)

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (legacy / name).write_text((folder / name).read_text())
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), legacy / "pytorch_model.bin")
    from_bin, _ = convert_from_transformers(legacy)
    assert all(torch.equal(value, target[key]) for key, value in from_bin.state_dict().items())


def transformers_keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as file:
        return list(file.keys())


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not be downloaded"):
        resolve_source("facebook/maskformer-nonexistent-test-model")


# ----------------------------------------------------------------------------------------------------
# ours -> transformers
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(BACKBONES))
def test_ours_to_transformers_to_ours_is_bit_identical(converted, kind, tmp_path):
    _, _, ours, saved = converted[kind]
    convert_to_transformers(saved, tmp_path / "transformers")
    tf_model = transformers.MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "transformers").eval()
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "transformers")
    assert type(processor) is transformers.MaskFormerImageProcessor and processor.do_reduce_labels  # not ours
    back, back_processor = convert_from_transformers(tmp_path / "transformers")
    assert back_processor.size == PROCESSOR["size"] and back_processor.ignore_index == 255
    before, after = ours.state_dict(), back.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[key], after[key]) for key in before)
    pixel_values = torch.randn(2, 3, 70, 45, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        original, round_trip, theirs = ours(pixel_values), back(pixel_values), tf_model(pixel_values)
    assert max_difference(original, round_trip) == 0
    assert max_difference(original, theirs) <= TOLERANCE


def test_to_transformers_keeps_our_training_settings(tmp_path):
    """Our defaults (deep supervision on) and point-sampled losses: transformers gets use_auxiliary_loss=False
    (True breaks its inference) and runs; converting back restores our settings."""
    ours = tiny_model(seed=3, mask_loss_mode="point", focal_alpha=0.3).eval()
    assert ours.config.use_auxiliary_loss
    tf_model = convert_to_transformers(ours, tmp_path / "transformers")
    assert tf_model.config.use_auxiliary_loss is False
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_difference(ours(pixel_values), tf_model(pixel_values)) <= TOLERANCE
    back, _ = convert_from_transformers(tmp_path / "transformers")
    for name in ("use_auxiliary_loss", "mask_loss_mode", "focal_alpha", "train_num_points", "class_weight"):
        assert getattr(back.config, name) == getattr(ours.config, name), name


def test_to_transformers_refuses_what_it_cannot_represent(tmp_path):
    with pytest.raises(ValueError, match="pixel_decoder_type='fpn_transformer_encoder'"):
        convert_to_transformers(tiny_model(pixel_decoder_type="fpn_transformer_encoder"), tmp_path)
    with pytest.raises(ValueError, match="pre_norm=True"):
        convert_to_transformers(tiny_model(pre_norm=True), tmp_path)
    assert not (tmp_path / "config.json").exists()


# ----------------------------------------------------------------------------------------------------
# Errors name the keys
# ----------------------------------------------------------------------------------------------------
def test_missing_extra_and_mis_shaped_keys_are_errors(converted):
    tf_model, _, ours, _ = converted["resnet"]
    state, config, target = tf_model.state_dict(), ours.config, ours.state_dict()
    missing = {k: v for k, v in state.items() if k != "class_predictor.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"1 missing keys: class_head\.bias"):
        state_dict_from_transformers(missing, config, target)
    extra = {**state, "model.transformer_module.decoder.layers.5.mlp.fc1.weight": torch.zeros(64, 32)}
    with pytest.raises(
        CheckpointMismatchError, match=r"unexpected keys: model\.transformer_decoder\.layers\.5\.ffn\.fc1"
    ):
        state_dict_from_transformers(extra, config, target)
    unknown = {**state, "model.some_new_module.weight": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError, match=r"no conversion rule covers: model\.some_new_module\.weight"):
        state_dict_from_transformers(unknown, config, target)
    shaped = {**state, "class_predictor.weight": torch.zeros(5, 32)}
    with pytest.raises(CheckpointMismatchError, match=r"class_head\.weight \(checkpoint \(5, 32\), model \(4, 32\)\)"):
        state_dict_from_transformers(shaped, config, target)


# ----------------------------------------------------------------------------------------------------
# Post-processing: where transformers' is correct, both agree
# ----------------------------------------------------------------------------------------------------
def test_semantic_post_processing_matches_transformers(converted):
    """Unpadded input, target size = input size (transformers does not crop padding: not compared). Both equal
    the authors' algorithm (tests/reference_inference.py) outside float ties (tests/exact.py): the two
    implementations sum the same float32 terms in their own order, so a near-tie may be ranked either way."""
    tf_model, _, ours, _ = converted["resnet"]
    pixel_values = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        outputs = ours(pixel_values, pixel_mask=torch.ones(2, 64, 96, dtype=torch.long))
    expected = transformers.MaskFormerImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=[(64, 96)] * 2
    )
    got = MaskFormerImageProcessor().post_process_semantic_segmentation(outputs, target_sizes=[(64, 96)] * 2)
    sizes = {"padded_size": (64, 96), "target_sizes": [(64, 96)] * 2}
    exact.check_semantic(
        {"ours": got, "transformers": expected}, outputs.class_queries_logits, outputs.masks_queries_logits, sizes
    )


def confident_outputs():
    """Queries 0, 1, 3 claim classes 0, 1, 2 on full-width stripes that tile the image; query 2 is "no object".
    The stripes sit on the stride-4 grid with no corners, where transformers' nearest and our bilinear
    upsampling of a +-10 mask agree (at a corner where three masks meet, bilinear leaves a pixel unclaimed)."""
    class_logits = torch.full((1, 4, 4), -10.0)
    for query, label in ((0, 0), (1, 1), (2, 3), (3, 2)):
        class_logits[0, query, label] = 10.0
    mask_logits = torch.full((1, 4, 16, 24), -10.0)
    mask_logits[0, 0, :5] = mask_logits[0, 1, 5:10] = mask_logits[0, 3, 10:] = 10.0
    mask_logits[0, 2] = torch.randn(16, 24, generator=torch.Generator().manual_seed(5))
    return {
        "class_queries_logits": class_logits,
        "masks_queries_logits": mask_logits,
        "pixel_mask": torch.ones(1, 64, 96, dtype=torch.long),
    }


def test_panoptic_post_processing_matches_transformers():
    """Same segments, ids and scores. Differences elsewhere (documented in post_processing.py): a fused class
    is listed once (transformers repeats it), the overlap test uses >= and the mask's own area."""
    outputs = confident_outputs()
    theirs = transformers.MaskFormerImageProcessor().post_process_panoptic_segmentation(
        transformers.utils.ModelOutput(outputs), label_ids_to_fuse={2}, target_sizes=[(64, 96)]
    )[0]
    ours = MaskFormerImageProcessor().post_process_panoptic_segmentation(
        outputs, label_ids_to_fuse={2}, target_sizes=[(64, 96)]
    )[0]
    assert torch.equal(ours["segmentation"], theirs["segmentation"])
    assert ours["segments_info"] == theirs["segments_info"]
    assert [s["label_id"] for s in ours["segments_info"]] == [0, 1, 2] and ours["segments_info"][2]["was_fused"]


def test_instance_post_processing_matches_transformers():
    """Same instances, labels and masks. Ours lists them by score (transformers: unsorted top-k) and honours
    mask_threshold/overlap_mask_area_threshold. Scores are up to 5 % lower here: ours averages mask probabilities
    resampled to the output size (the bilinear border between 1 and 0 counts), transformers the
    low-resolution ones."""
    outputs = confident_outputs()
    theirs = transformers.MaskFormerImageProcessor().post_process_instance_segmentation(
        transformers.utils.ModelOutput(outputs), target_sizes=[(64, 96)]
    )[0]
    ours = MaskFormerImageProcessor().post_process_instance_segmentation(outputs, target_sizes=[(64, 96)])[0]
    assert len(ours["segments_info"]) == len(theirs["segments_info"]) == 3
    by_label = {s["label_id"]: s for s in theirs["segments_info"]}
    for segment in ours["segments_info"]:
        other = by_label[segment["label_id"]]
        assert other["score"] - 0.1 < segment["score"] <= other["score"]
        assert torch.equal(ours["segmentation"] == segment["id"], theirs["segmentation"] == other["id"])
    assert torch.equal(ours["segmentation"] == -1, theirs["segmentation"] == -1)


# ----------------------------------------------------------------------------------------------------
# The authors' format
# ----------------------------------------------------------------------------------------------------
ORIGINAL_MODELS = {
    "resnet": {},
    "resnet-6enc": {"pixel_decoder_type": "fpn_transformer_encoder"},
    "maskformer-swin": {"backbone_config": MaskFormerSwinConfig(**SWIN, out_features=STAGES)},
}
# MaskFormer-Swin's final LayerNorm: unused by its backbone forward and absent from the original.
UNUSED = {"model.backbone.body.model.layernorm.weight", "model.backbone.body.model.layernorm.bias"}


def write_original(model, path: Path) -> Path:
    """Pickled as detectron2's model zoo files are: numpy arrays under "model"."""
    with open(path, "wb") as file:
        pickle.dump({"model": to_original_state_dict(model), "__author__": "test", "matching_heuristics": True}, file)
    return path


@pytest.mark.parametrize("kind", list(ORIGINAL_MODELS))
def test_original_format_round_trip(kind, tmp_path):
    ours = tiny_model(seed=1, **ORIGINAL_MODELS[kind]).eval()
    perturb_(ours, seed=1)
    path = write_original(ours, tmp_path / "model_final_test.pkl")
    keys = set(load_original_checkpoint(path))
    assert "sem_seg_head.predictor.transformer.decoder.layers.0.self_attn.in_proj_weight" in keys
    assert ("sem_seg_head.pixel_decoder.transformer.encoder.layers.0.linear1.weight" in keys) == ("6enc" in kind)
    back, _ = convert_from_original(path, tmp_path / "ours", num_attention_heads=4)
    assert back.config.pixel_decoder_type == ours.config.pixel_decoder_type
    before, after = ours.state_dict(), back.state_dict()
    assert set(before) == set(after)
    assert all(torch.equal(before[key], after[key]) for key in set(before) - UNUSED)
    pixel_values = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert max_difference(ours(pixel_values), back(pixel_values)) == 0


class DetrEncoderLayer(nn.Module):
    """DETR's TransformerEncoderLayer.forward_post with its attribute names (the original's layout)."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src, pos):
        src = self.norm1(src + self.self_attn(src + pos, src + pos, value=src)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DetrDecoderLayer(nn.Module):
    """DETR's TransformerDecoderLayer.forward_post with its attribute names."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn, self.multihead_attn = nn.MultiheadAttention(d, heads), nn.MultiheadAttention(d, heads)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt, memory, pos, query_pos):
        tgt = self.norm1(tgt + self.self_attn(tgt + query_pos, tgt + query_pos, value=tgt)[0])
        tgt = self.norm2(tgt + self.multihead_attn(tgt + query_pos, memory + pos, value=memory)[0])
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


def test_original_layout_runs_as_detr(tmp_path):
    """An independent check of the assumed layout: the converted weights, loaded strictly into DETR-style
    modules named as in the authors' code, give our model's encoder output and logits."""
    ours = tiny_model(seed=2, pixel_decoder_type="fpn_transformer_encoder").eval()
    perturb_(ours, seed=2)
    state = {k: torch.from_numpy(v) for k, v in to_original_state_dict(ours).items()}
    config = ours.config
    d, heads = config.hidden_size, config.num_attention_heads

    def sub(prefix: str) -> dict:
        return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

    input_proj = nn.Conv2d(64, d, 1)
    input_proj.load_state_dict(sub("sem_seg_head.pixel_decoder.input_proj."))
    encoder = nn.Module()
    encoder.layers = nn.ModuleList(DetrEncoderLayer(d, heads, config.encoder_ffn_dim) for _ in range(1))
    encoder.load_state_dict(sub("sem_seg_head.pixel_decoder.transformer.encoder."))
    predictor = nn.Module()
    predictor.query_embed = nn.Embedding(config.num_queries, d)
    predictor.transformer = nn.Module()
    predictor.transformer.decoder = nn.Module()
    predictor.transformer.decoder.layers = nn.ModuleList(
        DetrDecoderLayer(d, heads, config.decoder_ffn_dim) for _ in range(config.decoder_layers)
    )
    predictor.transformer.decoder.norm = nn.LayerNorm(d)
    predictor.class_embed = nn.Linear(d, config.num_labels + 1)
    predictor.mask_embed = nn.Module()
    predictor.mask_embed.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(3))
    predictor.load_state_dict(sub("sem_seg_head.predictor."))  # strict: every name exists in DETR's layout

    pixel_values = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(7))
    position = transformers.models.maskformer.modeling_maskformer.MaskFormerSinePositionEmbedding(
        d // 2, normalize=True
    )
    with torch.no_grad():
        res5 = ours.model.backbone(pixel_values)[-1]
        src = input_proj(res5)
        batch, _, height, width = src.shape
        pos = position(src.shape, src.device, src.dtype).flatten(2).permute(2, 0, 1)  # (HW, B, d)
        memory = src.flatten(2).permute(2, 0, 1)  # (HW, B, d), sequence first as in DETR
        for layer in encoder.layers:
            memory = layer(memory, pos)
        encoded = memory.permute(1, 2, 0).reshape(batch, d, height, width)
        torch.testing.assert_close(encoded, ours.model.pixel_decoder.encoder(res5, "eager"), atol=1e-5, rtol=0)
        query_pos = predictor.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)  # (Q, B, d)
        hidden = torch.zeros_like(query_pos)
        for layer in predictor.transformer.decoder.layers:
            hidden = layer(hidden, memory, pos, query_pos)
        hidden = predictor.transformer.decoder.norm(hidden).transpose(0, 1)  # (B, Q, d)
        embedding = hidden
        for index, linear in enumerate(predictor.mask_embed.layers):
            embedding = linear(embedding) if index == 2 else F.relu(linear(embedding))
        outputs = ours(pixel_values)
        masks = torch.einsum("bqc,bchw->bqhw", embedding, outputs.pixel_decoder_last_hidden_state)
    torch.testing.assert_close(predictor.class_embed(hidden), outputs.class_queries_logits, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(masks, outputs.masks_queries_logits, atol=TOLERANCE, rtol=0)


class RunsACommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_pickles_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final_evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "payload": RunsACommand(f"touch {marker}")}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load posix\.system"):
        load_original_checkpoint(path)
    assert not marker.exists()
    with open(path, "rb") as file, pytest.raises(pickle.UnpicklingError, match="only contain numpy arrays"):
        ArrayOnlyUnpickler(file).load()
    assert not marker.exists()


@pytest.mark.parametrize("preset", ["swin-tiny-ade", "resnet50-6enc-coco"])
def test_original_presets_at_full_size(preset, tmp_path):
    """Released architectures (random weights): the preset's checks pass and the weights come back equal."""
    config = {
        "swin-tiny-ade": MaskFormerConfig(num_labels=150),  # our defaults are the paper's Swin-T model
        "resnet50-6enc-coco": MaskFormerConfig(
            num_labels=133,
            pixel_decoder_type="fpn_transformer_encoder",
            backbone_config=ResNetConfig(
                depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], out_features=STAGES
            ),
        ),
    }[preset]
    ours = MaskFormerForInstanceSegmentation(config)
    back, processor = convert_from_original(write_original(ours, tmp_path / "model.pkl"), preset=preset)
    assert back.config.backbone_config.to_diff_dict() == ours.config.backbone_config.to_diff_dict()
    before, after = ours.state_dict(), back.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in set(before) - UNUSED)
    assert processor.num_labels == config.num_labels and processor.size["shortest_edge"] in (512, 800)


def test_original_preset_mismatch_names_the_fields(tmp_path):
    path = write_original(tiny_model(), tmp_path / "model.pkl")
    with pytest.raises(ValueError, match=r"preset 'resnet50-ade'.*depths: checkpoint \[1, 1, 1, 1\]"):
        convert_from_original(path, preset="resnet50-ade")
    with pytest.raises(ValueError, match=r"model_type: checkpoint 'resnet', preset 'maskformer-swin'"):
        convert_from_original(path, preset="swin-tiny-ade")


# ----------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------
def test_cli_from_transformers(converted, tmp_path):
    tf_model, folder, _, _ = converted["resnet"]
    script = ROOT / "scripts" / "convert_checkpoint.py"
    result = subprocess.run(
        [sys.executable, str(script), "--from", "transformers", str(folder), str(tmp_path / "ours")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Wrote" in result.stdout
    model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "ours").eval()
    assert MaskFormerImageProcessor.from_pretrained(tmp_path / "ours").size == PROCESSOR["size"]
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_difference(tf_model(pixel_values), model(pixel_values)) <= TOLERANCE
