"""Nothing lost: real SIGTERM and SIGINT sent to a real training process (`scripts/train_maskformer.py`), the same
command rerun, checkpoints by time, and what a rerun does with an output folder that holds an earlier run.

The signal tests start the script as a user does and signal it once its first checkpoint exists, at whatever
point of a step it then is; the run must save at the next step boundary, name the checkpoint and exit with the
shell's status for the signal, and the same command again must resume there and finish with the losses of an
uninterrupted run. A second signal during the save is sent from inside the save (in-process, real signals)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeling_maskformer.training import (
    TrainingStopped,
    checkpoints,
    list_checkpoints,
    train,
    verify_checkpoint,
)
from modeling_maskformer.training import loop as training_loop
from modeling_maskformer.training.resume import start_from

from tiny_training import history, losses, save_tiny_model, train_args

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_maskformer.py"
STEPS = 16  # long enough that a signal sent at the first checkpoint (step 2) arrives before the end
RUN = (
    "--max_train_steps",
    str(STEPS),
    "--checkpointing_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
    "--mask_loss_mode",
    "point",
)
STOPPED = re.compile(
    r"train_maskformer\.py: stopped by (SIG\w+) at step (\d+) of \d+; checkpoint saved in (\S+)\. Run the same "
    r"command again to resume from it\."
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def command(folder: Path, output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(TRAIN), *train_args(folder, output_dir, *RUN, *extra)]


def run_command(argv: list[str], log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "w") as handle:
        return subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=600)


def signalled_run(
    argv: list[str], output_dir: Path, signum: int, log: Path, *, group: bool = False
) -> tuple[int, str]:
    """Start the command, send `signum` when its first checkpoint exists (with `group`, to its whole process group,
    as a terminal's Ctrl-C does), return (status, output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "w") as handle:
        process = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=group
        )
        try:
            deadline = time.monotonic() + 300
            while not (output_dir / "checkpoints" / "checkpoint-2").is_dir():
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.02)
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
            status = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
    return status, log.read_text()


def check_stopped(status: int, output: str, signum: int) -> tuple[int, Path]:
    """The exit status and the last line; returns the step and the checkpoint it names (which verifies)."""
    assert status == 128 + signum, output[-3000:]
    last = output.strip().splitlines()[-1]
    match = STOPPED.fullmatch(last)
    assert match, last
    assert match.group(1) == signal.Signals(signum).name
    step, checkpoint = int(match.group(2)), Path(match.group(3))
    assert 2 <= step < STEPS and checkpoint.name == f"checkpoint-{step}"
    assert verify_checkpoint(checkpoint)["step"] == step
    assert f"{signal.Signals(signum).name} received: finishing this step, saving a checkpoint, then stopping" in output
    return step, checkpoint


def test_sigterm_saves_then_the_same_command_resumes_with_the_losses_of_an_uninterrupted_run(tiny_folder, tmp_path):
    out = tmp_path / "run"
    argv = command(tiny_folder, out)
    status, output = signalled_run(argv, out, signal.SIGTERM, tmp_path / "first.log")
    step, checkpoint = check_stopped(status, output, signal.SIGTERM)
    assert not (out / "model.safetensors").exists()  # stopped: no final folder, the checkpoint is the result

    resumed = run_command(argv, tmp_path / "second.log")
    output = (tmp_path / "second.log").read_text()
    assert resumed.returncode == 0, output[-3000:]
    assert (
        f"resuming from {checkpoint} at step {step} of {STEPS} (the newest checkpoint in {checkpoint.parent} that "
        "verifies); --overwrite_output_dir starts over instead" in output
    )

    train(train_args(tiny_folder, tmp_path / "uninterrupted", *RUN))
    expected, got = losses(tmp_path / "uninterrupted"), losses(out)
    assert len(got) == len(expected) == STEPS
    difference = max(abs(a - b) for a, b in zip(got, expected))
    print(f"largest loss difference, resumed (2 processes) vs uninterrupted: {difference:.3g}")
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tiny_folder, tmp_path):
    """SIGINT to the process group, as Ctrl-C in a terminal: the data loader's worker process gets it too."""
    out = tmp_path / "run"
    argv = command(tiny_folder, out, "--num_workers", "1")
    status, output = signalled_run(argv, out, signal.SIGINT, tmp_path / "log", group=True)
    step, _ = check_stopped(status, output, signal.SIGINT)
    assert [entry["step"] for entry in history(out)] == list(range(1, step + 1))  # the losses so far


