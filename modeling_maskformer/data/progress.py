"""What the long steps of dataset preparation (downloads, checksums, extraction) share: their progress (a bar on a
terminal, plain log lines everywhere else), their error type, and how they write files (whole or not at all; a full
disk said in one line)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
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


class _LogLines:
    """tqdm's output when no bar is shown: each status as one INFO line, without its carriage return."""

    def write(self, text: str) -> None:
        if text := text.strip():
            logger.info("%s", text)

    def flush(self) -> None:
        pass


def progress_bar(
    iterable=None, *, total: int | None, desc: str, initial: int = 0, bar: bool = True, unit: str = "B"
) -> tqdm:
    """A tqdm bar on stderr when it is a terminal and `bar` is on; otherwise (a log file, CI, nohup, Slurm,
    `--no_progress`) an INFO line every LOG_INTERVAL seconds, e.g. `x.zip: 1.20GB of 18.0GB (6%), 5.10MB/s, 56:12
    left`, and a last one at the end of a step that printed any (tqdm's `delay`), so a long step is never silent and
    a log never fills with carriage returns."""
    options = dict(iterable=iterable, total=total, initial=initial, desc=desc, unit=unit, unit_divisor=1024)
    options["unit_scale"] = unit == "B"
    if bar and sys.stderr.isatty():
        return tqdm(**options, file=sys.stderr, mininterval=0.5, leave=False)
    suffix = "B" if unit == "B" else " {unit}s"  # x.zip: 1.20GB of 18.0GB; labels: 12 files of 500 files
    count = f"{{n_fmt}}{suffix} of {{total_fmt}}{suffix} ({{percentage:.0f}}%), {{rate_fmt}}, {{remaining}} left"
    return tqdm(
        **options,
        file=_LogLines(),
        bar_format="{desc}: " + (count if total else f"{{n_fmt}}{suffix}, {{rate_fmt}}"),
        mininterval=LOG_INTERVAL,
        delay=LOG_INTERVAL,
        miniters=1,
    )
