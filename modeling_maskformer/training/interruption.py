"""Stopping a training run without losing it: SIGTERM (what Slurm and preemptible cloud machines send before
they kill a job) and SIGINT (Ctrl-C) save a checkpoint at the next step boundary and stop.

`StopRequests` installs its handlers for the duration of the training loop and restores the previous ones
after. The first signal only sets a flag: the step in progress finishes, the loop saves a checkpoint and raises
`TrainingStopped`, whose message says where the checkpoint is. A second signal is acknowledged and the save goes
on; a third raises `KeyboardInterrupt` at once. That is safe at any moment: a checkpoint counts only once it is
complete (checkpoints.py). With several processes every process must stop (and save) at the same step, or the
others would wait forever inside a collective operation: `decide` combines the decision over processes.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped by a signal after saving a checkpoint. A KeyboardInterrupt, so that code that handles
    Ctrl-C handles it; `exit_status` is the shell's for that signal (128 + its number)."""

    def __init__(self, signum: int, step: int, max_steps: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, Path(checkpoint)
        self.exit_status = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step} of {max_steps}; checkpoint saved in "
            f"{checkpoint}. Run the same command again to resume from it."
        )


class StopRequests:
    """SIGTERM/SIGINT handlers for the training loop (a context manager); see the module docstring. Outside the
    main thread (where Python cannot install signal handlers) it installs nothing and never requests a stop."""

    def __init__(self):
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.signum = signum
            logger.warning("%s received: finishing this step, saving a checkpoint, then stopping", name)
        elif self.count == 2:
            logger.warning(
                "%s received again: still finishing the checkpoint; a third signal stops at once "
                "(the earlier checkpoints stay as they are)",
                name,
            )
        else:
            raise KeyboardInterrupt(f"{name} received three times: stopped without saving")


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: Ctrl-C reaches every process of the terminal's foreground group and
    Slurm signals every process of the job, workers included; they leave the stopping to the training process
    (which shuts them down), instead of dying and taking the next batch, and the checkpoint, with them."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def decide(accelerator, stop_requested: bool, time_due: bool) -> tuple[bool, bool]:
    """(stop, save by time), the same on every process: any process's signal stops all, and the main process's
    clock decides the timed checkpoint (one all-reduce of two numbers)."""
    if accelerator.num_processes == 1:
        return stop_requested, time_due
    flags = torch.tensor([stop_requested, time_due and accelerator.is_main_process], device=accelerator.device)
    flags = accelerator.reduce(flags.float(), reduction="sum")
    return bool(flags[0] > 0), bool(flags[1] > 0)
