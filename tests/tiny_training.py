"""Shared by the training and fault-injection tests: a tiny model folder for the synthetic dataset, the
command line of a few-step run on it, and the losses a run recorded."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import ConvNextConfig

from builders import STAGES, tiny_model

SYNTHETIC_LABELS = 9


def save_tiny_model(folder: Path) -> Path:
    """A tiny model for the synthetic dataset's 9 classes, LayerNorm backbone (no BatchNorm, so the
    per-process batch split cannot change the numbers), no dropout."""
    from modeling_maskformer.data import SyntheticShapes

    id2label = SyntheticShapes("train", 1).id2label
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=STAGES)
    model = tiny_model(
        backbone_config=backbone,
        num_labels=SYNTHETIC_LABELS,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        dropout=0.0,
        attention_dropout=0.0,
    )
    model.save_pretrained(folder)
    return folder


def train_args(folder: Path, output_dir: Path, *extra: str) -> list[str]:
    """A few-step run on 64-px synthetic scenes. ConvNeXt has no recipe of the paper: `--recipe resnet`."""
    return [
        "--dataset",
        "synthetic",
        "--num_train_images",
        "32",
        "--num_eval_images",
        "4",
        "--image_size",
        "64",
        "--model_name_or_path",
        str(folder),
        "--output_dir",
        str(output_dir),
        "--crop_size",
        "64",
        "--min_scale",
        "1.0",
        "--max_scale",
        "1.25",
        "--recipe",
        "resnet",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--eval_steps",
        "1000",
        "--checkpointing_steps",
        "3",
        *extra,
    ]


def history(output_dir: Path) -> list[dict]:
    return json.loads((Path(output_dir) / "training_history.json").read_text())


def losses(output_dir: Path) -> list[float]:
    """The training losses logged at each step (evaluation entries left out)."""
    return [entry["loss"] for entry in history(output_dir) if set(entry) == {"step", "loss"}]
