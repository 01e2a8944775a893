"""Preparing the real datasets in one call each: download the official archives (or read local ones), verify them,
extract them into a temporary sibling folder, check the layout and rename it into place, recorded last in
`FOLDER/.maskformer-prepared.json`. One call at a time per root (filelock); a failed or interrupted call leaves
nothing half-extracted and keeps every downloaded byte. `scripts/prepare_data.py` is the command line."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image

from ..errors import InvalidInputError, MissingInputError
from .download import DownloadPolicy, check_url, download, remove_download
from .loaders import load_coco_panoptic_folder
from .progress import DataPreparationError, check_free_space, disk_full, progress_bar, read_json_or_empty, write_json
from .registry import (
    DATASETS,
    MARKER,
    SPLIT_ALIASES,
    DatasetSpec,
    default_data_root,
    prepare_command,
    prepared_folder,
    read_marker,
)

__all__ = ["DATASETS", "MARKER", "PrepareResult", "prepare", "prepared_folder"]

logger = logging.getLogger(__name__)

MIRROR_ENV = "MASKFORMER_DATA_MIRROR"
LOCK = ".maskformer-prepare.lock"  # under the root; its holder is described in LOCK + ".owner.json"
SPLITS = ("train", "validation")

# Cityscapes labelIds -> trainIds: cityscapesScripts `helpers/labels.py` (ids 0..33; every id whose trainId is 255
# or -1 is ignored). The 19 names in trainId order come from the same table.
CITYSCAPES_TRAIN_IDS = dict(zip((7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33), range(19)))
CITYSCAPES_CLASSES = tuple(
    "road,sidewalk,building,wall,fence,pole,traffic light,traffic sign,vegetation,terrain,sky,person,rider,car,"
    "truck,bus,train,motorcycle,bicycle".split(",")
)

_ADE_DIRS = {"train": "training", "validation": "validation"}
_COCO_NAMES = {"train": "train2017", "validation": "val2017"}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise InvalidInputError(f"unknown dataset {name!r}; prepare_data.py knows {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass
class PrepareResult:
    name: str
    folder: Path
    splits: dict[str, int]  # images per split, as verified
    already_prepared: bool

    def summary(self) -> str:
        counts = ", ".join(f"{count:,} {split}" for split, count in self.splits.items())
        if self.already_prepared:
            return f"{self.name}: already prepared in {self.folder} ({counts} images); nothing to do"
        return f"{self.name}: prepared {self.folder} ({counts} images, layout verified)"


def _check(spec: DatasetSpec, base: Path, split: str) -> int:
    """Verify `split` of the dataset under `base` (the root or the temporary folder); returns its image count."""
    folder, expected = base / spec.folder, spec.split_counts[split]
    what = f"{spec.name} {split}"
    if spec.name == "coco_panoptic":
        name = _COCO_NAMES[split]
        count = sum(1 for p in (folder / name).iterdir() if p.suffix == ".jpg") if (folder / name).is_dir() else 0
        if count != expected:
            raise DataPreparationError(f"{what}: {folder / name} holds {count:,} images, expected {expected:,}")
        try:  # NOTE: the loader itself pairs JSON, PNGs and images
            dataset = load_coco_panoptic_folder(folder, split)
        except (FileNotFoundError, ValueError) as error:
            raise DataPreparationError(f"{what}: {error}") from error
        if len(dataset) != expected:
            raise DataPreparationError(f"{what}: {len(dataset):,} annotations, expected {expected:,}")
        return count
    # Every image has the PNG of the same stem, and back.
    images_dir, annotations_dir = (folder / sub / _ADE_DIRS[split] for sub in ("images", "annotations"))
    if missing := [str(d) for d in (images_dir, annotations_dir) if not d.is_dir()]:
        raise DataPreparationError(f"{what}: missing folder {missing[0]} (not the expected layout)")
    suffix = ".jpg" if spec.name == "ade20k" else ".png"
    images = {p.stem for p in images_dir.iterdir() if p.suffix == suffix}
    annotations = {p.stem for p in annotations_dir.iterdir() if p.suffix == ".png"}
    if len(images) != expected:
        raise DataPreparationError(f"{what}: {images_dir} holds {len(images):,} images, expected {expected:,}")
    if unpaired := sorted(images ^ annotations):
        side = "annotation" if unpaired[0] in images else "image"
        raise DataPreparationError(
            f"{what}: {len(unpaired)} file(s) without their pair, e.g. {unpaired[0]} has no {side}"
        )
    return len(images)


def _items(spec: DatasetSpec, split: str) -> list[str]:
    """What one split adds under the root (renamed into place in this order)."""
    if spec.name == "coco_panoptic":
        name = _COCO_NAMES[split]
        return [f"coco/{name}", f"coco/annotations/panoptic_{name}", f"coco/annotations/panoptic_{name}.json"]
    if spec.name == "ade20k":
        return [spec.folder]  # one archive holds both splits
    return [f"{spec.folder}/{sub}/{_ADE_DIRS[split]}" for sub in ("images", "annotations")]


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


def _extract(
    source: Path, root: Path, pattern: str = "(?s).*", name: str = r"\g<0>", progress: bool = True
) -> list[str]:
    """The entries of `source` that match `pattern` in full, into `root` under `name` (a `Match.expand` template),
    after checking every entry; returns the names written. A damaged archive or a full disk is a
    `DataPreparationError`; what was written stays under `root`, which the caller discards."""
    regex, written = re.compile(pattern), []
    root.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(source) as archive:
            _check_members(archive, source, root)
            members = [(i, m) for i in archive.infolist() if not i.is_dir() and (m := regex.fullmatch(i.filename))]
            total = sum(info.file_size for info, _ in members)
            check_free_space(root, total)
            with progress_bar(total=total, desc=f"extracting {source.name}", bar=progress) as bar:
                for info, match in members:
                    target = root / PurePosixPath(match.expand(name))
                    if not target.resolve().is_relative_to(root.resolve()):  # the new name must not escape either
                        raise DataPreparationError(f"{source}: entry {info.filename!r} renamed outside the target")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    written.append(match.expand(name))
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


def _build_ade(spec, temp: Path, archives: dict[str, Path], split: str, progress: bool) -> None:
    _extract(archives["all"], temp, progress=progress)
    if not (temp / spec.folder / "objectInfo150.txt").is_file():
        logger.warning("ade20k: no objectInfo150.txt in the archive: class names will be numbers")


def _build_coco(spec, temp: Path, archives: dict[str, Path], split: str, progress: bool) -> None:
    name = _COCO_NAMES[split]
    annotations = temp / "coco" / "annotations"
    wanted = {f"panoptic_{name}.json", f"panoptic_{name}.zip"}
    written = _extract(
        archives["annotations"], annotations, rf"(?:.*/)?(panoptic_{name}\.(?:json|zip))", r"\1", progress
    )
    if sorted(written) != sorted(wanted):
        raise DataPreparationError(f"{archives['annotations']}: expected {sorted(wanted)} in it, found {written}")
    inner = annotations / f"panoptic_{name}.zip"
    _extract(inner, annotations, r"(?:.*/)?([^/]*\.png)", rf"panoptic_{name}/\1", progress)
    inner.unlink()
    _extract(archives[split], temp / "coco", r"(?:.*/)?([^/]*\.jpg)", rf"{name}/\1", progress)


def _build_cityscapes(spec, temp: Path, archives: dict[str, Path], split: str, progress: bool) -> None:
    folder, sub, raw = temp / spec.folder, {"train": "train", "validation": "val"}[split], temp / "raw"
    images = rf"leftImg8bit/{sub}/[^/]+/([^/]+)_leftImg8bit\.png"
    _extract(archives["images"], folder / "images" / _ADE_DIRS[split], images, r"\1.png", progress)
    labels = _extract(
        archives["annotations"], raw, rf"gtFine/{sub}/[^/]+/([^/]+)_gtFine_labelIds\.png", r"\1.png", progress
    )
    lookup = np.full(256, 255, dtype=np.uint8)
    lookup[list(CITYSCAPES_TRAIN_IDS)] = list(CITYSCAPES_TRAIN_IDS.values())
    out = folder / "annotations" / _ADE_DIRS[split]
    out.mkdir(parents=True, exist_ok=True)
    for name in progress_bar(
        iterable=labels, total=len(labels), desc="labelIds -> trainIds", bar=progress, unit="file"
    ):
        with Image.open(raw / name) as image:
            ids = np.asarray(image)
        if ids.ndim != 2:
            raise DataPreparationError(f"{archives['annotations']}: {name} is not a single-channel labelIds PNG")
        Image.fromarray(lookup[ids]).save(out / name)
    shutil.rmtree(raw)
    write_json(folder / "id2label.json", dict(enumerate(CITYSCAPES_CLASSES)))


_BUILDERS: dict[str, Callable] = {"ade20k": _build_ade, "coco_panoptic": _build_coco, "cityscapes": _build_cityscapes}
_SHARED_ITEMS = {"cityscapes": ["cityscapes/id2label.json"]}  # written by every split's build, the same each time


def _journal(spec: DatasetSpec, root: Path) -> Path:
    return root / f".{spec.name}.moving.json"


def _recover(spec: DatasetSpec, root: Path) -> None:
    """Undo what an interrupted earlier call left: temporary folders, and the items its journal lists as begun to move
    into place (unless the marker records those splits: then the moves finished)."""
    for temp in root.glob(f".{spec.name}-*.tmp"):
        shutil.rmtree(temp, ignore_errors=True)
    journal = _journal(spec, root)
    # A journal cut short by a kill reads as empty: nothing was moved yet.
    entry = {"splits": [], "items": [], **read_json_or_empty(journal)}
    recorded = (read_marker(root / spec.folder) or {}).get("splits", {})
    if entry["items"] and not (entry["splits"] and all(split in recorded for split in entry["splits"])):
        logger.warning("%s: removing %s, left by an interrupted earlier run", spec.name, ", ".join(entry["items"]))
        for item in entry["items"]:
            path = root / item
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    journal.unlink(missing_ok=True)


@contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Hold ROOT/.maskformer-prepare.lock (filelock: an OS lock that ends with the process, however it ends), its
    holder described beside it; a lock held by another process is a DataPreparationError naming it."""
    lock, owner = FileLock(root / LOCK), root / (LOCK + ".owner.json")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = read_json_or_empty(owner)
        who = "pid {pid} on {host} since {since}: {command}".format_map(holder) if holder else "holder unknown"
        raise DataPreparationError(
            f"{root} is being prepared by another process ({who}; lock {root / LOCK}): wait for it to finish (or stop "
            "it) and run the same command again, or use another --root"
        ) from None
    except PermissionError as error:
        raise DataPreparationError(f"cannot write in {root} ({error.strerror}): choose a writable --root") from error
    try:
        since, command = time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(sys.argv)
        write_json(owner, {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command})
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _archive_paths(spec, splits, root, archives, mirror, policy, progress) -> dict[str, Path]:
    """The archives the splits need, verified: downloaded into ROOT/downloads, or the local paths given."""
    roles = ["annotations", *splits] if spec.name == "coco_panoptic" else list(spec.archives)  # COCO: images by split
    if spec.name == "cityscapes":
        given = {Path(p).name: Path(p).expanduser() for p in archives or ()}
        paths = {role: given.get(spec.archives[role].filename) for role in roles}
        for role, path in paths.items():
            if path is None or not path.is_file():
                archive = spec.archives[role]
                raise MissingInputError(
                    f"cityscapes: {archive.filename} {'not found at ' + str(path) if path else 'not given'}; "
                    f"{archive.unpinned}, so download it there and pass it: {prepare_command('cityscapes')}"
                )
        return paths
    if archives:
        raise InvalidInputError(f"{spec.name} is downloaded from its official site; --archives is for cityscapes")
    paths = {}
    for role in roles:
        archive = spec.archives[role]
        url = archive.url if not mirror else mirror.rstrip("/") + urlsplit(archive.url).path
        logger.info("%s: %s (%s bytes)", spec.name, url, f"{archive.size:,}" if archive.size else "size unknown")
        destination = root / "downloads" / archive.filename
        paths[role] = download(
            url, destination, size=archive.size, sha256=archive.sha256, policy=policy, progress=progress
        )
    return paths


