"""`save_pretrained` for our models (registered by the package face).

NOTE: safetensors' `save_file` (0.8) creates its file 0600 whatever the umask, so a folder copied to a server could
not be read there: `make_weights_readable` gives weight files an ordinary file's mode; every save here calls it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..configuration.remote_code import PUSH_KWARGS
from ..modeling_maskformer import FolderFormat
from .transformers_folder import native_refusals, save_transformers_folder

logger = logging.getLogger(__name__)
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """From /proc on Linux, else set and put back under a lock (NOTE: a file made meanwhile gets umask 022)."""
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
    """Give `folder`'s weight files the mode a new file gets (0666 less the umask); returns those changed."""
    folder = Path(folder)
    if not folder.is_dir():  # e.g. a process that did not write (transformers' is_main_process=False)
        return []
    mode = 0o666 & ~current_umask()
    changed = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors" and path.is_file() and (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
            changed.append(path)
    return changed


def save_pretrained(model, save: Callable, save_directory, *args, folder_format: FolderFormat = "auto", **kwargs):
    """transformers' own format whenever it represents the model ("auto", else the remote-code folder through
    `save` with one log line saying why); "transformers" insists, "remote_code" forces the remote-code folder."""
    reasons = native_refusals(model, folder_format)
    if reasons:
        if folder_format == "auto":
            logger.warning(
                "Saving %s as a remote-code folder (loads with trust_remote_code=True; no Hub widget): "
                "transformers' MaskFormer cannot represent %s.",
                save_directory,
                "; ".join(reasons),
            )
        save(save_directory, *args, **kwargs)
        make_weights_readable(save_directory)
        return
    if args:
        raise TypeError("save_pretrained takes the folder as its only positional argument")
    push_to_hub = kwargs.pop("push_to_hub", False)
    push_kwargs = {key: kwargs.pop(key) for key in PUSH_KWARGS if key in kwargs}
    save_transformers_folder(model, save_directory, **kwargs)
    make_weights_readable(save_directory)
    if push_to_hub:
        repo_id = push_kwargs.pop("repo_id", None) or Path(save_directory).resolve().name
        model.push_to_hub(repo_id, **push_kwargs)
