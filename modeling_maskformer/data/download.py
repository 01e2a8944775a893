"""Fetching and unpacking dataset archives, for `prepare.py`: an HTTP download that resumes a partial file (Range
requests), shows a progress bar and checks a pinned size and SHA-256; and a zip extraction that refuses any entry
that would land outside the target folder. Every failure is a `DataPreparationError` (an OSError) whose first line
says what happened and that running the same command again continues."""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "modeling_maskformer-prepare-data"


class DataPreparationError(OSError):
    """A download, check or extraction that failed; the message is one line with the way out."""


def progress_bar(*, total: int | None, desc: str, initial: int = 0, enabled: bool = True, unit: str = "B"):
    """tqdm on stderr; bytes scaled (KB, MB, ...); refreshed at most every 0.5 s."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                file=sys.stderr, mininterval=0.5, disable=not enabled, leave=False)  # fmt: skip


def disk_full(path: Path, needed: int | None = None) -> DataPreparationError:
    free = shutil.disk_usage(path).free
    need = f"{needed:,} bytes needed, " if needed is not None else ""
    return DataPreparationError(f"disk full in {path}: {need}{free:,} bytes free; free some space (or choose another "
                                f"--root) and run the same command again")  # fmt: skip


def check_free_space(folder: Path, needed: int) -> None:
    if needed > 0 and shutil.disk_usage(folder).free < needed:
        raise disk_full(folder, needed)


def sha256_of(path: Path, *, progress: bool = True) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file, progress_bar(total=path.stat().st_size, desc=f"checking {path.name}",
                                               enabled=progress) as bar:  # fmt: skip
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


# Transient network failures: retried, then reported as an interrupted download that a rerun resumes.
_TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, urllib.error.URLError)


def download(
    url: str,
    destination: Path,
    *,
    size: int | None,
    sha256: str | None,
    retries: int = 3,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """`url` into `destination`, verified. The bytes go to `destination.part` first, which a later call (or a retry
    after a dropped connection) continues with an HTTP Range request; only a file whose size and SHA-256 match is
    renamed to `destination`. A checksum mismatch deletes the partial file (it cannot be resumed into the right
    one). An existing `destination` of the pinned size was verified when it was written and is returned as it is."""
    if destination.is_file():
        if size is None or destination.stat().st_size == size:
            return destination
        logger.warning("%s: %s bytes, not the pinned %s: downloading it again", destination,
                       f"{destination.stat().st_size:,}", f"{size:,}")  # fmt: skip
        destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size=size, progress=progress, timeout=timeout)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == retries:
                raise DataPreparationError(f"{url}: HTTP {error.code} {error.reason}") from error
            reason = f"HTTP {error.code}"
        except _TRANSIENT as error:
            if attempt == retries:
                got = part.stat().st_size if part.exists() else 0
                total = f" of {size:,}" if size else ""
                if got == 0:
                    raise DataPreparationError(
                        f"cannot download {url} ({type(error).__name__}: {error}); check the network (or use --mirror) "
                        f"and run the same command again"
                    ) from error
                raise DataPreparationError(
                    f"download of {url} interrupted at {got:,}{total} bytes ({type(error).__name__}: {error}); run "
                    f"the same command again to resume from there"
                ) from error
            reason = f"{type(error).__name__}: {error}"
        wait = min(2.0**attempt, 10.0)
        logger.warning("download of %s interrupted (%s); resuming in %.0f s", url, reason, wait)
        time.sleep(wait)
    received = part.stat().st_size
    if size is not None and received != size:
        part.unlink()
        raise DataPreparationError(f"{url}: got {received:,} bytes, expected {size:,} (the pinned size); the file was "
                                   f"removed: run the same command again, or check the URL / --mirror")  # fmt: skip
    if sha256 is None:
        logger.warning("%s: no pinned SHA-256, only its size was checked", destination.name)
    else:
        actual = sha256_of(part, progress=progress)
        if actual != sha256:
            part.unlink()
            raise DataPreparationError(
                f"{destination.name}: SHA-256 mismatch (expected {sha256}, got {actual}): not the pinned archive, so "
                f"it was removed; run the same command again, or check the URL / --mirror"
            )
    os.replace(part, destination)
    return destination


def _fetch(url: str, part: Path, *, size: int | None, progress: bool, timeout: float) -> None:
    """Download the rest of `url` onto `part` (all of it when `part` is absent or the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # not a prefix of the pinned file
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return
    check_free_space(part.parent, (size - offset) if size is not None else 0)
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and size is None:  # the partial file already holds everything the server has
            return
        raise
    with response:
        if offset and response.status != 206:
            logger.warning("%s: the server ignored the Range request; downloading from the start", url)
            offset = 0
        elif offset and not re.match(rf"bytes {offset}-", response.headers.get("Content-Range", "")):
            raise http.client.HTTPException(
                f"unexpected Content-Range {response.headers.get('Content-Range')!r}"
            )
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        total = size if size is not None else (offset + expected if expected is not None else None)
        with open(part, "ab" if offset else "wb") as file, progress_bar(
            total=total, initial=offset, desc=part.name.removesuffix(".part"), enabled=progress
        ) as bar:  # fmt: skip
            while chunk := response.read(CHUNK):
                try:
                    file.write(chunk)
                except OSError as error:
                    if error.errno == errno.ENOSPC:
                        raise disk_full(part.parent) from error
                    raise
                received += len(chunk)
                bar.update(len(chunk))
        if expected is not None and received < expected:
            raise ConnectionError(f"the connection closed after {received:,} of {expected:,} bytes")


# --------------------------------------------------------------------------------------------------
# Extraction.


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why an entry must not be extracted: an absolute path, a `..` component, a symbolic link."""
    name = info.filename
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def check_members(archive: zipfile.ZipFile, source: Path, root: Path) -> None:
    """Refuse the whole archive when any entry is unsafe or would resolve outside `root` (nothing is written)."""
    resolved = root.resolve()
    for info in archive.infolist():
        reason = _unsafe_reason(info)
        if reason is None and not (resolved / PurePosixPath(info.filename)).resolve().is_relative_to(
            resolved
        ):
            reason = "a path outside the target folder"
        if reason is not None:
            raise DataPreparationError(f"{source}: refusing to extract: entry {info.filename!r} is {reason}")


def extract_zip(
    source: Path,
    root: Path,
    *,
    select: Callable[[str], bool] = lambda name: True,
    rename: Callable[[str], str] = lambda name: name,
    progress: bool = True,
) -> list[str]:
    """Extract the entries of `source` that `select` keeps into `root` (under `rename(name)`), after checking every
    entry of the archive. Returns the names written. A damaged or truncated archive (bad header, CRC mismatch) and a
    full disk are `DataPreparationError`s; what was written so far stays under `root`, which the caller discards."""
    written = []
    root.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(source) as archive:
            check_members(archive, source, root)
            members = [i for i in archive.infolist() if not i.is_dir() and select(i.filename)]
            check_free_space(root, sum(i.file_size for i in members))
            with progress_bar(total=sum(i.file_size for i in members), desc=f"extracting {source.name}",
                              enabled=progress) as bar:  # fmt: skip
                for info in members:
                    name = rename(info.filename)
                    target = root / PurePosixPath(name)
                    if not target.resolve().is_relative_to(root.resolve()):  # rename() must not escape either
                        raise DataPreparationError(
                            f"{source}: entry {info.filename!r} renamed outside the target"
                        )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    written.append(name)
                    bar.update(info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DataPreparationError(f"{source}: damaged or truncated zip archive ({error}); delete it and download "
                                   f"it again") from error  # fmt: skip
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(root) from error
        raise
    return written


def zip_names(source: Path) -> Iterable[str]:
    try:
        with zipfile.ZipFile(source) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, EOFError) as error:
        raise DataPreparationError(f"{source}: damaged or truncated zip archive ({error})") from error
