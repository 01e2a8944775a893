"""scripts/evaluate_maskformer.py end to end: our folder and a transformers MaskFormer folder, JSON and table output."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from builders import tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_maskformer.py"


@pytest.fixture(scope="module")
def synthetic_labels():
    from modeling_maskformer.data import SyntheticShapes

    return SyntheticShapes("train", 1).id2label


def evaluate_cli(model_dir, output_json, *extra):
    main = runpy.run_path(str(SCRIPT))["main"]  # the script's own main, without running it as __main__
    return main(["--model", str(model_dir), "--dataset", "synthetic", "--num_images", "3", "--image_size", "64",
                 "--batch_size", "2", "--output_json", str(output_json), *extra])  # fmt: skip


def test_evaluate_our_folder_reports_every_metric(tmp_path, synthetic_labels, capsys):
    from modeling_maskformer import MaskFormerImageProcessor

    model = tiny_model(num_labels=9, id2label=synthetic_labels, label2id={v: k for k, v in synthetic_labels.items()})
    model.save_pretrained(tmp_path / "model")
    MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 256}).save_pretrained(tmp_path / "model")
    results = evaluate_cli(tmp_path / "model", tmp_path / "out.json")
    written = json.loads((tmp_path / "out.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert set(written) == {"semantic", "panoptic", "instance"}
    assert 0 <= written["semantic"]["mean_iou"] <= 1 and set(written["semantic"]["per_class_iou"]) == set(synthetic_labels.values())
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

    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                            out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = HFConfig(backbone_config=backbone, fpn_feature_size=32, mask_feature_size=32, id2label=synthetic_labels,
                      label2id={v: k for k, v in synthetic_labels.items()})  # fmt: skip
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
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 9"):
        evaluate_cli(tmp_path / "model", tmp_path / "out.json")
