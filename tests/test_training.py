"""Training script: few-step runs (in-process and through `accelerate launch`, 1 and 2 CPU processes),
resume determinism, atomic checkpoints, the recipe's parameter groups, CLI errors, the output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import ConvNextConfig

from modeling_maskformer.training import train

from builders import tiny_model

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_maskformer.py"
SYNTHETIC_LABELS = 9


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny model for the synthetic dataset's 9 classes, LayerNorm backbone (no BatchNorm, so the
    per-process batch split cannot change the numbers), no dropout."""
    from modeling_maskformer.data import SyntheticShapes

    folder = tmp_path_factory.mktemp("tiny")
    id2label = SyntheticShapes("train", 1).id2label
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"])
    model = tiny_model(backbone_config=backbone, num_labels=SYNTHETIC_LABELS, id2label=id2label,
                       label2id={v: k for k, v in id2label.items()}, dropout=0.0, attention_dropout=0.0)  # fmt: skip
    model.save_pretrained(folder)
    return folder


def train_args(folder: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset", "synthetic", "--num_train_images", "32", "--num_eval_images", "4", "--image_size", "64",
        "--model_name_or_path", str(folder), "--output_dir", str(output_dir), "--crop_size", "64",
        "--min_scale", "1.0", "--max_scale", "1.25", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--eval_steps", "1000", "--checkpointing_steps", "3", *extra,
    ]  # fmt: skip


def losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "training_history.json").read_text())
    return [entry["loss"] for entry in history if "eval" not in entry]


def test_few_steps_write_checkpoints_and_a_hub_ready_folder(tiny_folder, tmp_path):
    result = train(train_args(tiny_folder, tmp_path / "run", "--max_train_steps", "4", "--per_device_train_batch_size", "2"))
    out = tmp_path / "run"
    assert result["state"]["step"] == 4
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["checkpoint-3", "checkpoint-4"]
    assert "mean_iou" in result["metrics"] and "pq" in result["metrics"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "learning_rate" in card
    assert all(torch.isfinite(torch.tensor(losses(out))))


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_folder, tmp_path):
    common = ("--per_device_train_batch_size", "2", "--mask_loss_mode", "point")
    train(train_args(tiny_folder, tmp_path / "full", "--max_train_steps", "6", *common))
    train(train_args(tiny_folder, tmp_path / "cut", "--max_train_steps", "6", "--stop_at_step", "3", *common))
    # The interrupted run left a half-written checkpoint behind (a kill during a save): it must be ignored.
    (tmp_path / "cut" / "checkpoints" / "checkpoint-5.partial").mkdir()
    train(train_args(tiny_folder, tmp_path / "cut", "--max_train_steps", "6", "--resume_from_checkpoint", "latest", *common))
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert len(full) == len(resumed) == 6
    assert resumed == pytest.approx(full, rel=1e-6, abs=1e-7)


def test_parameter_groups_follow_the_recipe():
    from modeling_maskformer.training import RECIPES, parameter_groups

    model = tiny_model()
    recipe = RECIPES["resnet"]
    groups = parameter_groups(model, recipe.learning_rate, recipe.weight_decay, recipe.backbone_lr_multiplier)
    by_id = {id(p): g for g in groups for p in g["params"]}
    backbone_conv = model.model.backbone.body.embedder.embedder.convolution.weight
    assert by_id[id(backbone_conv)]["lr"] == pytest.approx(1e-5) and by_id[id(backbone_conv)]["weight_decay"] == 1e-4
    assert by_id[id(model.class_head.bias)]["weight_decay"] == 0.0 and by_id[id(model.class_head.bias)]["lr"] == 1e-4
    assert by_id[id(model.model.transformer_decoder.query_embed.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.model.transformer_decoder.layers[0].ffn_norm.weight)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_augmentation_is_deterministic_per_item_and_moves_masks_with_the_image():
    from modeling_maskformer.data import Augmentation, TrainingSet, build_dataset

    dataset = build_dataset("synthetic", "train", num_images=4, image_size=64)
    training_set = TrainingSet(dataset, Augmentation(48, 0.75, 1.5, 1.0), seed=0)
    image_a, map_a, mapping = training_set[1]
    image_b, map_b, _ = training_set[1]
    assert torch.equal(image_a, image_b) and torch.equal(map_a, map_b)
    assert image_a.shape[-2:] == map_a.shape == (48, 48)
    training_set.epoch = 1
    assert not torch.equal(training_set[1][0], image_a)
    assert set(map_a.unique().tolist()) <= set(mapping) | {255}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--crop_size", "16"], "crop_size must be at least 32"),
        (["--min_scale", "2", "--max_scale", "1"], "min_scale"),
        (["--push_to_hub"], "needs --hub_model_id"),
        (["--per_device_train_batch_size", "0"], "must be >= 1"),
    ],
)
def test_cli_errors(argv, message, capsys, tmp_path):
    from modeling_maskformer.training import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--output_dir", str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_resume_from_a_folder_that_is_not_a_checkpoint(tiny_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        train(train_args(tiny_folder, tmp_path / "x", "--max_train_steps", "1", "--resume_from_checkpoint", str(tmp_path)))


def launch(num_processes: int, folder: Path, output_dir: Path, per_device: int) -> subprocess.CompletedProcess:
    command = [
        # NOTE: `--cpu` makes accelerate start one process whatever --num_processes says; --multi_gpu starts
        # torchrun workers, and train.py asks for CPU itself when there is no GPU.
        sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if num_processes > 1 else ["--cpu"]),
        "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(TRAIN), *train_args(folder, output_dir, "--max_train_steps", "3", "--per_device_train_batch_size", str(per_device)),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_accelerate_launch_one_and_two_processes_give_the_same_losses(tiny_folder, tmp_path):
    launch(1, tiny_folder, tmp_path / "one", per_device=4)
    result = launch(2, tiny_folder, tmp_path / "two", per_device=2)
    assert "num_processes=2" in result.stdout + result.stderr  # really two processes
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-4)
