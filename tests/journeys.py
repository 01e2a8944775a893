"""The command-line journeys of the data tests (tests/test_data_masks.py, tests/test_hf_route.py): a script run as
a user runs it, its one-line errors, and two training steps followed by the evaluation of the saved model."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN, EVALUATE = ROOT / "scripts" / "train_maskformer.py", ROOT / "scripts" / "evaluate_maskformer.py"


def run(script: Path, *argv: str, monkeypatch, capsys) -> tuple[int, str]:
    """A script run as `python script argv...` (in this process): (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, argv)])
    code = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def error_line(script: Path, err: str) -> str:
    """The one line a user error prints (progress bars may precede it on stderr)."""
    lines = [line for line in err.splitlines() if line.startswith(f"{script.name}: error: ")]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err[-2000:]
    return lines[0]


def train_argv(tiny_folder: Path, dataset: Path, output_dir: Path, *extra) -> list[str]:
    return [
        "--dataset",
        dataset,
        "--model_name_or_path",
        tiny_folder,
        "--output_dir",
        output_dir,
        "--crop_size",
        "64",
        "--min_scale",
        "1.0",
        "--max_scale",
        "1.0",
        "--recipe",
        "resnet",
        "--max_train_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--eval_steps",
        "1000",
        "--checkpointing_steps",
        "1000",
        *extra,
    ]


def train_then_evaluate(tiny_folder, dataset, tmp_path, monkeypatch, capsys, *extra) -> dict:
    """The journey: two training steps, then the evaluation of the saved model; returns the evaluation JSON."""
    code, err = run(
        TRAIN,
        *train_argv(tiny_folder, dataset, tmp_path / "model", *extra),
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err[-2000:]
    code, err = run(
        EVALUATE,
        "--model",
        tmp_path / "model",
        "--dataset",
        dataset,
        "--output_json",
        tmp_path / "eval.json",
        *extra,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err[-2000:]
    return json.loads((tmp_path / "eval.json").read_text())


def saved_id2label(folder: Path) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((folder / "config.json").read_text())["id2label"].items()}
