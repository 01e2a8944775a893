"""Fault injection: damaged and half-written checkpoints, kills at several points of a save, evaluation
crashes. Each case checks what the user gets back: the newest checkpoint that verifies, with a warning for
each one skipped, and a resumed run whose losses equal the uninterrupted run's.

The fast tests build checkpoints without training, or train a tiny model for 6 steps in-process; the tests
that kill a training process are marked slow."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from modeling_maskformer.training import (
    MANIFEST_FILE,
    STATE_FILE,
    CheckpointError,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    train,
    verify_checkpoint,
)
from modeling_maskformer.training import loop as training_loop

from builders import tiny_model
from tiny_training import history, losses, save_tiny_model, train_args

ROOT = Path(__file__).resolve().parents[1]
# Point-sampled loss: its random points make the restored random states matter for the losses.
RUN = (
    "--max_train_steps",
    "6",
    "--checkpointing_steps",
    "3",
    "--eval_steps",
    "3",
    "--mask_loss_mode",
    "point",
    "--per_device_train_batch_size",
    "2",
)


# -- checkpoints without training ------------------------------------------------------------------


def _accelerator_state():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return accelerator, *accelerator.prepare(model, optimizer, scheduler)


@pytest.fixture
def saved(tmp_path) -> Path:
    """checkpoint-2, -4 and -6 written by `save_checkpoint`."""
    accelerator, *_ = _accelerator_state()
    for step in (2, 4, 6):
        save_checkpoint(accelerator, tmp_path, {"step": step, "micro_batch": step, "history": []}, total_limit=None)
    return tmp_path


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated optimizer.bin": (
        "optimizer.bin",
        _truncate,
        "optimizer.bin has \\d+ bytes, the manifest says",
    ),
    "empty random_states_0.pkl": (
        "random_states_0.pkl",
        lambda p: p.write_bytes(b""),
        "random_states_0.pkl has 0 bytes",
    ),
    "flipped byte in model.safetensors": (
        "model.safetensors",
        _flip_a_byte,
        "model.safetensors does not match its checksum",
    ),
    "deleted trainer_state.json": (STATE_FILE, Path.unlink, "trainer_state.json is missing"),
    "no manifest.json": (MANIFEST_FILE, Path.unlink, "no manifest.json, so it is not a complete checkpoint"),
    "broken manifest.json": (MANIFEST_FILE, lambda p: p.write_text('{"files": '), "manifest.json is damaged"),
}


def test_a_checkpoint_is_written_with_a_manifest_and_verifies(saved):
    checkpoint = saved / "checkpoints" / "checkpoint-6"
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    on_disk = {p.name for p in checkpoint.iterdir()} - {MANIFEST_FILE}
    assert (
        set(manifest["files"]) == on_disk >= {STATE_FILE, "model.safetensors", "optimizer.bin", "random_states_0.pkl"}
    )
    for name, entry in manifest["files"].items():
        assert entry["size"] == (checkpoint / name).stat().st_size and len(entry["sha256"]) == 64
    assert verify_checkpoint(checkpoint)["step"] == 6
    assert [p.name for p in (saved / "checkpoints").iterdir() if "." in p.name] == []  # no partial left


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoints_are_named_or_skipped(saved, damage, caplog):
    name, harm, message = DAMAGES[damage]
    newest = saved / "checkpoints" / "checkpoint-6"
    harm(newest / name)
    with pytest.raises(CheckpointError, match=f"checkpoint-6.*{message}"):
        resolve_checkpoint(str(newest), saved)  # named explicitly: an error naming the file
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("latest", saved) == saved / "checkpoints" / "checkpoint-4"
    assert "skipping checkpoint-6" in caplog.text and name in caplog.text


def test_latest_when_every_checkpoint_is_damaged_or_there_is_none(saved, tmp_path, caplog):
    for checkpoint in list_checkpoints(saved):
        _truncate(checkpoint / "optimizer.bin")
    with pytest.raises(CheckpointError, match="none of the 3 checkpoint\\(s\\).*verifies"):
        resolve_checkpoint("latest", saved)
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("latest", tmp_path / "empty") is None
    assert "no checkpoint" in caplog.text


def test_other_folder_names_are_not_checkpoints(saved):
    folder = saved / "checkpoints"
    shutil.copytree(folder / "checkpoint-2", folder / "checkpoint-30-backup")
    (folder / "checkpoint-40.partial").mkdir()
    (folder / "checkpoint-50").write_text("a file, not a folder")
    assert [p.name for p in list_checkpoints(saved)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert resolve_checkpoint("latest", saved) == folder / "checkpoint-6"


def test_missing_random_states_are_an_error_or_a_loud_warning(saved, caplog):
    newest = saved / "checkpoints" / "checkpoint-6"
    with pytest.raises(
        CheckpointError, match="no random_states_1.pkl .*losses, will differ.*--allow_missing_random_states"
    ):
        resolve_checkpoint("latest", saved, num_processes=2)  # written by one process, resumed by two
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint(str(newest), saved, num_processes=2, allow_missing_random_states=True) == newest
    assert "will differ" in caplog.text


def test_checkpoint_limit_keeps_the_newest_and_never_the_one_just_written(saved):
    accelerator, *_ = _accelerator_state()
    with pytest.raises(ValueError, match="checkpoints_total_limit must be >= 1"):
        save_checkpoint(accelerator, saved, {"step": 8}, total_limit=0)
    assert len(list_checkpoints(saved)) == 3  # nothing deleted by the refused call
    save_checkpoint(accelerator, saved, {"step": 8}, total_limit=2)
    assert [p.name for p in list_checkpoints(saved)] == ["checkpoint-6", "checkpoint-8"]
    # A run resumed from an older checkpoint writes a step below the newest: the one written stays.
    save_checkpoint(accelerator, saved, {"step": 3}, total_limit=1)
    assert [p.name for p in list_checkpoints(saved)] == ["checkpoint-3"]
    verify_checkpoint(saved / "checkpoints" / "checkpoint-3")


def test_leftovers_of_interrupted_saves_are_replaced_and_removed(saved):
    accelerator, *_ = _accelerator_state()
    folder = saved / "checkpoints"
    (folder / "checkpoint-8.partial").mkdir()
    (folder / "checkpoint-8.partial" / "optimizer.bin").write_bytes(b"half")
    (folder / "checkpoint-7.partial").mkdir()
    _truncate(folder / "checkpoint-6" / "optimizer.bin")
    save_checkpoint(accelerator, saved, {"step": 8}, total_limit=None)
    save_checkpoint(accelerator, saved, {"step": 6}, total_limit=None)  # the same step again replaces it
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
        "checkpoint-8",
    ]
    for checkpoint in list_checkpoints(saved):
        verify_checkpoint(checkpoint)


# -- training runs (in-process) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory) -> Path:
    """The uninterrupted run: 6 steps, checkpoints and evaluations at steps 3 and 6."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    train(train_args(tiny_folder, output_dir, *RUN))
    return output_dir


