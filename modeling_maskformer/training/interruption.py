"""SIGTERM (Slurm's and preemptible clouds' warning before a kill) and SIGINT (Ctrl-C) stop training at the next
step boundary, after a checkpoint. A second signal is acknowledged and the save goes on; a third raises
`KeyboardInterrupt` at once, which is safe: a checkpoint counts only once complete (checkpoints.py).
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
    """Training stopped by a signal after saving a checkpoint; `exit_status` is the shell's (128 + signal)."""

    def __init__(self, signum: int, step: int, max_steps: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, Path(checkpoint)
        self.exit_status = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step} of {max_steps}; checkpoint saved in "
            f"{checkpoint}. Run the same command again to resume from it."
        )


class StopRequests:
    """The training loop's SIGTERM/SIGINT handlers (a context manager restoring the previous ones); the first
    signal sets `signum`. Outside the main thread, where Python cannot install handlers, it does nothing."""

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
    """A DataLoader worker's `worker_init_fn`: Ctrl-C and Slurm signal every process, workers included; they leave
    the stopping to the training process instead of dying and taking the next batch, and the checkpoint, along."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def decide(accelerator, stop_requested: bool, time_due: bool) -> tuple[bool, bool]:
    """(stop, save by time), the same on every process (else the others would wait forever in a collective): any
    process's signal stops all, and the main process's clock decides the timed checkpoint."""
    if accelerator.num_processes == 1:
        return stop_requested, time_due
    flags = torch.tensor([stop_requested, time_due and accelerator.is_main_process], device=accelerator.device)
    flags = accelerator.reduce(flags.float(), reduction="sum")
    return bool(flags[0] > 0), bool(flags[1] > 0)
