"""What the long steps of dataset preparation (downloads, checksums, extraction) share: their progress (a bar on a
terminal, plain log lines everywhere else), their error type, and how they write files (whole or not at all; a full
disk said in one line)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError

logger = logging.getLogger(__name__)


class DataPreparationError(UserError, OSError):
    """A download, check or extraction that failed; the message is one line with the way out."""


def disk_full(path: Path, needed: int | None = None) -> DataPreparationError:
    free = shutil.disk_usage(path).free
    need = f"{needed:,} bytes needed, " if needed is not None else ""
    return DataPreparationError(
        f"disk full in {path}: {need}{free:,} bytes free; free some space (or choose another "
        f"--root) and run the same command again"
    )


def write_chunk(file, chunk: bytes, folder: Path) -> None:
    """Write and flush (the bytes reach the file system as they arrive); a full disk is a DataPreparationError."""
    try:
        file.write(chunk)
        file.flush()
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(folder) from error
        raise


def check_free_space(folder: Path, needed: int) -> None:
    if needed > 0 and shutil.disk_usage(folder).free < needed:
        raise disk_full(folder, needed)


def read_json_or_empty(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or cut short by a crash: as if absent
        return {}


def write_json(path: Path, payload) -> None:
    """Written whole or not at all (a temporary file renamed into place)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, path)


# Seconds between plain progress lines when no bar is shown (a log file, CI, --no_progress).
LOG_INTERVAL = 30.0


class Progress:
    """A tqdm bar on stderr when it is a terminal and `bar` is on; otherwise (a log file, CI, nohup, Slurm,
    `--no_progress`) an INFO line every LOG_INTERVAL seconds, e.g. `x.zip: 1.20GB of 18.0GB (6%), 5.10MB/s, 56:12
    left`, and a last one at the end of a step that printed any, so a long step is never silent and a log never fills
    with carriage returns."""

    def __init__(self, *, total: int | None, desc: str, initial: int = 0, bar: bool = True, unit: str = "B"):
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.start = self.last_line = time.monotonic()
        self.lines = 0
        self.bar = None
        if bar and sys.stderr.isatty():
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=unit == "B",
                unit_divisor=1024,
                file=sys.stderr,
                mininterval=0.5,
                leave=False,
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            logger.info("%s", self.line())

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif (now := time.monotonic()) - self.last_line >= LOG_INTERVAL:
            self.last_line, self.lines = now, self.lines + 1
            logger.info("%s", self.line(now))

    def _size(self, n: float) -> str:
        return tqdm.format_sizeof(n, "B", 1024) if self.unit == "B" else f"{n:,.0f} {self.unit}s"

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        text = f"{self.desc}: {self._size(self.n)}"
        if self.total:
            text += f" of {self._size(self.total)} ({100 * self.n / self.total:.0f}%)"
        text += f", {self._size(rate)}/s"
        if self.total and rate > 0:
            text += f", {tqdm.format_interval((self.total - self.n) / rate)} left"
        return text