def _resume(tiny_folder: Path, output_dir: Path, *extra: str) -> None:
    (output_dir / "training_history.json").unlink(missing_ok=True)
    train(train_args(tiny_folder, output_dir, *RUN, "--resume_from_checkpoint", "latest", *extra))


def _assert_same_run(output_dir: Path, reference: Path) -> None:
    assert len(losses(reference)) == 6
    assert losses(output_dir) == pytest.approx(losses(reference), rel=1e-6, abs=1e-7)
    evaluated, expected = (
        {h["step"]: h["eval"]["mean_iou"] for h in history(run) if "eval" in h} for run in (output_dir, reference)
    )
    assert evaluated == pytest.approx(expected) and list(evaluated) == [3, 6]


def test_resuming_past_a_damaged_newest_checkpoint_gives_the_same_losses(reference, tiny_folder, tmp_path, caplog):
    run = shutil.copytree(reference, tmp_path / "run")
    _truncate(run / "checkpoints" / "checkpoint-6" / "optimizer.bin")
    with caplog.at_level(logging.WARNING):
        _resume(tiny_folder, run)
    assert "skipping checkpoint-6" in caplog.text
    _assert_same_run(run, reference)
    verify_checkpoint(run / "checkpoints" / "checkpoint-6")  # written again, whole


