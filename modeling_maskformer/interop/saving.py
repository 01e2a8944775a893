"""File modes of what this package saves.

safetensors' `save_file` (0.8) creates its file with mode 0600 whatever the umask, while every other file of a
saved folder gets the usual 0644: a model folder copied to a server, or shared with another user or container,
could then not be read there. `make_weights_readable` gives the weight files the mode an ordinary file would get
(0666 less the umask). Every save of a model folder or checkpoint in this package calls it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()
WEIGHT_SUFFIXES = (".safetensors",)


def current_umask() -> int:
    """The process's umask: from /proc on Linux, else by setting it and putting it back (under a lock; NOTE: a file
    another thread creates meanwhile gets umask 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def make_weights_readable(folder: str | Path) -> list[Path]:
    """Give every weight file directly in `folder` the mode a newly created file gets (0666 less the umask), as
    for the folder's other files; returns the files changed. A file the umask keeps private stays private."""
    folder = Path(folder)
    if not folder.is_dir():  # e.g. a process that did not write (transformers' is_main_process=False)
        return []
    mode = 0o666 & ~current_umask()
    changed = []
    for path in sorted(folder.iterdir()):
        if path.suffix in WEIGHT_SUFFIXES and path.is_file() and (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
            changed.append(path)
    return changed