def _install(spec, root: Path, paths: dict[str, Path], unit: list[str], marker: dict, progress: bool) -> None:
    """Build and verify the splits of `unit` in a temporary folder, list them in the journal, rename them into place
    and record them in the marker (last)."""
    temp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", suffix=".tmp", dir=root))
    try:
        _BUILDERS[spec.name](spec, temp, paths, unit[0], progress)
        counts = {split: _check(spec, temp, split) for split in unit}
        items = list(dict.fromkeys(item for split in unit for item in _items(spec, split)))
        items += _SHARED_ITEMS.get(spec.name, [])
        journal = _journal(spec, root)
        write_json(journal, {"splits": unit, "items": items})
        for item in items:
            (root / item).parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp / item, root / item)
        marker["splits"].update(counts)
        marker["archives"].update({path.name: spec.archives[role].sha256 for role, path in paths.items()})
        write_json(root / spec.folder / MARKER, marker)
        journal.unlink()
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM through modeling_maskformer.cli
        where = root / "downloads" if spec.name != "cityscapes" else "their folders"
        raise type(interrupt)(
            f"{spec.name}: interrupted while extracting {', '.join(unit)}; its temporary folder is removed and the "
            f"verified archives stay in {where}: run the same command again to finish"
        ) from interrupt
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def prepare(
    name: str,
    root: str | Path | None = None,
    *,
    splits: Sequence[str] | None = None,
    archives: Sequence[str | Path] | None = None,
    mirror: str | None = None,
    keep_archives: bool = False,
    download_policy: DownloadPolicy | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Prepare `name` ("ade20k", "coco_panoptic", "cityscapes") under `root` (default `default_data_root()`).

    Args:
        splits: "train" and/or "val" (default both; ADE20K's one archive always gives both).
        archives: cityscapes only: the local gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip.
        mirror: a base URL (http(s):// or file://) serving the official paths (default $MASKFORMER_DATA_MIRROR).
        keep_archives: keep the downloads in ROOT/downloads after extraction.
        progress: bars on a terminal; off, or when stderr is not a terminal, a plain log line every 30 s instead.
    """
    spec = get_spec(name)
    if bad := [s for s in splits or () if s not in SPLIT_ALIASES]:
        raise InvalidInputError(f"unknown split {bad[0]!r}; use train and/or val")
    splits = sorted({SPLIT_ALIASES[s] for s in splits}, key=SPLITS.index) if splits else list(spec.split_counts)
    if spec.name == "ade20k":
        splits = list(SPLITS)
    origin = "--mirror" if mirror else f"${MIRROR_ENV}"
    mirror = (mirror or os.environ.get(MIRROR_ENV)) if any(a.url for a in spec.archives.values()) else None
    if mirror:  # checked before anything starts
        try:
            check_url(mirror)
        except DataPreparationError as error:
            folder = Path(mirror).expanduser()
            hint = f" (for the folder {folder}: file://{folder.resolve()})" if folder.is_dir() else ""
            raise InvalidInputError(f"{origin}: {error}{hint}") from None
        if urlsplit(mirror).scheme == "file" and not Path(url2pathname(urlsplit(mirror).path)).is_dir():
            raise InvalidInputError(
                f"{origin}: {mirror}: no such folder; a file:// mirror is a folder holding the official paths"
            )
    root = Path(root or default_data_root()).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / spec.folder
    marker = read_marker(folder)
    leftovers = _journal(spec, root).exists() or any(root.glob(f".{spec.name}-*.tmp"))  # for `_recover`
    if marker and all(split in marker["splits"] for split in splits) and not leftovers:
        return PrepareResult(name, folder, {s: marker["splits"][s] for s in splits}, already_prepared=True)
    with root_lock(root):
        _recover(spec, root)
        marker = read_marker(folder) or {"dataset": name, "splits": {}, "archives": {}}
        if not (todo := [split for split in splits if split not in marker["splits"]]):
            return PrepareResult(name, folder, {s: marker["splits"][s] for s in splits}, already_prepared=True)

        # A folder already in place without our record (extracted by hand): verified and adopted, or refused.
        found = [split for split in todo if any((root / item).exists() for item in _items(spec, split))]
        for split in found:
            try:
                marker["splits"][split] = _check(spec, root, split)
                logger.warning("%s %s: found in %s and verified; recorded as prepared", name, split, folder)
            except (DataPreparationError, OSError) as error:
                raise DataPreparationError(
                    f"{error}; {folder} exists but was not prepared here: move it away and run the same command again"
                ) from error
        todo = [split for split in todo if split not in found]

        if todo:
            paths = _archive_paths(spec, todo, root, archives, mirror, download_policy, progress)
            units = [todo] if spec.name == "ade20k" else [[split] for split in todo]  # ADE: one archive, both splits
            for unit in units:
                _install(spec, root, paths, unit, marker, progress)
            if not keep_archives and spec.name != "cityscapes":  # never delete the user's own files
                for path in paths.values():
                    remove_download(path)
        write_json(folder / MARKER, marker)
        return PrepareResult(
            name, folder, {split: marker["splits"][split] for split in splits}, already_prepared=False
        )
