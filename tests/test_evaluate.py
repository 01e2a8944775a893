"""scripts/evaluate_maskformer.py end to end: our folder and a transformers MaskFormer folder, JSON and table output;
evaluation results that do not depend on the batch size on mixed-size data."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_maskformer.data import SegmentationDataset, build_dataset

from builders import tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_maskformer.py"


@pytest.fixture(scope="module")
def synthetic_labels():
    from modeling_maskformer.data import SyntheticShapes

    return SyntheticShapes("train", 1).id2label


def evaluate_cli(model_dir, output_json, *extra):
    main = runpy.run_path(str(SCRIPT))["main"]  # the script's own main, without running it as __main__
    return main(
        [
            "--model",
            str(model_dir),
            "--dataset",
            "synthetic",
            "--num_images",
            "3",
            "--image_size",
            "64",
            "--batch_size",
            "2",
            "--output_json",
            str(output_json),
            *extra,
        ]
    )


def test_evaluate_our_folder_reports_every_metric(tmp_path, synthetic_labels, capsys):
    from modeling_maskformer import MaskFormerImageProcessor

    model = tiny_model(num_labels=9, id2label=synthetic_labels, label2id={v: k for k, v in synthetic_labels.items()})
    model.save_pretrained(tmp_path / "model")
    MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256}).save_pretrained(tmp_path / "model")
    results = evaluate_cli(tmp_path / "model", tmp_path / "out.json")
    written = json.loads((tmp_path / "out.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert set(written) == {"semantic", "panoptic", "instance"}
    assert 0 <= written["semantic"]["mean_iou"] <= 1 and set(written["semantic"]["per_class_iou"]) == set(
        synthetic_labels.values()
    )
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        assert key in written["panoptic"]
    assert "ap" in written["instance"]
    printed = capsys.readouterr().out
    assert "mean_iou" in printed or "mIoU" in printed


def test_evaluate_a_transformers_folder(tmp_path, synthetic_labels):
    from transformers import MaskFormerConfig as HFConfig
    from transformers import MaskFormerForInstanceSegmentation as HFModel
    from transformers import MaskFormerImageProcessor as HFProcessor
    from transformers import ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = HFConfig(
        backbone_config=backbone,
        fpn_feature_size=32,
        mask_feature_size=32,
        id2label=synthetic_labels,
        label2id={v: k for k, v in synthetic_labels.items()},
    )
    config.decoder_config.decoder_layers = 1
    config.decoder_config.num_queries = 5
    HFModel(config).save_pretrained(tmp_path / "hf")
    HFProcessor(size={"shortest_edge": 64, "longest_edge": 256}, ignore_index=255).save_pretrained(tmp_path / "hf")
    results = evaluate_cli(tmp_path / "hf", tmp_path / "out.json")
    assert "mean_iou" in results["semantic"]


def test_evaluate_refuses_a_model_for_other_classes(tmp_path):
    from modeling_maskformer import MaskFormerImageProcessor

    tiny_model().save_pretrained(tmp_path / "model")  # 3 classes; the synthetic set has 9
    MaskFormerImageProcessor().save_pretrained(tmp_path / "model")
    with pytest.raises(
        ValueError,
        match=r"dataset synthetic \(validation\) has 9 classes \(circle, square, .*\) but "
        r".*model predicts 3 \(LABEL_0, LABEL_1, LABEL_2\): the class counts differ; "
        r"pass --ignore_class_mismatch",
    ):
        evaluate_cli(tmp_path / "model", tmp_path / "out.json")
    # Asked for: scored over the model's classes and the dataset's others (which it can never predict).
    results = evaluate_cli(tmp_path / "model", tmp_path / "out.json", "--ignore_class_mismatch")
    assert list(results["semantic"]["per_class_iou"])[:4] == ["LABEL_0", "LABEL_1", "LABEL_2", "star"]


# ----------------------------------------------------------------------------------------------------------
# Batch size: the model does not read pixel_mask, so evaluation must not pad one image to another's size
# ----------------------------------------------------------------------------------------------------------

MIXED_SIZES = [(96, 96), (64, 96), (96, 72), (80, 80), (96, 96)]  # two of one size, to share a batch


def mixed_size_ade_folder(root: Path) -> Path:
    """An ADE-style folder (labels as they are, 255 ignored) of synthetic scenes cut to different sizes."""
    from PIL import Image

    from modeling_maskformer.data import SyntheticShapes

    shapes = SyntheticShapes("validation", len(MIXED_SIZES), 96)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i, (height, width) in enumerate(MIXED_SIZES):
        item = shapes[i]
        Image.fromarray(np.array(item["image"])[:height, :width]).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(np.array(item["semantic"])[:height, :width]).save(root / "annotations" / f"{i:02d}.png")
    (root / "id2label.json").write_text(json.dumps(shapes.id2label))
    return root


def padding_changes_predictions(model, processor, items) -> bool:
    """Whether this model predicts images differently inside a padded mixed-size batch, at more pixels than float
    rounding could flip (so that the tests below can fail)."""
    changed = 0
    with torch.no_grad():
        together = model(**processor([item["image"] for item in items], return_tensors="pt"))
        sizes = [item["semantic"].shape for item in items]
        batched = processor.post_process_semantic_segmentation(together, target_sizes=sizes)
        for item, prediction in zip(items, batched):
            alone = model(**processor([item["image"]], return_tensors="pt"))
            alone_map = processor.post_process_semantic_segmentation(alone, target_sizes=[item["semantic"].shape])[0]
            changed += int((alone_map != prediction).sum())
    return changed >= 500


def assert_same_results(got, expected, path: str = "results") -> None:
    """The same metrics. NOTE: another batch size is another input to the kernels, so the logits may differ by float
    rounding (~1e-7) and a pixel whose two best classes are that close may flip; on these small images one
    pixel moves a metric by under 1e-3, while padding one image to another's size changes thousands of pixels."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), path
        for key in expected:
            assert_same_results(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_results(a, b, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert got == pytest.approx(expected, abs=1e-3, nan_ok=True), path
    else:
        assert got == expected, path


def tiny_folder_model(folder: Path, id2label: dict[int, str]):
    from modeling_maskformer import MaskFormerImageProcessor

    model = tiny_model(num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    processor = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model.eval(), processor


def test_evaluate_script_gives_the_same_metrics_at_any_batch_size(tmp_path, synthetic_labels):
    folder = mixed_size_ade_folder(tmp_path / "ade")
    model, processor = tiny_folder_model(tmp_path / "model", synthetic_labels)
    dataset = build_dataset(str(folder), "all", reduce_labels=False)  # a flat folder: "all" is every item
    assert padding_changes_predictions(model, processor, [dataset[i] for i in range(len(dataset))])
    main = runpy.run_path(str(SCRIPT))["main"]
    results = [
        main(
            [
                "--model",
                str(tmp_path / "model"),
                "--dataset",
                str(folder),
                "--label_convention",
                "as_is",
                "--split",
                "all",
                "--batch_size",
                str(batch_size),
            ]
        )
        for batch_size in (1, 3, 5)
    ]
    assert results[0]["semantic"]["mean_iou"] is not None
    assert_same_results(results[1], results[0])
    assert_same_results(results[2], results[0])


class CroppedPanoptic(SegmentationDataset):
    """Synthetic panoptic items cut to the sizes of MIXED_SIZES (segments left without pixels dropped)."""

    task = "panoptic"

    def __init__(self):
        self.base = build_dataset("synthetic", "validation", num_images=len(MIXED_SIZES), image_size=96)
        super().__init__(id2label=self.base.id2label, thing_ids=self.base.thing_ids)

    def __len__(self):
        return len(self.base)

    def _load(self, index):
        item = dict(self.base[index])
        height, width = MIXED_SIZES[index]
        item["image"] = item["image"].crop((0, 0, width, height))
        item["semantic"] = item["semantic"][:height, :width]
        item["panoptic_ids"] = item["panoptic_ids"][:height, :width]
        present = set(np.unique(item["panoptic_ids"]).tolist())
        item["segments_info"] = [s for s in item["segments_info"] if s["id"] in present]
        return item


def test_panoptic_evaluation_does_not_depend_on_batch_size(synthetic_labels):
    from modeling_maskformer import MaskFormerImageProcessor
    from modeling_maskformer.evaluation import evaluate_model

    dataset = CroppedPanoptic()
    model = tiny_model(seed=3, num_labels=9, id2label=synthetic_labels).eval()
    processor = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    assert padding_changes_predictions(model, processor, [dataset[i] for i in range(len(dataset))])
    results = [evaluate_model(model, processor, dataset, batch_size=b, show_progress=False) for b in (1, 2, 5)]
    assert set(results[0]) == {"semantic", "panoptic", "instance"}
    assert_same_results(results[1], results[0])
    assert_same_results(results[2], results[0])
