"""`transformers.Trainer` with the package: `MaskFormerCollator` batches, `SegmentationMetrics` as a batch-wise
`compute_metrics` (checked on exact predictions and against the `evaluate` modules), and a 3-step fine-tune
that evaluates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import EvalPrediction, TrainingArguments

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.data import Augmentation, MaskFormerCollator, TrainingSet, build_dataset
from modeling_maskformer.evaluation import SegmentationMetrics, SegmentationTrainer, load_metric

from builders import tiny_model

ID2LABEL = {0: "cat", 1: "dog", 2: "sky", 3: "grass"}
THINGS = [0, 1]


def hand_item(height: int, width: int, boxes: list[tuple[int, int, int, int, int]], seed: int = 0) -> dict:
    """A panoptic dataset item: segments are (top, left, bottom, right, class) boxes on a 4-px grid (ids 1..);
    pixels outside every box are ignored (255 / VOID)."""
    panoptic = np.zeros((height, width), dtype=np.int32)
    semantic = np.full((height, width), 255, dtype=np.uint8)
    for segment_id, (top, left, bottom, right, label) in enumerate(boxes, start=1):
        panoptic[top:bottom, left:right] = segment_id
        semantic[top:bottom, left:right] = label
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    info = [{"id": i, "category_id": box[4], "iscrowd": 0} for i, box in enumerate(boxes, start=1)]
    return {
        "image": Image.fromarray(pixels),
        "semantic": semantic,
        "panoptic_ids": panoptic,
        "segments_info": info,
        "image_id": f"hand-{height}x{width}",
    }


ITEMS = [
    hand_item(64, 64, [(0, 0, 32, 64, 2), (32, 0, 64, 40, 3), (40, 44, 60, 60, 0)]),
    hand_item(48, 64, [(0, 0, 48, 24, 3), (8, 28, 24, 44, 1), (28, 28, 44, 60, 0)], seed=1),  # padded to 64x64
]


def exact_outputs(batch, num_queries: int = 6, num_labels: int = 4) -> tuple:
    """Trainer-style predictions that reproduce the targets: one confident query per segment, masks at 1/4
    resolution (segments lie on the 4-px grid, so bilinear upsampling puts the sign change on the border)."""
    segment_map, segment_classes = batch["segment_map"], batch["segment_classes"]
    size, (height, width) = len(segment_map), segment_map.shape[-2:]
    class_logits = torch.full((size, num_queries, num_labels + 1), -10.0)
    class_logits[..., -1] = 10.0  # "no object"
    mask_logits = torch.full((size, num_queries, height // 4, width // 4), -20.0)
    for b in range(size):
        for q, label in enumerate(segment_classes[b].tolist()):
            if label >= 0:
                class_logits[b, q, -1], class_logits[b, q, label] = -10.0, 10.0
                mask_logits[b, q][segment_map[b, ::4, ::4] == q + 1] = 20.0
    loss_dict = {"loss_cross_entropy": torch.tensor(0.0)}
    return loss_dict, class_logits, mask_logits, batch["pixel_mask"]


@pytest.fixture(scope="module")
def processor():
    return MaskFormerImageProcessor(do_resize=False)


def test_collator_batches_dataset_items_and_training_items(processor):
    batch = MaskFormerCollator(processor, return_segment_maps=True)(ITEMS)
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["pixel_mask"][1, 48:].sum() == 0
    assert [m.shape for m in batch["mask_labels"]] == [(3, 64, 64), (3, 64, 64)]
    assert [c.tolist() for c in batch["class_labels"]] == [[2, 3, 0], [3, 1, 0]]
    assert batch["segment_classes"].tolist() == [[2, 3, 0], [3, 1, 0]]
    for b in range(2):  # segment i of segment_map is mask_labels[b][i - 1]; 0 outside every mask
        for i, mask in enumerate(batch["mask_labels"][b], start=1):
            assert torch.equal(batch["segment_map"][b] == i, mask.bool())
        assert torch.equal(batch["segment_map"][b] == 0, batch["mask_labels"][b].sum(0) == 0)

    training = [(torch.zeros(3, 40, 56, dtype=torch.uint8), torch.ones(40, 56, dtype=torch.long), {1: 2})] * 2
    plain = MaskFormerCollator(processor)(training)
    assert set(plain) == {"pixel_values", "pixel_mask", "mask_labels", "class_labels"}
    assert plain["pixel_values"].shape == (2, 3, 64, 64) and plain["class_labels"][0].tolist() == [2]

    with pytest.raises(TypeError, match="not a mix"):
        MaskFormerCollator(processor)([ITEMS[0], training[0]])
    with pytest.raises(ValueError, match="do_reduce_labels=True"):
        MaskFormerCollator(MaskFormerImageProcessor(do_reduce_labels=True))(ITEMS)


def test_segmentation_metrics_score_exact_predictions_as_perfect(processor):
    batch = MaskFormerCollator(processor, return_segment_maps=True)(ITEMS)
    metrics = SegmentationMetrics(processor, ID2LABEL, thing_ids=THINGS)
    labels = tuple(batch[name] for name in SegmentationMetrics.label_names)
    assert metrics(EvalPrediction(predictions=exact_outputs(batch), label_ids=labels), compute_result=False) is None
    results = metrics(EvalPrediction(predictions=exact_outputs(batch), label_ids=labels), compute_result=True)
    assert results == pytest.approx(
        {
            "mean_iou": 1.0,
            "pixel_accuracy": 1.0,
            "pq": 1.0,
            "sq": 1.0,
            "rq": 1.0,
            "pq_things": 1.0,
            "pq_stuff": 1.0,
            "mask_ap": 1.0,
            "mask_ap50": 1.0,
        }
    )
    # a new evaluation starts afresh: one wrong class now costs exactly that class's pixels
    outputs = exact_outputs(batch)
    outputs[1][1, 0, 3], outputs[1][1, 0, 2] = -10.0, 10.0  # image 2: the grass segment called sky
    results = metrics(EvalPrediction(predictions=outputs, label_ids=labels), compute_result=True)
    assert results["pixel_accuracy"] == pytest.approx(
        1 - 48 * 24 / (32 * 64 + 32 * 40 + 20 * 16 + 48 * 24 + 16 * 16 + 16 * 32)
    )
    assert results["pq_things"] == 1.0 and results["pq_stuff"] < 1.0


def test_segmentation_metrics_agree_with_the_evaluate_modules(processor):
    """Noisy predictions: SegmentationMetrics' numbers against the shipped `evaluate` modules fed with the
    processor's post-processing and the original targets."""
    batch = MaskFormerCollator(processor, return_segment_maps=True)(ITEMS)
    generator = torch.Generator().manual_seed(0)
    loss_dict, class_logits, mask_logits, pixel_mask = exact_outputs(batch)
    class_logits = class_logits + 12 * torch.randn(class_logits.shape, generator=generator)
    mask_logits = mask_logits + 25 * torch.randn(mask_logits.shape, generator=generator)
    metrics = SegmentationMetrics(processor, ID2LABEL, thing_ids=THINGS)
    labels = tuple(batch[name] for name in SegmentationMetrics.label_names)
    predictions = (loss_dict, class_logits, mask_logits, pixel_mask)
    got = metrics(EvalPrediction(predictions=predictions, label_ids=labels), compute_result=True)

    outputs = {
        "class_queries_logits": class_logits,
        "masks_queries_logits": mask_logits,
        "pixel_mask": pixel_mask,
    }
    sizes = [item["semantic"].shape for item in ITEMS]
    semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    panoptic = processor.post_process_panoptic_segmentation(
        outputs, threshold=0.5, label_ids_to_fuse={2, 3}, target_sizes=sizes
    )
    instances = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, target_sizes=sizes, return_binary_maps=True
    )
    mean_iou = load_metric("mean_iou").compute(
        predictions=[p.numpy() for p in semantic],
        references=[i["semantic"] for i in ITEMS],
        num_labels=4,
        ignore_index=255,
    )
    categories = [{"id": c, "isthing": int(c in THINGS)} for c in ID2LABEL]
    pq = load_metric("panoptic_quality").compute(
        predictions=panoptic,
        references=[{"segmentation": i["panoptic_ids"], "segments_info": i["segments_info"]} for i in ITEMS],
        categories=categories,
    )
    things = [[s["label_id"] in THINGS for s in p["segments_info"]] for p in instances]
    ap = load_metric("mask_ap").compute(
        predictions=[
            {
                "masks": p["segmentation"][keep],
                "labels": [s["label_id"] for s, k in zip(p["segments_info"], keep) if k],
                "scores": [s["score"] for s, k in zip(p["segments_info"], keep) if k],
            }
            for p, keep in zip(instances, things)
        ],
        references=[
            {
                "masks": np.stack(
                    [i["panoptic_ids"] == s["id"] for s in i["segments_info"] if s["category_id"] in THINGS]
                ),
                "labels": [s["category_id"] for s in i["segments_info"] if s["category_id"] in THINGS],
            }
            for i in ITEMS
        ],
    )
    expected = {
        "mean_iou": mean_iou["mean_iou"],
        "pixel_accuracy": mean_iou["overall_accuracy"],
        "pq": pq["pq"],
        "sq": pq["sq"],
        "rq": pq["rq"],
        "pq_things": pq["pq_things"],
        "pq_stuff": pq["pq_stuff"],
        "mask_ap": ap["ap"],
        "mask_ap50": ap["ap50"],
    }
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0 < got["mean_iou"] < 1 and 0 < got["pq"] < 1  # the noise made a case that can fail


