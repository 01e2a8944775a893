"""Progress of the long steps of dataset preparation (downloads, checksums, extraction): a bar on a terminal, plain
log lines everywhere else."""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

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