def _failing_evaluation(monkeypatch, fail_at_call: int = 1) -> None:
    """The first evaluation raises, as a malformed validation item or a metric bug would."""
    real, calls = training_loop.evaluate_model, []

    def evaluate_model(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at_call:
            raise ValueError("duplicate segment ids in the ground truth segments_info: [10, 10]")
        return real(*args, **kwargs)

    monkeypatch.setattr(training_loop, "evaluate_model", evaluate_model)


def test_an_evaluation_error_is_recorded_and_training_goes_on(reference, tiny_folder, tmp_path, monkeypatch, caplog):
    _failing_evaluation(monkeypatch)
    with caplog.at_level(logging.WARNING):
        result = train(train_args(tiny_folder, tmp_path / "run", *RUN))
    assert "evaluation at step 3 failed; training goes on" in caplog.text and "1 evaluation(s) failed" in caplog.text
    failed = [h for h in history(tmp_path / "run") if "eval_error" in h]
    assert [h["step"] for h in failed] == [3] and "duplicate segment ids" in failed[0]["eval_error"]
    assert result["state"]["step"] == 6 and result["metrics"] is not None  # step 6 evaluated
    assert losses(tmp_path / "run") == pytest.approx(losses(reference), rel=1e-6, abs=1e-7)
    verify_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint-3")


def test_a_fatal_evaluation_error_keeps_the_checkpoint_and_resume_finishes_the_evaluation(
    reference, tiny_folder, tmp_path, monkeypatch
):
    _failing_evaluation(monkeypatch)
    with pytest.raises(ValueError, match="duplicate segment ids"):
        train(train_args(tiny_folder, tmp_path / "run", *RUN, "--stop_on_eval_error"))
    state = verify_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint-3")  # saved before evaluating
    assert state["eval_pending"] is True
    monkeypatch.undo()
    _resume(tiny_folder, tmp_path / "run")
    _assert_same_run(tmp_path / "run", reference)


@pytest.mark.slow
def test_resuming_without_random_states_needs_the_flag_and_changes_the_losses(
    reference, tiny_folder, tmp_path, caplog
):
    run = shutil.copytree(reference, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "checkpoint-6")
    checkpoint = run / "checkpoints" / "checkpoint-3"
    (checkpoint / "random_states_0.pkl").unlink()  # as if written without it: the manifest agrees
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    del manifest["files"]["random_states_0.pkl"]
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="no random_states_0.pkl"):
        _resume(tiny_folder, run)
    with caplog.at_level(logging.WARNING):
        _resume(tiny_folder, run, "--allow_missing_random_states")
    assert "will differ" in caplog.text
    assert losses(run)[:3] == losses(reference)[:3] and losses(run)[3:] != pytest.approx(losses(reference)[3:])


# -- killed training processes (slow) --------------------------------------------------------------

# Runs `train` in a fresh process that dies (os._exit, no clean-up) at one point of the save of step 6.
KILLER = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(2)
    from accelerate import Accelerator
    from modeling_maskformer.training import checkpoints, train

    point, argv = sys.argv[1], sys.argv[2:]
    if point == "while_writing_state":  # Accelerate's files written, the optimizer's only half
        original_save = Accelerator.save_state
        def save_state(self, output_dir, **kwargs):
            result = original_save(self, output_dir, **kwargs)
            if output_dir.endswith("checkpoint-6.partial"):
                path = os.path.join(output_dir, "optimizer.bin")
                with open(path, "r+b") as handle:
                    handle.truncate(os.path.getsize(path) // 2)
                os._exit(9)
            return result
        Accelerator.save_state = save_state
    elif point == "before_rename":  # complete, with its manifest, but still named .partial
        original_manifest = checkpoints.write_manifest
        def write_manifest(folder):
            manifest = original_manifest(folder)
            if folder.name == "checkpoint-6.partial":
                os._exit(9)
            return manifest
        checkpoints.write_manifest = write_manifest
    elif point == "before_rotation":  # renamed into place, before evaluating and writing the output folder
        original_rotate = checkpoints.rotate_checkpoints
        def rotate_checkpoints(output_dir, total_limit, keep):
            if keep.name == "checkpoint-6":
                os._exit(9)
            return original_rotate(output_dir, total_limit, keep)
        checkpoints.rotate_checkpoints = rotate_checkpoints
    train(argv)
""")


def _environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["while_writing_state", "before_rename", "before_rotation"])
def test_a_kill_during_a_save_costs_at_most_the_steps_since_the_last_checkpoint(
    point, reference, tiny_folder, tmp_path
):
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, point, *train_args(tiny_folder, run, *RUN)],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=600,
        cwd=ROOT,
    )
    assert killed.returncode == 9, killed.stderr[-3000:]
    expected = "checkpoint-6" if point == "before_rotation" else "checkpoint-3"
    assert resolve_checkpoint("latest", run).name == expected
    _resume(tiny_folder, run)
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_sigkill_at_an_arbitrary_moment_then_resume(reference, tiny_folder, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "train_maskformer.py"),
        *train_args(tiny_folder, run, *RUN),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environment(), cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 600
        while not (run / "checkpoints" / "checkpoint-3" / MANIFEST_FILE).exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # somewhere in the evaluation of step 3 or the steps after it
    finally:
        process.wait()
    _resume(tiny_folder, run)
    _assert_same_run(run, reference)