def test_segmentation_metrics_explain_a_wrong_setup(processor):
    batch = MaskFormerCollator(processor)(ITEMS)
    metrics = SegmentationMetrics(processor, ID2LABEL)
    prediction = EvalPrediction(
        predictions=exact_outputs(MaskFormerCollator(processor, True)(ITEMS)),
        label_ids=(batch["mask_labels"], batch["class_labels"]),
    )
    with pytest.raises(ValueError, match="batch_eval_metrics=True"):
        metrics(prediction)
    with pytest.raises(ValueError, match="label_names=SegmentationMetrics.label_names"):
        metrics(prediction, compute_result=True)


def test_trainer_fine_tunes_and_evaluates(tmp_path):
    train = build_dataset("synthetic", "train", num_images=8, image_size=64)
    validation = build_dataset("synthetic", "validation", num_images=5, image_size=64)
    model = tiny_model(
        num_labels=train.num_labels, id2label=train.id2label, label2id={v: k for k, v in train.id2label.items()}
    )
    before = [p.detach().clone() for p in model.parameters()]
    processor = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    arguments = dict(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=1e-3,
        batch_eval_metrics=True,
        label_names=SegmentationMetrics.label_names,
        remove_unused_columns=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = SegmentationTrainer(
        model=model,
        args=TrainingArguments(**arguments),
        data_collator=MaskFormerCollator(processor, return_segment_maps=True),
        train_dataset=TrainingSet(train, Augmentation(64, 1.0, 1.25, 1.0), seed=0),
        eval_dataset=validation,
        compute_metrics=SegmentationMetrics(processor, train.id2label, thing_ids=train.thing_ids),
    )
    assert trainer.train().global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    metrics = trainer.evaluate()
    keys = {
        "eval_loss",
        "eval_mean_iou",
        "eval_pixel_accuracy",
        "eval_pq",
        "eval_sq",
        "eval_rq",
        "eval_pq_things",
        "eval_pq_stuff",
        "eval_mask_ap",
        "eval_mask_ap50",
    }
    assert keys <= set(metrics) and all(math.isfinite(metrics[k]) for k in keys)
    # 5 images in batches of 2: the last batch is a remainder, which Trainer slices; and one image per batch
    # gives the same numbers (synthetic images share one size, so no padding differs)
    trainer.args.per_device_eval_batch_size = 1
    single = trainer.evaluate()
    assert {k: single[k] for k in keys - {"eval_loss"}} == pytest.approx(
        {k: metrics[k] for k in keys - {"eval_loss"}}, abs=1e-9
    )
