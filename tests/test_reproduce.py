"""scripts/reproduce.py and the model zoo: end to end on a local folder in the scene_parse_150 (ADEChallengeData2016)
layout with a transformers-format checkpoint of a tiny model, the measured mIoU checked against a count done here
with numpy, the model card's model-index entries, and one-line errors for what is missing."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_maskformer.data import SyntheticShapes
from modeling_maskformer.paper.zoo import ADE20K_512_TTA, MODEL_ZOO, get_entry, markdown_table

from builders import save_transformers_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.py"
SIZES = [(96, 96), (80, 96), (96, 72)]
PREDICTED = 7  # the stand-in checkpoint predicts this class everywhere


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """ADEChallengeData2016/{images,annotations}/validation (ADE convention: 0 = other, k = class k - 1) of synthetic
    scenes, and a transformers MaskFormer (150 classes, tiny ResNet) saved with save_pretrained that predicts
    class PREDICTED everywhere."""
    root = tmp_path_factory.mktemp("reproduce")
    ade = root / "ADEChallengeData2016"
    for sub in ("images/validation", "annotations/validation"):
        (ade / sub).mkdir(parents=True)
    shapes = SyntheticShapes("validation", len(SIZES), 96)
    for i, (height, width) in enumerate(SIZES):
        item = shapes[i]
        semantic = np.array(item["semantic"])[:height, :width].astype(np.int64)
        Image.fromarray(np.array(item["image"])[:height, :width]).save(
            ade / "images/validation" / f"ADE_val_{i:08d}.jpg"
        )
        ade_values = np.where(semantic == 255, 0, semantic + 1).astype(np.uint8)
        Image.fromarray(ade_values).save(ade / "annotations/validation" / f"ADE_val_{i:08d}.png")

    save_transformers_checkpoint(root / "checkpoint", num_labels=150, predicted=PREDICTED)
    return root


def expected_miou(folder: Path, count: int) -> float:
    """mIoU x 100 of predicting PREDICTED everywhere on the first `count` images, counted here: classes that occur in
    the labels or the prediction, pixels labelled 0 ("other") ignored."""
    intersection, union = np.zeros(150), np.zeros(150)
    for path in sorted((folder / "annotations/validation").iterdir())[:count]:
        labels = np.array(Image.open(path)).astype(np.int64) - 1  # ADE: k -> class k - 1, 0 -> -1 (ignored)
        valid = labels >= 0
        for k in range(150):
            truth, predicted = (labels == k) & valid, valid & (k == PREDICTED)
            intersection[k] += (truth & predicted).sum()
            union[k] += (truth | predicted).sum()
    return 100 * float(np.mean(intersection[union > 0] / union[union > 0]))


def run(*args: str) -> dict:
    main = runpy.run_path(str(SCRIPT))["main"]
    return main(list(args))


def test_reproduce_end_to_end_on_a_local_ade_folder(standin, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from modeling_maskformer import MaskFormerForInstanceSegmentation

    out = tmp_path / "out"
    report = run(
        "resnet50-ade",
        "--model",
        str(standin / "checkpoint"),
        "--dataset",
        str(standin / "ADEChallengeData2016"),
        "--output_dir",
        str(out),
        "--limit",
        "2",
        "--device",
        "cpu",
        "--model_card",
    )
    printed = capsys.readouterr().out
    assert "resnet50-ade: mIoU (single-scale) paper 44.5 vs measured" in printed and "on 2/2000 images" in printed
    measured = expected_miou(standin / "ADEChallengeData2016", 2)
    assert measured > 1  # the stand-in's prediction overlaps the labels: the comparison below can fail
    assert report["measured"]["value"] == pytest.approx(measured, abs=0.01)
    assert report["difference"] == pytest.approx(report["measured"]["value"] - 44.5, abs=1e-9)
    assert report["settings"]["test_size"] == 512 and report["settings"]["test_time_augmentation"] is None
    assert report["measured"]["complete"] is False
    assert json.loads((out / "reproduction.json").read_text()) == json.loads(json.dumps(report))

    card = ModelCard.load(out / "README.md")
    metrics = card.data.eval_results
    assert {m.metric_config: m.metric_value for m in metrics} == {
        "measured": report["measured"]["value"],
        "paper": 44.5,
    }
    assert all(m.dataset_type == "scene_parse_150" and m.dataset_split == "validation" for m in metrics)
    assert "measured here on 2 images" in next(m.metric_name for m in metrics if m.metric_config == "measured")
    assert "MODEL_ZOO.md" in next(m.metric_name for m in metrics if m.metric_config == "paper")
    model = MaskFormerForInstanceSegmentation.from_pretrained(out)  # the converted folder is ours
    assert model.config.num_labels == 150


@pytest.mark.slow  # 12 views of up to 896 px, 150 classes, on the CPU
def test_reproduce_with_tta(standin, tmp_path):
    report = run(
        "resnet50-ade",
        "--tta",
        "--model",
        str(standin / "checkpoint"),
        "--dataset",
        str(standin / "ADEChallengeData2016"),
        "--output_dir",
        str(tmp_path),
        "--limit",
        "1",
        "--device",
        "cpu",
    )
    assert report["paper"] == {
        "value": 46.7,
        "setting": "multi-scale + flip",
        "source": report["paper"]["source"],
    }
    assert report["settings"]["test_time_augmentation"]["min_sizes"] == list(ADE20K_512_TTA.min_sizes)
    assert report["measured"]["value"] == pytest.approx(expected_miou(standin / "ADEChallengeData2016", 1), abs=0.01)


def one_line_error(monkeypatch, capsys, *args: str) -> str:
    """The script's stderr for a command line that must fail with status 2 and a single line."""
    monkeypatch.setattr(sys, "argv", ["reproduce.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("reproduce.py: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_what_is_missing_is_said_in_one_line(standin, tmp_path, monkeypatch, capsys):
    checkpoint, folder, out = (
        str(standin / "checkpoint"),
        str(standin / "ADEChallengeData2016"),
        str(tmp_path),
    )
    # no Hub access (the suite runs with HF_HUB_OFFLINE=1)
    line = one_line_error(
        monkeypatch, capsys, "resnet50-ade", "--limit", "1", "--dataset", folder, "--output_dir", out
    )
    assert "facebook/maskformer-resnet50-ade" in line and "could not be downloaded" in line
    # data not prepared (and no --download), a dead Hub name, data that needs a login, a folder that does not exist
    monkeypatch.setenv("MASKFORMER_DATA", str(tmp_path / "no-data"))
    line = one_line_error(
        monkeypatch, capsys, "resnet50-ade", "--limit", "1", "--model", checkpoint, "--output_dir", out
    )
    assert "needs the ADE20K-150 validation data, not prepared in" in line and "add --download" in line
    assert f"python scripts/prepare_data.py ade20k --root {tmp_path / 'no-data'}" in line
    line = one_line_error(monkeypatch, capsys, "swin-base-coco", "--limit", "1")
    assert "needs the COCO panoptic validation data" in line and "prepare_data.py coco_panoptic --splits val" in line
    line = one_line_error(
        monkeypatch,
        capsys,
        "resnet50-ade",
        "--limit",
        "1",
        "--model",
        checkpoint,
        "--dataset",
        "scene_parse_150",
        "--output_dir",
        out,
    )
    assert "dataset 'scene_parse_150' could not be loaded" in line and "prepare_data.py ade20k" in line
    line = one_line_error(monkeypatch, capsys, "resnet101-cityscapes", "--limit", "1", "--download")
    assert "needs a login" in line and "prepare_data.py cityscapes --archives" in line
    line = one_line_error(monkeypatch, capsys, "resnet50-coco-stuff", "--limit", "1")
    assert "prepare_data.py does not fetch: pass --dataset FOLDER" in line
    line = one_line_error(
        monkeypatch,
        capsys,
        "resnet50-ade",
        "--limit",
        "1",
        "--model",
        checkpoint,
        "--dataset",
        str(tmp_path / "missing"),
        "--output_dir",
        out,
    )
    assert "not found" in line
    # settings the row cannot reproduce
    assert "--tta is refused" in one_line_error(monkeypatch, capsys, "resnet50-vistas", "--tta", "--limit", "1")
    assert "semantic rows" in one_line_error(monkeypatch, capsys, "swin-tiny-coco", "--tta", "--limit", "1")
    assert "unknown model-zoo row 'nope'" in one_line_error(monkeypatch, capsys, "nope")
    if not torch.cuda.is_available():
        line = one_line_error(
            monkeypatch, capsys, "swin-large-ade", "--tta", "--model", checkpoint, "--dataset", folder
        )
        assert "no GPU" in line and "2000 ADE20K-150 images (12 view(s) each)" in line and "--limit" in line


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------
def test_zoo_rows_are_consistent():
    assert len({entry.hub_id for entry in MODEL_ZOO}) == len(MODEL_ZOO) == 16
    for entry in MODEL_ZOO:
        assert get_entry(entry.hub_id) is get_entry(f"maskformer-{entry.name}") is get_entry(entry.name) is entry
        assert entry.max_test_size >= entry.test_size
        if entry.paper_multi_scale is not None:
            assert entry.paper_multi_scale > entry.paper_single_scale
        if entry.tta is not None:
            assert entry.task == "semantic" and entry.test_size in entry.tta.min_sizes and entry.tta.flip
        assert (entry.task == "panoptic") == (entry.threshold is not None) == (entry.metric == "PQ")
    headline = [
        get_entry("swin-large-ade").paper_multi_scale,
        get_entry("swin-large-coco").paper_single_scale,
    ]
    assert headline == [55.6, 52.7]  # the paper's abstract


def test_the_docs_hold_the_table_and_the_script_lists_it(capsys):
    assert markdown_table() in (ROOT / "docs" / "paper.md").read_text(), (
        "regenerate the table in docs/paper.md: python scripts/reproduce.py --list"
    )
    assert run("--list") is None
    assert capsys.readouterr().out.strip() == markdown_table()
