"""The paper's per-pixel classification baseline (Table 4) and the head-to-head comparison with MaskFormer.

References are independent of our code: torch's `F.cross_entropy` and `F.interpolate` for the loss and the
inference, and a hand-computed average of mirrored views for test-time augmentation."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation, pipeline

from modeling_maskformer import (
    MaskFormerForInstanceSegmentation,
    MaskFormerImageProcessor,
    PerPixelBaselineConfig,
    PerPixelBaselineForSemanticSegmentation,
    PerPixelBaselineModel,
)
from modeling_maskformer.data import SyntheticShapes, SyntheticShapesConfig, build_dataset
from modeling_maskformer.data.synthetic import MAX_THING_CLASSES
from modeling_maskformer.evaluation import Evaluator, evaluate_model
from modeling_maskformer.inference.pipeline import MaskFormerSegmentationPipeline
from modeling_maskformer.inference.tta import TestTimeAugmentation, semantic_scores_tta
from modeling_maskformer.paper.compare import (
    CompareSettings,
    build_pair,
    compare_heads,
    format_report,
    lr_factor,
    trend,
)
from modeling_maskformer.training import parse_args, train

import exact
from builders import PACKAGE_BLOCKER, random_targets, tiny_config
from numerics import SAME_GRAPH, assert_close

ROOT = Path(__file__).resolve().parents[1]


def tiny_baseline(seed: int = 0, **overrides) -> PerPixelBaselineForSemanticSegmentation:
    torch.manual_seed(seed)
    return PerPixelBaselineForSemanticSegmentation(
        PerPixelBaselineConfig.from_maskformer_config(tiny_config(**overrides))
    )


@pytest.fixture(scope="module")
def processor():
    return MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256})


def image(height: int, width: int, index: int = 0) -> np.ndarray:
    return np.array(SyntheticShapes("validation", index + 1, max(height, width))[index]["image"])[:height, :width]


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------
def test_shapes_and_outputs():
    model = tiny_baseline(num_labels=5).eval()
    outputs = model(pixel_values=torch.randn(2, 3, 64, 96), output_hidden_states=True)
    assert outputs.logits.shape == (2, 5, 16, 24)  # (B, K, H/4, W/4)
    assert outputs.pixel_decoder_last_hidden_state.shape == (2, 32, 16, 24)
    assert len(outputs.encoder_hidden_states) == 4 and outputs.loss is None
    assert torch.isfinite(outputs.logits).all()
    assert not any("transformer_decoder" in name for name, _ in model.named_parameters())


def test_every_parameter_gets_a_gradient():
    model = tiny_baseline().train()
    outputs = model(pixel_values=torch.randn(2, 3, 64, 64), labels=torch.randint(0, 3, (2, 64, 64)))
    outputs.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_loss_is_cross_entropy_of_the_upsampled_logits():
    model = tiny_baseline(num_labels=4).eval()
    pixels = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 4, (2, 64, 96))
    labels[0, :10] = 255  # ignored rows
    outputs = model(pixel_values=pixels, labels=labels)
    upsampled = F.interpolate(outputs.logits, size=(64, 96), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(upsampled, labels, ignore_index=255)
    torch.testing.assert_close(outputs.loss, expected)
    # the same, by hand: mean negative log-probability of the true class over the pixels that count
    log_probs = upsampled.log_softmax(1)
    keep = labels != 255
    by_hand = -log_probs.permute(0, 2, 3, 1)[keep].gather(1, labels[keep][:, None]).mean()
    torch.testing.assert_close(outputs.loss, by_hand)
    assert outputs.loss_dict == {"loss_cross_entropy": outputs.loss}


def test_ignore_index():
    model = tiny_baseline().train()
    pixels = torch.randn(1, 3, 64, 64)
    labels = torch.randint(0, 3, (1, 64, 64))
    labels[:, 32:] = 255
    changed = labels.clone()
    changed[:, 32:] = 255
    base = model(pixel_values=pixels, labels=labels).loss
    # ignored pixels carry no target: a loss over the top half only
    upsampled = F.interpolate(model(pixel_values=pixels).logits, size=(64, 64), mode="bilinear", align_corners=False)
    top = F.cross_entropy(upsampled[..., :32, :], labels[:, :32])
    torch.testing.assert_close(base, top)
    # every pixel ignored: a zero loss (not NaN) that still backpropagates
    nothing = model(pixel_values=pixels, labels=torch.full((1, 64, 64), 255)).loss
    assert nothing.item() == 0.0
    nothing.backward()
    # a configurable ignore index, which must not be a class id
    other = tiny_baseline(ignore_index=-1)
    assert other.config.ignore_index == -1
    with pytest.raises(ValueError, match="ignore_index=2: must not be a class id"):
        PerPixelBaselineConfig.from_maskformer_config(tiny_config(), ignore_index=2)
    with pytest.raises(ValueError, match="class ids must be 0..2"):
        model(pixel_values=pixels, labels=torch.full((1, 64, 64), 7))


def test_mask_labels_give_the_same_loss_as_the_class_map():
    """The training loop's batches (mask_labels, class_labels): a pixel outside every mask is ignored."""
    model = tiny_baseline().eval()
    pixels = torch.randn(3, 3, 64, 64)
    mask_labels, class_labels = random_targets(3, 64, 64)
    labels = torch.full((3, 64, 64), 255)
    for b, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
        for mask, c in zip(masks, classes):
            labels[b][mask > 0] = c
    from_masks = model(pixel_values=pixels, mask_labels=mask_labels, class_labels=class_labels).loss
    torch.testing.assert_close(from_masks, model(pixel_values=pixels, labels=labels).loss)
    with pytest.raises(ValueError, match="both mask_labels and class_labels"):
        model(pixel_values=pixels, mask_labels=mask_labels)
    with pytest.raises(ValueError, match="not both"):
        model(pixel_values=pixels, labels=labels, mask_labels=mask_labels, class_labels=class_labels)
    overlapping = [torch.ones(2, 64, 64)] + mask_labels[1:]
    with pytest.raises(ValueError, match="masks overlap"):
        model(
            pixel_values=pixels,
            mask_labels=overlapping,
            class_labels=[torch.tensor([0, 1])] + class_labels[1:],
        )


