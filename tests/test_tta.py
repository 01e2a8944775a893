"""Test-time augmentation (modeling_maskformer.inference.tta): equal to the plain inference with one size and no flip, equal
to the authors' procedure written out (tests/reference_inference.py, views averaged after the flip back), no change
from flip-averaging a mirror-symmetric model, memory that does not grow with the number of sizes, and the hooks in
the evaluator, the evaluation script and the pipeline."""

from __future__ import annotations

import gc
import json
import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.data import SyntheticShapes, SyntheticShapesConfig, build_dataset
from modeling_maskformer.evaluation import evaluate_model
from modeling_maskformer.inference.tta import TestTimeAugmentation, semantic_scores_tta, semantic_segmentation_tta
from modeling_maskformer.paper.zoo import ADE20K_512_TTA, ADE20K_640_TTA, COCO_STUFF_TTA

import exact
import reference_inference as reference
from builders import tiny_model

ROOT = Path(__file__).resolve().parents[1]


class PixelModel(nn.Module):
    """A stand-in with MaskFormer's interface whose masks follow the image, so that class maps are varied: mask
    logits (B, Q, H/4, W/4) are a fixed random mixing of the 4x4-averaged pixels; query q predicts class q mod K."""

    def __init__(self, num_queries: int = 8, num_labels: int = 4, seed: int = 3):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.mix = nn.Conv2d(3, num_queries, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.randn(self.mix.weight.shape, generator=generator) * 3)
            self.mix.bias.copy_(torch.randn(num_queries, generator=generator))
        logits = torch.randn(num_queries, num_labels + 1, generator=generator)
        logits[torch.arange(num_queries), torch.arange(num_queries) % num_labels] += 6
        self.class_logits = nn.Parameter(logits)

    def forward(self, pixel_values, pixel_mask=None):
        masks = self.mix(F.avg_pool2d(pixel_values, 4))  # (B, Q, H/4, W/4)
        return {
            "class_queries_logits": self.class_logits.expand(len(pixel_values), -1, -1),
            "masks_queries_logits": masks,
        }