def signal_during_first_save(monkeypatch, *, before: int, during_manifest: int = 0) -> None:
    """Make the loop's first checkpoint save send this process SIGTERMs: `before` as it starts, `during_manifest`
    once Accelerate's files are written (just before the manifest that makes the checkpoint count)."""
    calls = []
    real_save, real_manifest = training_loop.save_checkpoint, checkpoints.write_manifest

    def save(*args, **kwargs):
        calls.append(1)
        for _ in range(before if len(calls) == 1 else 0):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(*args, **kwargs)

    def manifest(folder):
        for _ in range(during_manifest if len(calls) == 1 else 0):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_manifest(folder)

    monkeypatch.setattr(training_loop, "save_checkpoint", save)
    monkeypatch.setattr(checkpoints, "write_manifest", manifest)


def test_a_second_signal_while_saving_finishes_the_save(tiny_folder, tmp_path, monkeypatch, caplog):
    signal_during_first_save(monkeypatch, before=1, during_manifest=1)
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingStopped) as stopped:
        train(train_args(tiny_folder, tmp_path / "run", *RUN))
    assert "SIGTERM received again: still finishing the checkpoint" in caplog.text
    # The save at step 2 finished and verifies; the run stopped at the next step boundary, saving again.
    assert verify_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint-2")["step"] == 2
    assert stopped.value.step == 3 and stopped.value.exit_status == 143
    assert verify_checkpoint(stopped.value.checkpoint)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are the loop's only


def test_a_third_signal_aborts_and_leaves_no_checkpoint_that_counts(tiny_folder, tmp_path, monkeypatch):
    signal_during_first_save(monkeypatch, before=2, during_manifest=1)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM received three times") as aborted:
        train(train_args(tiny_folder, tmp_path / "run", *RUN))
    assert not isinstance(aborted.value, TrainingStopped)
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["checkpoint-2.partial"]  # written, never renamed into place
    assert list_checkpoints(tmp_path / "run") == []
    # The same command again starts from step 0 (there is nothing to resume); its first save removes the leftover.
    args = training_loop.parse_args(train_args(tiny_folder, tmp_path / "run", *RUN))
    assert start_from(args, tmp_path / "run", num_processes=1) is None


def test_checkpoints_by_time_a_rerun_resumes_refuses_another_run_and_overwrites_only_when_asked(
    tiny_folder, tmp_path, caplog
):
    out = tmp_path / "run"
    # Checkpoints by time (here: at every step, though 1000 steps apart by count), the oldest removed with a line.
    assert training_loop.parse_args(["--output_dir", "x", "--max_train_steps", "1"]).checkpointing_minutes == 30
    short = (
        "--max_train_steps",
        "3",
        "--checkpointing_steps",
        "1000",
        "--checkpointing_minutes",
        "1e-9",
        "--checkpoints_total_limit",
        "1",
    )
    with caplog.at_level(logging.INFO):
        train(train_args(tiny_folder, out, *short))
    for step in (1, 2):
        removed = out / "checkpoints" / f"checkpoint-{step}"
        assert f"removing {removed}: --checkpoints_total_limit 1 keeps the newest" in caplog.text
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]
    # The same command again: resumes at the end, trains nothing, says so.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(train_args(tiny_folder, out, *short))
    assert "resuming from" in caplog.text and "nothing left to train: the run is at step 3 of 3" in caplog.text
    # Another run into the same folder: another dataset (classes), or another model.
    other = train_args(tiny_folder, out, *short, "--synthetic_thing_classes", "12")
    with pytest.raises(
        ValueError, match=r"checkpoint-3 belongs to a different run \(the classes \(id2label\): 9 classes"
    ):
        train(other)
    # Results but no checkpoint: refused, then --overwrite_output_dir names what it removes.
    for checkpoint in list_checkpoints(out):
        os.rename(checkpoint, tmp_path / checkpoint.name)
    with pytest.raises(
        ValueError,
        match="holds the results of an earlier run .* but no checkpoint to resume from: pass --overwrite_output_dir",
    ):
        train(train_args(tiny_folder, out, *short))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train([*other, "--overwrite_output_dir"])
    assert (
        "--overwrite_output_dir: removing the earlier run's checkpoints/ (no checkpoint), best, training_history.json, "
        "config.json, model.safetensors" in caplog.text
    )
    assert "resuming" not in caplog.text and len(losses(out)) == 3