def test_save_and_load(tmp_path):
    model = tiny_baseline(num_labels=4).eval()
    model.save_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    expected = model(pixel_values=pixels).logits
    for loaded in (
        PerPixelBaselineForSemanticSegmentation.from_pretrained(tmp_path),
        AutoModelForSemanticSegmentation.from_pretrained(tmp_path),
    ):
        assert type(loaded) is PerPixelBaselineForSemanticSegmentation
        assert torch.equal(loaded.eval()(pixel_values=pixels).logits, expected)
    assert type(AutoConfig.from_pretrained(tmp_path)) is PerPixelBaselineConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is PerPixelBaselineModel
    with pytest.raises(ValueError, match="maskformer-per-pixel"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    MaskFormerForInstanceSegmentation(tiny_config()).save_pretrained(tmp_path / "maskformer")
    with pytest.raises(ValueError, match="is a MaskFormer's"):
        PerPixelBaselineForSemanticSegmentation.from_pretrained(tmp_path / "maskformer")
    # a new class count re-initialises the classifier only
    resized = PerPixelBaselineForSemanticSegmentation.from_pretrained(tmp_path, num_labels=6)
    assert resized.class_head.weight.shape == (6, 32, 1, 1)
    assert torch.equal(
        resized.model.pixel_decoder.mask_features.weight, model.model.pixel_decoder.mask_features.weight
    )


def test_saved_folder_loads_with_remote_code_where_the_package_cannot_be_imported(tmp_path):
    """transformers' MaskFormer has no per-pixel head, so the folder carries the flattened code and an auto_map:
    a process with transformers alone loads it with trust_remote_code and gives the same logits."""
    model = tiny_baseline(num_labels=4).eval()
    model.save_pretrained(tmp_path)
    MaskFormerImageProcessor().save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModelForSemanticSegmentation"] == (
        "per_pixel.PerPixelBaselineForSemanticSegmentation"
    )
    pixels = torch.randn(1, 3, 64, 64)
    torch.save(pixels, tmp_path / "pixels.pt")
    root = str(Path(__file__).resolve().parents[1])
    code = (
        PACKAGE_BLOCKER % {"root": root}
        + f"""
import numpy as np, torch
from PIL import Image
from transformers import AutoModelForSemanticSegmentation, pipeline
folder = {str(tmp_path)!r}
model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__name__ == "PerPixelBaselineForSemanticSegmentation"
pixels = torch.load(folder + "/pixels.pt", weights_only=True)
torch.save(model(pixel_values=pixels).logits, folder + "/logits.pt")
segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(
    Image.fromarray(np.zeros((48, 40, 3), np.uint8)), subtask="semantic")
assert segments and all(s["mask"].size == (40, 48) for s in segments), segments
"""
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # another process, maybe another thread count: float32 rounding apart at most
    assert_close(
        torch.load(tmp_path / "logits.pt", weights_only=True),
        model(pixel_values=pixels).logits,
        atol=SAME_GRAPH,
        what="remote-code logits",
    )


# ----------------------------------------------------------------------------------------------------------
# Inference: the image processor, semantic only
# ----------------------------------------------------------------------------------------------------------
def test_semantic_post_processing_matches_torch_resizes(processor):
    """Two images of different sizes in one padded batch: upsample to the padded input, crop, resize, argmax."""
    model = tiny_baseline(num_labels=4).eval()
    images = [image(50, 70, 0), image(64, 40, 1)]
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    targets = [(37, 90), (64, 40)]
    maps = processor.post_process_semantic_segmentation(outputs, target_sizes=targets)
    padded = tuple(inputs["pixel_values"].shape[-2:])
    for b, (target, got) in enumerate(zip(targets, maps)):
        rows, cols = int(inputs["pixel_mask"][b, :, 0].sum()), int(inputs["pixel_mask"][b, 0].sum())
        up = F.interpolate(outputs.logits[b : b + 1], size=padded, mode="bilinear", align_corners=False)
        resized = F.interpolate(up[..., :rows, :cols], size=target, mode="bilinear", align_corners=False)
        exact.check_argmax(got, resized[0], f"image {b}")  # torch's resizes, equal outside float ties


def test_panoptic_and_instance_are_refused(processor):
    model = tiny_baseline().eval()
    with torch.no_grad():
        outputs = model(**processor([image(64, 64)], return_tensors="pt"))
    for post_process in (
        processor.post_process_panoptic_segmentation,
        processor.post_process_instance_segmentation,
    ):
        with pytest.raises(ValueError, match="semantic segmentation only"):
            post_process(outputs)
    evaluator = Evaluator({0: "a", 1: "b", 2: "c"}, thing_ids=[0], panoptic=True)
    item = {
        "semantic": np.zeros((64, 64), np.uint8),
        "panoptic_ids": np.ones((64, 64), np.int32),
        "segments_info": [{"id": 1, "category_id": 0, "iscrowd": 0}],
    }
    with pytest.raises(ValueError, match="semantic segmentation only"):
        evaluator.update(processor, outputs, [item])
    with pytest.raises(SystemExit):
        parse_args(
            [
                "--head",
                "per_pixel",
                "--metric_for_best_model",
                "pq",
                "--output_dir",
                "x",
                "--max_train_steps",
                "1",
            ]
        )


# ----------------------------------------------------------------------------------------------------------
# The evaluator and test-time augmentation
# ----------------------------------------------------------------------------------------------------------
def test_evaluator_gives_semantic_metrics_on_panoptic_data(processor):
    dataset = build_dataset("synthetic", "validation", num_images=3, image_size=64)
    model = tiny_baseline(num_labels=dataset.num_labels, id2label=dataset.id2label).eval()
    results = evaluate_model(model, processor, dataset, batch_size=2, show_progress=False)
    assert set(results) == {"semantic"} and 0 <= results["semantic"]["mean_iou"] <= 1
    # one size, no flip: the plain single-scale results
    single = TestTimeAugmentation((64,), 256, flip=False)
    tta = evaluate_model(model, processor, dataset, batch_size=2, show_progress=False, tta=single)
    assert tta["semantic"] == results["semantic"]


def test_tta_averages_softmax_scores_of_mirrored_views(processor):
    model = tiny_baseline(num_labels=4).eval()
    picture = image(48, 96)
    scores = semantic_scores_tta(model, processor, picture, TestTimeAugmentation((64,), 256, flip=True))
    inputs = processor(picture, return_tensors="pt", size={"shortest_edge": 64, "longest_edge": 256})
    pixels = inputs["pixel_values"]  # (1, 3, 64, 128): no padding at this size
    assert inputs["pixel_mask"].all()
    with torch.no_grad():
        views = [model(pixel_values=pixels).logits, model(pixel_values=pixels.flip(-1)).logits]
    expected = 0
    for logits, mirrored in zip(views, (False, True)):
        up = F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        probs = F.interpolate(up, size=(48, 96), mode="bilinear", align_corners=False)[0].softmax(0)
        expected = expected + (probs.flip(-1) if mirrored else probs) / 2
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_evaluate_script_on_a_baseline_folder(tmp_path):
    labels = SyntheticShapes.id2label
    tiny_baseline(num_labels=len(labels), id2label=labels).save_pretrained(tmp_path)
    MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256}).save_pretrained(tmp_path)
    main = runpy.run_path(str(ROOT / "scripts" / "evaluate_maskformer.py"))["main"]
    common = ["--model", str(tmp_path), "--dataset", "synthetic", "--num_images", "2", "--image_size", "64"]
    plain = main(common)
    assert set(plain) == {"semantic"}
    tta = main([*common, "--tta", "--tta_sizes", "48,64", "--output_json", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text())["semantic"]["mean_iou"] == tta["semantic"]["mean_iou"]


# ----------------------------------------------------------------------------------------------------------
# Training: the shared loop, and the comparison
# ----------------------------------------------------------------------------------------------------------
def test_training_loop_head_per_pixel(tmp_path):
    result = train(
        [
            "--head",
            "per_pixel",
            "--dataset",
            "synthetic",
            "--image_size",
            "64",
            "--crop_size",
            "64",
            "--num_train_images",
            "4",
            "--num_eval_images",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--max_train_steps",
            "2",
            "--eval_steps",
            "2",
            "--output_dir",
            str(tmp_path),
            "--learning_rate",
            "1e-3",
            "--synthetic_thing_classes",
            "9",
        ]
    )
    assert result["state"]["step"] == 2 and set(result["metrics"]) == {"mean_iou", "pixel_accuracy"}
    model = PerPixelBaselineForSemanticSegmentation.from_pretrained(tmp_path)
    assert model.config.num_labels == 12
    with pytest.raises(SystemExit):
        parse_args(
            [
                "--head",
                "per_pixel",
                "--mask_loss_mode",
                "point",
                "--output_dir",
                "x",
                "--max_train_steps",
                "1",
            ]
        )


def test_many_class_scenes():
    config = SyntheticShapesConfig(num_thing_classes=125)
    dataset = SyntheticShapes("train", 6, 64, config=config)
    assert len(dataset.id2label) == 128 and dataset.id2label[127] == "sand" and dataset.thing_ids == list(range(125))
    assert dataset.id2label[6] == "circle-stripes4-0deg"
    seen = set()
    for i in range(len(dataset)):
        item = dataset[i]
        ids = {s["category_id"] for s in item["segments_info"]}
        assert ids <= set(dataset.id2label) and set(np.unique(item["semantic"])) <= ids
        seen |= ids
    assert any(c >= 6 for c in seen)  # patterned classes occur
    assert np.array_equal(
        np.asarray(dataset[0]["image"]),
        np.asarray(SyntheticShapes("train", 6, 64, config=config)[0]["image"]),
    )
    with pytest.raises(ValueError, match=f"num_thing_classes=127 is out of range \\(1..{MAX_THING_CLASSES}"):
        SyntheticShapesConfig(num_thing_classes=127)


def test_both_heads_start_from_the_same_backbone_and_pixel_decoder():
    pair = build_pair({i: str(i) for i in range(5)}, seed=0)
    shared = pair["per_pixel"].state_dict()
    for name, value in pair["maskformer"].state_dict().items():
        if name.startswith(("model.backbone.", "model.pixel_decoder.")):
            assert torch.equal(shared[name], value), name


def test_trend():
    def row(k, difference, things=0.3):
        return {
            "num_classes": k,
            "difference": difference,
            "maskformer": {"things_mean_iou": things},
            "per_pixel": {"things_mean_iou": things},
        }

    found = trend([row(32, 0.0), row(8, -0.1), row(128, 0.2)])
    assert found == {
        "class_counts": [8, 32, 128],
        "differences": [-0.1, 0.0, 0.2],
        "grows_with_classes": True,
        "maskformer_ahead_at_largest": True,
        "reproduces": True,
        "untrained_class_counts": [],
    }
    assert not trend([row(8, 0.1), row(32, 0.05)])["grows_with_classes"]
    # a gap that closes only because neither head learned the thing classes is not the paper's trend
    collapsed = trend([row(8, -0.1), row(128, 0.001, things=0.01)])
    assert collapsed["grows_with_classes"] and not collapsed["reproduces"]
    assert collapsed["untrained_class_counts"] == [128]


def test_learning_rate_schedule_over_the_budget():
    assert lr_factor(0.0, 0.04, 0.9) == pytest.approx(1e-3)  # the first step does not stand still
    assert lr_factor(0.02, 0.04, 0.9) == pytest.approx(0.5 * 0.98**0.9)
    assert lr_factor(0.5, 0.04, 0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(1.0, 0.04, 0.9) == 0.0


def test_compare_heads_end_to_end(tmp_path, capsys):
    settings = CompareSettings(
        class_counts=(4, 9), minutes=2, image_size=64, batch_size=2, num_train_images=4, num_eval_images=1, max_steps=2
    )
    report = compare_heads(settings)
    assert [row["num_classes"] for row in report["rows"]] == [4, 9]
    for row in report["rows"]:
        assert row["steps"] == 2
        for head in ("maskformer", "per_pixel"):
            assert 0 <= row[head]["mean_iou"] <= 1 and row[head]["seconds_per_step"] > 0
        assert row["difference"] == pytest.approx(row["maskformer"]["mean_iou"] - row["per_pixel"]["mean_iou"])
    table = format_report(report)
    assert table.count("\n| ") == 2 and "with the class count" in table  # two rows after the header
    assert "The paper's trend" in table
    main = runpy.run_path(str(ROOT / "scripts" / "compare_heads.py"))["main"]
    out = tmp_path / "report.json"
    main(
        [
            "--minutes",
            "1",
            "--class_counts",
            "4",
            "--image_size",
            "64",
            "--batch_size",
            "2",
            "--num_train_images",
            "2",
            "--num_eval_images",
            "1",
            "--max_steps",
            "1",
            "--output_json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["rows"][0]["steps"] == 1
    assert "| 4 (1 + 3) | 1 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="class_counts must be ints in 4..129"):
        CompareSettings(class_counts=(3,))


def test_pipeline(tmp_path):
    labels = {0: "a", 1: "b", 2: "c"}
    tiny_baseline(id2label=labels).save_pretrained(tmp_path)
    MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256}).save_pretrained(tmp_path)
    picture = Image.fromarray(image(64, 80))
    stock = pipeline("image-segmentation", model=str(tmp_path))
    assert type(stock.model) is PerPixelBaselineForSemanticSegmentation
    expected = {r["label"] for r in stock(picture, subtask="semantic")}
    with pytest.raises(ValueError, match="semantic segmentation only"):
        stock(picture)  # the stock pipeline's default: panoptic
    ours = pipeline("image-segmentation", model=str(tmp_path), pipeline_class=MaskFormerSegmentationPipeline)
    assert {r["label"] for r in ours(picture)} == expected  # no subtask: semantic for the baseline
    with pytest.raises(ValueError, match="semantic segmentation only"):
        ours(picture, subtask="instance")