class MirrorSymmetric(nn.Module):
    """Any model made mirror-equivariant by construction: outputs averaged with those of the mirrored input, the
    latter's masks mirrored back. Exact when the input has no horizontal padding."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, pixel_mask=None):
        plain = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        mirrored = self.model(pixel_values=pixel_values.flip(-1), pixel_mask=pixel_mask.flip(-1))
        return {
            "class_queries_logits": (plain["class_queries_logits"] + mirrored["class_queries_logits"]) / 2,
            "masks_queries_logits": (plain["masks_queries_logits"] + mirrored["masks_queries_logits"].flip(-1)) / 2,
        }


def scene(height: int, width: int, index: int = 0) -> np.ndarray:
    """A synthetic scene cut to height x width (uint8 RGB)."""
    return np.array(SyntheticShapes("validation", index + 1, max(height, width))[index]["image"])[:height, :width]


@pytest.fixture(scope="module")
def processor():
    return MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256})


def plain_map(model, processor, image) -> torch.Tensor:
    inputs = processor(image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    # The padding is known from the pixel mask (outputs without one count the whole input as valid).
    outputs = {**outputs, "pixel_mask": inputs["pixel_mask"]}
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[image.shape[:2]])[0]


# ----------------------------------------------------------------------------------------------------------
# The augmentation itself
# ----------------------------------------------------------------------------------------------------------
def test_sizes_around_a_test_size_are_the_authors_lists():
    assert TestTimeAugmentation.from_test_size(512) == ADE20K_512_TTA
    assert TestTimeAugmentation.from_test_size(640) == ADE20K_640_TTA == COCO_STUFF_TTA
    assert ADE20K_512_TTA.num_views == 12
    assert TestTimeAugmentation.for_processor(MaskFormerImageProcessor(size={"shortest_edge": 512})) == ADE20K_512_TTA
    with pytest.raises(ValueError, match="min_sizes"):
        TestTimeAugmentation(())
    with pytest.raises(ValueError, match="max_size"):
        TestTimeAugmentation((256, 512), 300)
    with pytest.raises(ValueError, match="shortest edge"):
        TestTimeAugmentation.for_processor(MaskFormerImageProcessor(size={"height": 64, "width": 64}))


@pytest.mark.parametrize("shape", [(70, 90), (90, 70), (64, 64), (50, 120)])
def test_one_size_without_flip_is_the_plain_inference(shape, processor):
    image = scene(*shape)
    single = TestTimeAugmentation((64,), 256, flip=False)
    for model in (PixelModel().eval(), tiny_model(num_labels=4).eval()):
        # The same classes wherever the scores are not tied (the plain path may sum in another order).
        scores = semantic_scores_tta(model, processor, image, single)
        exact.check_argmax(plain_map(model, processor, image), scores, "plain")
        assert torch.equal(semantic_segmentation_tta(model, processor, image, single)[0], scores.argmax(0))
    assert len(torch.unique(plain_map(PixelModel().eval(), processor, image))) >= 3  # varied maps: the test can fail


def authors_tta_scores(model, processor, image, augmentation) -> torch.Tensor:
    """SemanticSegmentorWithTTA written out: per view, resize (our processor), mirror after the resize, forward,
    the original semantic inference before the argmax at the image size, mirror back; the mean of all views."""
    views = []
    for min_size in augmentation.min_sizes:
        size = {"shortest_edge": min_size, "longest_edge": augmentation.max_size}
        inputs = processor(image, return_tensors="pt", size=size)
        real = inputs["pixel_mask"][0].bool()  # (H, W); the content is the top-left h x w
        h, w = int(real.any(1).sum()), int(real.any(0).sum())
        for flip in (False, True) if augmentation.flip else (False,):
            pixels = inputs["pixel_values"].clone()
            if flip:
                pixels[..., :h, :w] = pixels[..., :h, :w].flip(-1)
            with torch.no_grad():
                outputs = model(pixel_values=pixels, pixel_mask=inputs["pixel_mask"])
            masks = reference.upsampled(outputs["masks_queries_logits"], pixels.shape[-2:])[0]
            probs = outputs["class_queries_logits"][0].softmax(-1)[:, :-1]
            scores = reference.sem_seg_postprocess(
                torch.einsum("qc,qhw->chw", probs, masks.sigmoid()), (h, w), image.shape[:2]
            )
            views.append(scores.flip(-1) if flip else scores)
    return torch.stack(views).mean(0)


@pytest.mark.parametrize("shape", [(70, 90), (40, 100)])
def test_multi_scale_flip_matches_the_authors_procedure(shape, processor):
    image = scene(*shape)
    augmentation = TestTimeAugmentation((32, 48, 64, 80), 128, flip=True)  # the cap applies to the wide image
    model = PixelModel(seed=1).eval()
    expected = authors_tta_scores(model, processor, image, augmentation)
    scores = semantic_scores_tta(model, processor, image, augmentation)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(scores.argmax(0), semantic_segmentation_tta(model, processor, image, augmentation)[0])
    # the test can fail: no flip, or one size fewer, gives other scores
    assert (
        semantic_scores_tta(model, processor, image, TestTimeAugmentation((32, 48, 64, 80), 128, flip=False))
        - expected
    ).abs().max() > 1e-3
    assert (
        semantic_scores_tta(model, processor, image, TestTimeAugmentation((32, 48, 64), 128)) - expected
    ).abs().max() > 1e-3


def test_flip_averaging_a_mirror_symmetric_model_changes_nothing(processor):
    image = scene(48, 64)  # every size below keeps the width a multiple of 32: no horizontal padding
    sizes = (48, 72, 96)

    def flip_change(model) -> float:
        with_flip = semantic_scores_tta(model, processor, image, TestTimeAugmentation(sizes, 256, flip=True))
        return float(
            (with_flip - semantic_scores_tta(model, processor, image, TestTimeAugmentation(sizes, 256, flip=False)))
            .abs()
            .max()
        )

    maskformer = tiny_model(num_labels=4).eval()
    assert flip_change(MirrorSymmetric(maskformer).eval()) < 1e-6
    assert flip_change(maskformer) > 1e-5  # the test can fail: the same model, not symmetrised, is changed
    # symmetric without the wrapper: a 1x1 mixing of 4x4 averages (the pooling cells mirror onto each other)
    assert flip_change(PixelModel().eval()) < 1e-6


# ----------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------
def live_tensor_bytes(excluded: set[int]) -> int:
    """Bytes of the distinct storages of all tensors alive as Python objects, except `excluded` storages."""
    seen, total = set(excluded), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance() on some deprecated torch objects warns
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for tensor in tensors:
        if type(tensor) not in (torch.Tensor, nn.Parameter) or tensor.device.type != "cpu":
            continue  # e.g. fake or meta tensors other tests' tracing left behind: no memory of their own
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


class MemoryProbe(nn.Module):
    """Records the tensor memory alive outside the model, beyond what was alive when the probe was made, at the second
    and the last forward pass (when the score buffer exists, and when a stacking implementation would hold the most);
    `leak` keeps every output alive, to show that the probe sees what is kept."""

    def __init__(self, model: nn.Module, num_calls: int, leak: bool = False):
        super().__init__()
        self.model, self.num_calls, self.leak, self.kept, self.samples, self.calls = (
            model,
            num_calls,
            leak,
            [],
            [],
            0,
        )
        self.own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        # NOTE: what other tests left alive (caches, fixtures) is not this call's: samples count from here
        self.baseline = live_tensor_bytes(self.own)

    def forward(self, pixel_values, pixel_mask=None):
        self.calls += 1
        if self.calls in (2, self.num_calls):
            self.samples.append(live_tensor_bytes(self.own) - self.baseline)
        outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        if self.leak:
            self.kept.append({key: value.clone() for key, value in outputs.items()})
        return outputs


def test_memory_stays_flat_as_the_number_of_sizes_grows(processor):
    image = scene(96, 128)
    target = (
        384,
        512,
    )  # a large output: its (K, H_t, W_t) score buffer is what stacking the views would multiply
    peaks = {}
    for count in (2, 6):
        probe = MemoryProbe(PixelModel(num_labels=8).eval(), count)
        semantic_scores_tta(probe, processor, image, TestTimeAugmentation((64,) * count, 256), target_size=target)
        peaks[count] = max(probe.samples)
    buffer = 8 * target[0] * target[1] * 4
    assert buffer <= peaks[2] < 2 * buffer, peaks  # one buffer alive from the second size on
    assert peaks[6] <= peaks[2] + 64 * 1024, peaks
    leaky = MemoryProbe(PixelModel(num_labels=8).eval(), 6, leak=True)
    semantic_scores_tta(leaky, processor, image, TestTimeAugmentation((64,) * 6, 256), target_size=target)
    assert max(leaky.samples) > peaks[6] + 100 * 1024  # the probe sees outputs kept alive


# ----------------------------------------------------------------------------------------------------------
# Hooks: evaluator, evaluation script, pipeline
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_model_folder(tmp_path_factory):
    labels = SyntheticShapes("train", 1).id2label
    folder = tmp_path_factory.mktemp("tta") / "model"
    tiny_model(num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()}).save_pretrained(
        folder
    )
    MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256}).save_pretrained(folder)
    return folder


def test_evaluator_with_one_size_and_no_flip_gives_the_plain_results(synthetic_model_folder):
    from modeling_maskformer.evaluation import load_model_folder

    model, processor = load_model_folder(str(synthetic_model_folder))
    dataset = build_dataset(
        "synthetic", "validation", num_images=3, image_size=64, config=SyntheticShapesConfig(thing_colours="by_class")
    )
    plain = evaluate_model(model, processor, dataset, show_progress=False)
    single = TestTimeAugmentation((64,), 256, flip=False)
    assert evaluate_model(model, processor, dataset, show_progress=False, tta=single) == plain
    ms = evaluate_model(model, processor, dataset, show_progress=False, tta=TestTimeAugmentation((48, 64, 96), 256))
    assert ms["panoptic"] == plain["panoptic"]  # TTA changes the semantic maps only


def test_evaluate_script_tta(synthetic_model_folder, tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "evaluate_maskformer.py"))["main"]
    common = [
        "--model",
        str(synthetic_model_folder),
        "--dataset",
        "synthetic",
        "--num_images",
        "2",
        "--image_size",
        "64",
    ]
    results = main([*common, "--tta", "--output_json", str(tmp_path / "out.json")])
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["test_time_augmentation"] == {
        "min_sizes": [32, 48, 64, 80, 96, 112],
        "max_size": 448,
        "flip": True,
    }
    assert written["semantic"]["mean_iou"] == results["semantic"]["mean_iou"]
    assert "test-time augmentation" in capsys.readouterr().out
    custom = main([*common, "--tta", "--tta_sizes", "64", "--tta_max_size", "256", "--tta_no_flip"])
    assert custom["semantic"] == main(common)["semantic"]
    with pytest.raises(ValueError, match="comma-separated ints"):
        main([*common, "--tta", "--tta_sizes", "64;96"])
    with pytest.raises(SystemExit):
        main([*common, "--tta_sizes", "64"])  # needs --tta


def test_pipeline_tta(processor):
    from transformers import pipeline

    from modeling_maskformer.inference.pipeline import MaskFormerSegmentationPipeline

    model, image = tiny_model(num_labels=4).eval(), scene(70, 90)

    def make(**kwargs):
        return pipeline(
            "image-segmentation",
            model=model,
            image_processor=processor,
            pipeline_class=MaskFormerSegmentationPipeline,
            **kwargs,
        )

    plain = make()(image, subtask="semantic")
    single = make(tta=TestTimeAugmentation((64,), 256, flip=False))(image, subtask="semantic")
    # Both equal the argmax of the single view's scores wherever those are not tied.
    scores = semantic_scores_tta(model, processor, image, TestTimeAugmentation((64,), 256, flip=False))
    label_ids = {name: i for i, name in model.config.id2label.items()}
    for name, segments in (("plain", plain), ("tta", single)):
        class_map = torch.full(scores.shape[1:], -1, dtype=torch.int64)
        for segment in segments:
            class_map[torch.from_numpy(np.array(segment["mask"]) > 0)] = label_ids[segment["label"]]
        exact.check_argmax(class_map, scores, name)
    default = make(tta=True)
    assert default.tta == TestTimeAugmentation.for_processor(processor)
    segments = default(image, subtask="semantic")
    assert segments and all(s["mask"].size == (90, 70) for s in segments)
    with pytest.raises(ValueError, match="subtask='semantic' only"):
        default(image, subtask="panoptic")


@pytest.mark.slow  # trains the demo preset for a few minutes
def test_tta_does_not_lower_miou_of_a_trained_demo_model(tmp_path):
    """The paper's multi-scale + flip gain, on a from-scratch demo model and the synthetic validation split."""
    from modeling_maskformer.evaluation import load_model_folder
    from modeling_maskformer.training import train

    train(
        [
            "--dataset",
            "synthetic",
            "--synthetic_thing_colours",
            "by_class",
            "--model_preset",
            "demo",
            "--num_train_images",
            "400",
            "--num_eval_images",
            "4",
            "--image_size",
            "128",
            "--crop_size",
            "128",
            "--per_device_train_batch_size",
            "8",
            "--max_train_steps",
            "400",
            "--eval_steps",
            "10000",
            "--output_dir",
            str(tmp_path / "demo"),
        ]
    )
    model, processor = load_model_folder(str(tmp_path / "demo"))
    dataset = build_dataset(
        "synthetic",
        "validation",
        num_images=40,
        image_size=128,
        config=SyntheticShapesConfig(thing_colours="by_class"),
    )
    plain = evaluate_model(model, processor, dataset, show_progress=False)["semantic"]["mean_iou"]
    tta = TestTimeAugmentation.for_processor(processor)
    augmented = evaluate_model(model, processor, dataset, show_progress=False, tta=tta)["semantic"]["mean_iou"]
    assert plain > 0.3, plain  # the model learned something: the comparison means something
    assert augmented >= plain, (plain, augmented)
