"""Preparing the real datasets in one call each: download the official archives (or read local ones), verify them,
extract them safely and leave a folder that `loaders.py` reads. `scripts/prepare_data.py` is the command line.

    from modeling_maskformer.data.prepare import prepare

    result = prepare("ade20k", "data")                   # data/ADEChallengeData2016, 967 MB download
    result = prepare("coco_panoptic", "data", splits=["validation"])   # data/coco: val2017 + panoptic val PNGs
    result = prepare("cityscapes", "data", archives=["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"])

One call at a time per root: a second one stops at once with a line naming the first (`ROOT/.maskformer-prepare.lock`,
held with filelock). What is prepared goes through a temporary sibling folder (`ROOT/.NAME-*.tmp`): extracted, its layout checked (image
count per split, every annotation paired with its image), then renamed into place, and recorded last in
`FOLDER/.maskformer-prepared.json`. A second call finds that record and does nothing. A call that fails (checksum,
truncated archive, full disk, dropped connection) leaves nothing half-extracted in place, and the next call
finishes the job (a partial download resumes; docs/datasets-download.md says how downloads resume, retry and give
up). Ctrl-C or SIGTERM removes the temporary folder, keeps every downloaded byte and says so. Old Hub names whose loading scripts `datasets` no longer runs
(`scene_parse_150`) resolve to the prepared folder (`resolve_name`).
The datasets, their pinned archives and split sizes are declared in `registry.py` (`DATASETS`, also importable
from here).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image

from .download import DataPreparationError, DownloadPolicy, check_url, download, remove_download, write_json
from .extract import extract_zip
from .progress import Progress
from .registry import DATASETS, DatasetSpec

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "MASKFORMER_DATA"
MIRROR_ENV = "MASKFORMER_DATA_MIRROR"
MARKER = ".maskformer-prepared.json"
LOCK = ".maskformer-prepare.lock"  # under the root; its holder is described in LOCK + ".owner.json"
SPLITS = ("train", "validation")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "validation": "validation"}

# Hub names whose loading script `datasets` >= 4 refuses ("Dataset scripts are no longer supported"), and the
# dataset here that holds the same data.
SCRIPT_DATASETS = {"scene_parse_150": "ade20k", "zhoubolei/scene_parse_150": "ade20k"}

# Cityscapes labelIds -> trainIds: cityscapesScripts `helpers/labels.py` (ids 0..33; every id whose trainId is 255
# or -1 is ignored). The 19 names in trainId order come from the same table.
CITYSCAPES_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

_ADE_DIRS = {"train": "training", "validation": "validation"}
_COCO_NAMES = {"train": "train2017", "validation": "val2017"}


def default_data_root() -> Path:
    """$MASKFORMER_DATA, else ~/.cache/maskformer-hf/datasets."""
    return Path(os.environ.get(DATA_ROOT_ENV) or Path.home() / ".cache" / "maskformer-hf" / "datasets").expanduser()


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; prepare_data.py knows {', '.join(DATASETS)}")
    return DATASETS[name]


def normalize_splits(name: str, splits: Sequence[str] | None) -> list[str]:
    spec = get_spec(name)
    if not splits:
        return list(spec.split_counts)
    bad = [s for s in splits if s not in _SPLIT_ALIASES]
    if bad:
        raise ValueError(f"unknown split {bad[0]!r}; use train and/or val")
    return sorted({_SPLIT_ALIASES[s] for s in splits}, key=SPLITS.index)


def prepare_command(name: str, root: str | Path | None = None, splits: Sequence[str] | None = None) -> str:
    """The command line that prepares `name` (for messages)."""
    spec = get_spec(name)
    parts = ["python scripts/prepare_data.py", name]
    if spec.archives and all(a.url is None for a in spec.archives.values()):
        parts.append("--archives " + " ".join(f"PATH/{a.filename}" for a in spec.archives.values()))
    if splits and name == "coco_panoptic":
        parts.append("--splits " + ",".join("val" if s == "validation" else s for s in splits))
    parts.append(f"--root {root if root is not None else 'DIR'}")
    return " ".join(parts)


def read_marker(folder: Path) -> dict | None:
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # written atomically, so only a hand edit breaks it: treated as not prepared


def prepared_folder(name: str, data_root: str | Path | None = None, split: str | None = None) -> Path | None:
    """The prepared folder of `name` under `data_root` (default `default_data_root()`), if it holds `split`."""
    folder = Path(data_root or default_data_root()).expanduser() / get_spec(name).folder
    marker = read_marker(folder)
    if marker is None or (split is not None and _SPLIT_ALIASES.get(split, split) not in marker.get("splits", {})):
        return None
    return folder


def resolve_name(source: str, split: str, data_root: str | Path | None = None) -> Path | None:
    """For a dataset name of this module ("ade20k") or a dead Hub name ("scene_parse_150"): its prepared folder, or
    a FileNotFoundError naming the command that prepares it. None for any other name."""
    name = SCRIPT_DATASETS.get(source, source if source in DATASETS else None)
    if name is None:
        return None
    folder = prepared_folder(name, data_root, split)
    if folder is not None:
        return folder
    root = Path(data_root or default_data_root()).expanduser()
    why = (
        f"{source!r} is a loading-script dataset on the Hub, which the installed `datasets` no longer runs; "
        if source in SCRIPT_DATASETS
        else ""
    )
    raise FileNotFoundError(
        f"{why}the {get_spec(name).title} data is not prepared in {root}: run `{prepare_command(name, root, [split])}` "
        f"(or pass --data_root / set {DATA_ROOT_ENV} to where it is, or --dataset FOLDER)"
    )


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


# --------------------------------------------------------------------------------------------------
# Layout checks (run on the temporary folder before it moves into place, and on a folder found in place).


def check_pairs(images_dir: Path, annotations_dir: Path, expected: int, image_suffix: str, what: str) -> int:
    """`images_dir` holds `expected` images, each with the PNG of the same stem in `annotations_dir`, and back."""
    for folder in (images_dir, annotations_dir):
        if not folder.is_dir():
            raise DataPreparationError(f"{what}: missing folder {folder} after extraction (not the expected layout)")
    images = {p.stem for p in images_dir.iterdir() if p.suffix == image_suffix}
    annotations = {p.stem for p in annotations_dir.iterdir() if p.suffix == ".png"}
    if len(images) != expected:
        raise DataPreparationError(f"{what}: {images_dir} holds {len(images):,} images, expected {expected:,}")
    unpaired = sorted(images ^ annotations)
    if unpaired:
        side = "annotation" if unpaired[0] in images else "image"
        raise DataPreparationError(
            f"{what}: {len(unpaired)} file(s) without their pair, e.g. {unpaired[0]} has no {side}"
        )
    return len(images)


def _check(spec: DatasetSpec, base: Path, split: str) -> int:
    """Verify `split` of the dataset under `base` (the root or the temporary folder); returns its image count."""
    folder, expected = base / spec.folder, spec.split_counts[split]
    what = f"{spec.name} {split}"
    if spec.name == "coco_panoptic":
        from .loaders import load_coco_panoptic_folder  # NOTE: the loader itself pairs JSON, PNGs and images

        name = _COCO_NAMES[split]
        count = sum(1 for p in (folder / name).iterdir() if p.suffix == ".jpg") if (folder / name).is_dir() else 0
        if count != expected:
            raise DataPreparationError(f"{what}: {folder / name} holds {count:,} images, expected {expected:,}")
        try:
            dataset = load_coco_panoptic_folder(folder, split)
        except (FileNotFoundError, ValueError) as error:
            raise DataPreparationError(f"{what}: {error}") from error
        if len(dataset) != expected:
            raise DataPreparationError(f"{what}: {len(dataset):,} annotations, expected {expected:,}")
        return count
    suffix = ".jpg" if spec.name == "ade20k" else ".png"
    return check_pairs(
        folder / "images" / _ADE_DIRS[split], folder / "annotations" / _ADE_DIRS[split], expected, suffix, what
    )


def _items(spec: DatasetSpec, split: str) -> list[str]:
    """What one split adds under the root (renamed into place in this order)."""
    if spec.name == "coco_panoptic":
        name = _COCO_NAMES[split]
        return [f"coco/{name}", f"coco/annotations/panoptic_{name}", f"coco/annotations/panoptic_{name}.json"]
    if spec.name == "ade20k":
        return [spec.folder]  # one archive holds both splits
    return [f"{spec.folder}/{sub}/{_ADE_DIRS[split]}" for sub in ("images", "annotations")]


# --------------------------------------------------------------------------------------------------
# Building one split in a temporary folder.


def _build_ade(spec, temp: Path, archives: dict[str, Path], split: str, progress: bool) -> None:
    extract_zip(archives["all"], temp, progress=progress)
    if not (temp / spec.folder / "objectInfo150.txt").is_file():
        logger.warning("ade20k: no objectInfo150.txt in the archive: class names will be numbers")


def _build_coco(spec, temp: Path, archives: dict[str, Path], split: str, progress: bool) -> None:
    name = _COCO_NAMES[split]
    annotations = temp / "coco" / "annotations"
    wanted = {f"panoptic_{name}.json", f"panoptic_{name}.zip"}
    written = extract_zip(
        archives["annotations"],
        annotations,
        select=lambda n: PurePosixPath(n).name in wanted,
        rename=lambda n: PurePosixPath(n).name,
        progress=progress,
    )
    if sorted(written) != sorted(wanted):
        raise DataPreparationError(f"{archives['annotations']}: expected {sorted(wanted)} in it, found {written}")
    inner = annotations / f"panoptic_{name}.zip"
    extract_zip(
        inner,
        annotations,
        select=lambda n: n.endswith(".png"),
        rename=lambda n: f"panoptic_{name}/{PurePosixPath(n).name}",
        progress=progress,
    )
    inner.unlink()
    extract_zip(
        archives[split],
        temp / "coco",
        select=lambda n: n.endswith(".jpg"),
        rename=lambda n: f"{name}/{PurePosixPath(n).name}",
        progress=progress,
    )


def _build_cityscapes(spec, temp: Path, archives: dict[str, Path], split: str, progress: bool) -> None:
    folder, sub, raw = temp / spec.folder, {"train": "train", "validation": "val"}[split], temp / "raw"
    image_name = re.compile(rf"^leftImg8bit/{sub}/[^/]+/([^/]+)_leftImg8bit\.png$")
    label_name = re.compile(rf"^gtFine/{sub}/[^/]+/([^/]+)_gtFine_labelIds\.png$")
    extract_zip(
        archives["images"],
        folder / "images" / _ADE_DIRS[split],
        select=lambda n: bool(image_name.match(n)),
        rename=lambda n: image_name.match(n).group(1) + ".png",
        progress=progress,
    )
    labels = extract_zip(
        archives["annotations"],
        raw,
        select=lambda n: bool(label_name.match(n)),
        rename=lambda n: label_name.match(n).group(1) + ".png",
        progress=progress,
    )
    lookup = np.full(256, 255, dtype=np.uint8)
    lookup[list(CITYSCAPES_TRAIN_IDS)] = list(CITYSCAPES_TRAIN_IDS.values())
    out = folder / "annotations" / _ADE_DIRS[split]
    out.mkdir(parents=True, exist_ok=True)
    for name in _iterate(labels, progress, "labelIds -> trainIds"):
        with Image.open(raw / name) as image:
            ids = np.asarray(image)
        if ids.ndim != 2:
            raise DataPreparationError(f"{archives['annotations']}: {name} is not a single-channel labelIds PNG")
        Image.fromarray(lookup[ids]).save(out / name)
    shutil.rmtree(raw)
    write_json(folder / "id2label.json", dict(enumerate(CITYSCAPES_CLASSES)))


def _iterate(items: list[str], progress: bool, desc: str):
    with Progress(total=len(items), desc=desc, bar=progress, unit="file") as bar:
        for item in items:
            yield item
            bar.update(1)


_BUILDERS: dict[str, Callable] = {
    "ade20k": _build_ade,
    "coco_panoptic": _build_coco,
    "cityscapes": _build_cityscapes,
}
_SHARED_ITEMS = {"cityscapes": ["cityscapes/id2label.json"]}  # written by every split's build, the same each time


# --------------------------------------------------------------------------------------------------
# The whole preparation.


def _journal(spec: DatasetSpec, root: Path) -> Path:
    return root / f".{spec.name}.moving.json"


def _recover(spec: DatasetSpec, root: Path) -> None:
    """Undo what an interrupted earlier call left: temporary folders, and the items it had begun to move into place
    (its journal lists them before the first move; when the marker already records those splits, the moves
    finished and only the journal is left)."""
    for temp in root.glob(f".{spec.name}-*.tmp"):
        shutil.rmtree(temp, ignore_errors=True)
    journal = _journal(spec, root)
    if not journal.is_file():
        return
    try:
        entry = json.loads(journal.read_text())
    except json.JSONDecodeError:  # killed while writing the journal: nothing was moved yet
        entry = {"splits": [], "items": []}
    recorded = (read_marker(root / spec.folder) or {}).get("splits", {})
    if not entry["splits"] or not all(split in recorded for split in entry["splits"]):
        if entry["items"]:
            logger.warning("%s: removing %s, left by an interrupted earlier run", spec.name, ", ".join(entry["items"]))
        for item in entry["items"]:
            path = root / item
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    journal.unlink()


def _roles(spec: DatasetSpec, splits: list[str]) -> list[str]:
    """The archives (by role) that `splits` need: COCO's images come one archive per split."""
    return ["annotations", *splits] if spec.name == "coco_panoptic" else list(spec.archives)


