"""Training script: few-step runs (in-process and through `accelerate launch`, 1 and 2 CPU processes),
resume determinism, atomic checkpoints, the recipe's parameter groups, CLI errors, the output folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_maskformer.training import train

from builders import tiny_model
from script_runs import run_script
from tiny_training import losses, save_tiny_model, train_args

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_maskformer.py"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_few_steps_write_checkpoints_and_a_hub_ready_folder(tiny_folder, tmp_path):
    result = train(
        train_args(tiny_folder, tmp_path / "run", "--max_train_steps", "4", "--per_device_train_batch_size", "2")
    )
    out = tmp_path / "run"
    assert result["state"]["step"] == 4
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["checkpoint-3", "checkpoint-4"]
    assert "mean_iou" in result["metrics"] and "pq" in result["metrics"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "learning_rate" in card
    assert all(torch.isfinite(torch.tensor(losses(out))))
    # The final folder is transformers' own format (the card says so), with the run's settings stashed.
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "maskformer" and "maskformer_hf_training" in config
    assert "no `trust_remote_code`" in card and not list(out.glob("*.py"))


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_folder, tmp_path):
    common = ("--per_device_train_batch_size", "2", "--mask_loss_mode", "point")
    train(train_args(tiny_folder, tmp_path / "full", "--max_train_steps", "6", *common))
    train(train_args(tiny_folder, tmp_path / "cut", "--max_train_steps", "6", "--stop_at_step", "3", *common))
    # The interrupted run left a half-written checkpoint behind (a kill during a save): it must be ignored.
    (tmp_path / "cut" / "checkpoints" / "checkpoint-5.partial").mkdir()
    train(
        train_args(
            tiny_folder,
            tmp_path / "cut",
            "--max_train_steps",
            "6",
            "--resume_from_checkpoint",
            "latest",
            *common,
        )
    )
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
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1, got 0"),
        (["--checkpoints_total_limit", "-1"], "--checkpoints_total_limit must be >= 1, got -1"),
        (["--label_convention", "zero"], "invalid choice: 'zero'"),
    ],
)
def test_cli_errors(argv, message, capsys, tmp_path):
    from modeling_maskformer.training import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--output_dir", str(tmp_path), "--max_train_steps", "10", *argv])
    assert message in capsys.readouterr().err


def test_max_train_steps_is_required_and_says_why(capsys, tmp_path):
    from modeling_maskformer.training import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--output_dir", str(tmp_path)])
    assert "--max_train_steps is required" in capsys.readouterr().err
    assert parse_args(["--output_dir", str(tmp_path), "--max_train_steps", "5"]).crop_size is None  # from the model


def test_recipes_are_keyed_by_backbone_type_and_by_where_the_backbone_starts():
    from transformers import ConvNextConfig, MaskFormerSwinConfig

    from modeling_maskformer.training import RECIPES, choose_recipe, recipe_for

    from builders import STAGES, tiny_config

    assert recipe_for(tiny_config(), pretrained_backbone=True) == RECIPES["resnet"]
    swin = tiny_config(
        backbone_config=MaskFormerSwinConfig(
            embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], out_features=STAGES
        )
    )
    assert recipe_for(swin, pretrained_backbone=True) == RECIPES["swin"] and RECIPES["swin"].warmup_steps == 1500
    # A backbone from random weights (the config says so, or the caller): the full learning rate, whatever its type.
    scratch = choose_recipe(tiny_config())
    assert scratch.name == "scratch" and scratch.recipe.backbone_lr_multiplier == 1.0
    assert scratch.recipe.learning_rate == 5e-4 and "starts from random weights" in scratch.describe()
    assert choose_recipe(swin, pretrained_backbone=False).recipe == RECIPES["scratch"]
    assert (
        "the paper's recipe for a pretrained resnet backbone"
        in choose_recipe(tiny_config(), pretrained_backbone=True).reason
    )
    convnext = tiny_config(
        backbone_config=ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=STAGES)
    )
    with pytest.raises(ValueError, match="no training recipe for a pretrained backbone of type 'convnext'.*--recipe"):
        recipe_for(convnext, pretrained_backbone=True)
    assert recipe_for(convnext, "swin") == RECIPES["swin"]
    given = recipe_for(
        convnext,
        pretrained_backbone=True,
        learning_rate=1e-3,
        weight_decay=0.0,
        backbone_lr_multiplier=1.0,
        warmup_steps=5,
    )
    assert (given.learning_rate, given.warmup_steps, given.max_grad_norm) == (1e-3, 5, 0.01)
    assert recipe_for(tiny_config(), learning_rate=3e-4).weight_decay == RECIPES["scratch"].weight_decay
    with pytest.raises(ValueError, match="unknown recipe 'adam'"):
        recipe_for(convnext, "adam")


def test_fine_tuning_takes_sizes_from_the_base_model_and_reports_once(tiny_folder, tmp_path, caplog, capfd):
    """A base model trained at 96 px fine-tunes at 96 px; a new class count re-initialises the head with one
    warning (transformers' load report and progress bars stay out of the training output)."""
    from modeling_maskformer import MaskFormerImageProcessor

    base = tmp_path / "base"
    tiny_model(num_labels=3).save_pretrained(base)
    MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 384}).save_pretrained(base)
    capfd.readouterr()
    argv = train_args(base, tmp_path / "run", "--max_train_steps", "1")
    del argv[argv.index("--crop_size") : argv.index("--crop_size") + 2]
    with caplog.at_level(logging.INFO):
        train(argv)
    assert "training crop 96 px (the base model's processor), evaluation short side 96 px" in caplog.text
    saved = json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": 96, "longest_edge": 384} and saved["num_labels"] == 9
    assert caplog.text.count("newly initialised") == 1
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "Writing model shards" not in err and "Loading weights" not in err


