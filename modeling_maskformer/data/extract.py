"""Unpacking dataset archives, for `prepare.py`: a zip extraction that checks every entry first and refuses any that
would land outside the target folder (an absolute path, a `..` component, a symbolic link)."""

from __future__ import annotations

import errno
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from .progress import DataPreparationError, check_free_space, disk_full, progress_bar


def _check_members(archive: zipfile.ZipFile, source: Path, root: Path) -> None:
    """Refuse the whole archive when any entry is unsafe or would resolve outside `root` (nothing is written)."""
    resolved = root.resolve()
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            reason = "an absolute path"
        elif ".." in re.split(r"[/\\]", name):
            reason = "a '..' component"
        elif stat.S_ISLNK(info.external_attr >> 16):
            reason = "a symbolic link"
        elif not (resolved / PurePosixPath(name)).resolve().is_relative_to(resolved):
            reason = "a path outside the target folder"
        else:
            continue
        raise DataPreparationError(f"{source}: refusing to extract: entry {name!r} is {reason}")


def extract_zip(
    source: Path,
    root: Path,
    *,
    select: Callable[[str], bool] = lambda name: True,
    rename: Callable[[str], str] = lambda name: name,
    progress: bool = True,
) -> list[str]:
    """Extract the entries of `source` that `select` keeps into `root` (as `rename(name)`), after checking every
    entry; returns the names written. A damaged archive or a full disk is a `DataPreparationError`; what was written
    stays under `root`, which the caller discards."""
    written = []
    root.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(source) as archive:
            _check_members(archive, source, root)
            members = [i for i in archive.infolist() if not i.is_dir() and select(i.filename)]
            total = sum(i.file_size for i in members)
            check_free_space(root, total)
            with progress_bar(total=total, desc=f"extracting {source.name}", bar=progress) as bar:
                for info in members:
                    name = rename(info.filename)
                    target = root / PurePosixPath(name)
                    if not target.resolve().is_relative_to(root.resolve()):  # rename() must not escape either
                        raise DataPreparationError(f"{source}: entry {info.filename!r} renamed outside the target")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    written.append(name)
                    bar.update(info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DataPreparationError(
            f"{source}: damaged or truncated zip archive ({error}); delete it and download it again"
        ) from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(root) from error
        raise
    return written