def check_mirror(mirror: str, origin: str) -> None:
    """`mirror` (given by `origin`: --mirror or $MASKFORMER_DATA_MIRROR) is a base URL this module can fetch from."""
    try:
        check_url(mirror)
    except DataPreparationError as error:
        folder = Path(mirror).expanduser()
        hint = f" (for the folder {folder}: file://{folder.resolve()})" if folder.is_dir() else ""
        raise ValueError(f"{origin}: {error}{hint}") from None
    if urlsplit(mirror).scheme == "file" and not Path(url2pathname(urlsplit(mirror).path)).is_dir():
        raise ValueError(
            f"{origin}: {mirror}: no such folder; a file:// mirror is a folder holding the official paths"
        )


@contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Hold ROOT/.maskformer-prepare.lock (filelock: an OS lock that ends with the process, however it ends) and
    describe the holder beside it; a lock held by another process is a DataPreparationError naming it."""
    lock, owner = FileLock(root / LOCK), root / (LOCK + ".owner.json")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_json_or_none(owner)
        who = (
            f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')}"
            if holder
            else "holder unknown"
        )
        raise DataPreparationError(
            f"{root} is being prepared by another process ({who}; lock {root / LOCK}): wait "
            f"for it to finish (or stop it) and run the same command again, or use another "
            f"--root"
        ) from None
    except PermissionError as error:
        raise DataPreparationError(f"cannot write in {root} ({error.strerror}): choose a writable --root") from error
    try:
        write_json(
            owner,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv),
            },
        )
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _read_json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _archive_paths(spec, splits, root, archives, mirror, policy, progress) -> dict[str, Path]:
    """The archives the splits need, verified: downloaded into ROOT/downloads, or the local paths given."""
    roles = _roles(spec, splits)
    if spec.name == "cityscapes":
        given = {Path(p).name: Path(p).expanduser() for p in archives or ()}
        paths = {}
        for role in roles:
            archive = spec.archives[role]
            path = given.get(archive.filename)
            if path is None or not path.is_file():
                raise FileNotFoundError(
                    f"cityscapes: {archive.filename} {'not found at ' + str(path) if path else 'not given'}; "
                    f"{archive.unpinned}, so download it there and pass it: {prepare_command('cityscapes')}"
                )
            paths[role] = path
        return paths
    if archives:
        raise ValueError(f"{spec.name} is downloaded from its official site; --archives is for cityscapes")
    paths = {}
    for role in roles:
        archive = spec.archives[role]
        url = archive.url if not mirror else mirror.rstrip("/") + urlsplit(archive.url).path
        logger.info("%s: %s (%s bytes)", spec.name, url, f"{archive.size:,}" if archive.size else "size unknown")
        paths[role] = download(
            url,
            root / "downloads" / archive.filename,
            size=archive.size,
            sha256=archive.sha256,
            policy=policy,
            progress=progress,
        )
    return paths


def _install(
    spec: DatasetSpec, root: Path, paths: dict[str, Path], unit: list[str], marker: dict, progress: bool
) -> None:
    """Build the splits of `unit` in a temporary folder, verify them, list them in the journal, rename them into
    place and record them in the marker (last)."""
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
            f"{spec.name}: interrupted while extracting {', '.join(unit)}; its temporary folder is "
            f"removed and the verified archives stay in {where}: run the same command again to "
            f"finish"
        ) from interrupt
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _leftovers(spec: DatasetSpec, root: Path) -> bool:
    """What an interrupted earlier call may have left for `_recover`."""
    return _journal(spec, root).exists() or any(root.glob(f".{spec.name}-*.tmp"))


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
        mirror: a base URL serving the official paths, http(s):// or file:// (default $MASKFORMER_DATA_MIRROR, else
            the official sites).
        keep_archives: keep the downloads in ROOT/downloads after extraction (default: delete them).
        download_policy: retries, timeouts and the low-speed limit of the downloads (default `DownloadPolicy()`).
        progress: bars on a terminal; off, or when stderr is not a terminal, a plain log line every 30 s instead.
    """
    spec = get_spec(name)
    splits = normalize_splits(name, splits)
    if spec.name == "ade20k":
        splits = list(SPLITS)
    if any(archive.url for archive in spec.archives.values()):
        origin = "--mirror" if mirror else f"${MIRROR_ENV}"
        mirror = mirror or os.environ.get(MIRROR_ENV)
        if mirror:
            check_mirror(mirror, origin)
    root = Path(root or default_data_root()).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / spec.folder
    marker = read_marker(folder)
    if marker and all(split in marker["splits"] for split in splits) and not _leftovers(spec, root):
        return PrepareResult(name, folder, {s: marker["splits"][s] for s in splits}, already_prepared=True)
    with root_lock(root):
        return _prepare_locked(spec, root, splits, archives, mirror, keep_archives, download_policy, progress)


def _prepare_locked(spec, root, splits, archives, mirror, keep_archives, policy, progress) -> PrepareResult:
    name, folder = spec.name, root / spec.folder
    _recover(spec, root)
    marker = read_marker(folder) or {"dataset": name, "splits": {}, "archives": {}}
    done = {split: marker["splits"][split] for split in splits if split in marker["splits"]}
    if len(done) == len(splits):
        return PrepareResult(name, folder, done, already_prepared=True)
    todo = [split for split in splits if split not in done]

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
        paths = _archive_paths(spec, todo, root, archives, mirror, policy, progress)
        units = [todo] if spec.name == "ade20k" else [[split] for split in todo]  # ADE: one archive, both splits
        for unit in units:
            _install(spec, root, paths, unit, marker, progress)
        if not keep_archives and spec.name != "cityscapes":  # never delete the user's own files
            for path in paths.values():
                remove_download(path)
    write_json(folder / MARKER, marker)
    return PrepareResult(name, folder, {split: marker["splits"][split] for split in splits}, already_prepared=False)