def test_semantic_folders_need_an_explicit_label_convention(tiny_folder, tmp_path, caplog):
    from modeling_maskformer.data import SyntheticShapes

    for split, count in (("train", 4), ("validation", 2)):
        SyntheticShapes(split, count, image_size=64).export_ade_folder(tmp_path / "ade")
    argv = train_args(tiny_folder, tmp_path / "run", "--max_train_steps", "1", "--per_device_train_batch_size", "2")
    argv[argv.index("synthetic")] = str(tmp_path / "ade")
    with pytest.raises(ValueError, match="--label_convention ade.*--label_convention as_is"):
        train(argv)
    with caplog.at_level(logging.INFO):
        train([*argv, "--label_convention", "ade"])
    assert (
        "ADE convention (--label_convention ade): pixel 0 = 'other', ignored; pixel k = class k-1; 9 classes"
        in caplog.text
    )
    # Into the same folder: another run (the checkpoint's convention was ade), refused before any step.
    with pytest.raises(
        ValueError, match=r"belongs to a different run \(--label_convention: 'ade' then, 'as_is' now\)"
    ):
        train([*argv, "--label_convention", "as_is"])
    # The same files read as they are: pixel value 9 is then out of range for the 9 classes of id2label.json.
    argv[argv.index(str(tmp_path / "run"))] = str(tmp_path / "as_is")
    with pytest.raises(ValueError, match=r"train_0000\d\d.png: label\(s\) \[9\] outside 0..8"):
        train([*argv, "--label_convention", "as_is"])


def test_resume_from_a_folder_that_is_not_a_checkpoint(tiny_folder, tmp_path):
    from modeling_maskformer.training import CheckpointError

    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        train(
            train_args(
                tiny_folder,
                tmp_path / "x",
                "--max_train_steps",
                "1",
                "--resume_from_checkpoint",
                str(tmp_path),
            )
        )


def test_the_script_says_a_user_error_in_one_line(tiny_folder, tmp_path, capsys):
    """An output folder with an earlier run's results and no checkpoint: status 2, one line, no traceback."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    status = run_script("train_maskformer.py", train_args(tiny_folder, tmp_path / "run", "--max_train_steps", "1"))
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(
        f"train_maskformer.py: error: {tmp_path / 'run'} holds the results of an earlier run (config.json) but no "
        "checkpoint to resume from: pass --overwrite_output_dir"
    )
    assert run_script("train_maskformer.py", ["--output_dir", str(tmp_path)]) == 2  # argparse's own error
    assert "--max_train_steps is required" in capsys.readouterr().err


def launch(num_processes: int, folder: Path, output_dir: Path, per_device: int) -> subprocess.CompletedProcess:
    command = [
        # NOTE: `--cpu` makes accelerate start one process whatever --num_processes says; --multi_gpu starts
        # torchrun workers, and train.py asks for CPU itself when there is no GPU.
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *(["--multi_gpu"] if num_processes > 1 else ["--cpu"]),
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(TRAIN),
        *train_args(folder, output_dir, "--max_train_steps", "3", "--per_device_train_batch_size", str(per_device)),
    ]
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
