"""The datasets `prepare.py` prepares (official archives with pinned sizes and SHA-256 sums and where they come from,
the folder under the data root, split sizes; their layouts: docs/data.md) and where a prepared one is found.

NOTE: standard library only, and no import from the package: `prepare_data.py --list` loads this file by its path,
without the package's __init__ (which loads torch and transformers to register the Auto classes: seconds).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DATA_ROOT_ENV = "MASKFORMER_DATA"
MARKER = ".maskformer-prepared.json"  # in a prepared folder: its splits (image counts) and archives
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "validation": "validation"}
# Hub names whose loading script `datasets` >= 4 refuses, and the dataset here that holds the same data.
SCRIPT_DATASETS = {"scene_parse_150": "ade20k", "zhoubolei/scene_parse_150": "ade20k"}


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str | None  # None: no direct download (behind a login); the user passes a local path
    size: int | None  # bytes
    sha256: str | None
    source: str  # where url / size / sha256 come from
    unpinned: str | None = None  # why sha256 (or size) is None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    folder: str
    archives: dict[str, Archive]
    split_counts: dict[str, int]
    counts_source: str
    label_convention: str | None  # the --label_convention the training command needs
    layout: str  # what the prepared folder holds (paper.zoo's rows show it)


CITYSCAPES = "www.cityscapes-dataset.com/downloads"
LOGIN = "downloads need a Cityscapes account; the site's md5 sums are behind the same login"
TFDS = "tensorflow/datasets `tensorflow_datasets/url_checksums/{}` (size and SHA-256 of the official URL)"

DATASETS: dict[str, DatasetSpec] = {
    "ade20k": DatasetSpec(
        name="ade20k",
        title="ADE20K-150 (MIT Scene Parsing benchmark, ADEChallengeData2016)",
        folder="ADEChallengeData2016",
        archives={
            "all": Archive(
                "ADEChallengeData2016.zip",
                "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                967_382_037,
                "7ff1be44964418441f542a7cc1e1a650e7dc0fc275f5d23252bc9bbdbc977b29",
                TFDS.format("ade20k.txt"),
            )
        },
        split_counts={"train": 20_210, "validation": 2_000},
        counts_source="the benchmark's published split sizes (sceneparsing.csail.mit.edu: 20,210 training, 2,000 "
        "validation images), also tfds scene_parse150's splits",
        label_convention="ade",
        layout="ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png} + objectInfo150.txt "
        "(PNG values: 0 = other, 1..150 = classes)",
    ),
    "coco_panoptic": DatasetSpec(
        name="coco_panoptic",
        title="COCO 2017 panoptic segmentation",
        folder="coco",
        archives={
            "annotations": Archive(
                "panoptic_annotations_trainval2017.zip",
                "http://images.cocodataset.org/annotations/panoptic_annotations_trainval2017.zip",
                860_725_834,
                "c05f76d2129b6b561eb70efe16e7006df62f73fb92889132d373b9d90e31a370",
                TFDS.format("coco2017_panoptic.txt"),
            ),
            "validation": Archive(
                "val2017.zip",
                "http://images.cocodataset.org/zips/val2017.zip",
                815_585_330,
                "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
                TFDS.format("coco2017_panoptic.txt"),
            ),
            "train": Archive(
                "train2017.zip",
                "http://images.cocodataset.org/zips/train2017.zip",
                19_336_861_798,
                "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
                TFDS.format("coco2017_panoptic.txt"),
            ),
        },
        split_counts={"train": 118_287, "validation": 5_000},
        counts_source="COCO 2017: 118,287 train and 5,000 val images, each with a panoptic annotation",
        label_convention=None,
        layout="coco/{train2017,val2017}/*.jpg + coco/annotations/panoptic_{train,val}2017.json + "
        "coco/annotations/panoptic_{train,val}2017/*.png",
    ),
    "cityscapes": DatasetSpec(
        name="cityscapes",
        title="Cityscapes (fine annotations)",
        folder="cityscapes",
        archives={
            "annotations": Archive("gtFine_trainvaltest.zip", None, None, None, f"{CITYSCAPES} (241 MB)", LOGIN),
            "images": Archive("leftImg8bit_trainvaltest.zip", None, None, None, f"{CITYSCAPES} (11 GB)", LOGIN),
        },
        split_counts={"train": 2_975, "validation": 500},
        counts_source="the Cityscapes paper / site: 2,975 train and 500 val finely annotated images",
        label_convention="as_is",
        layout="cityscapes/{images,annotations}/{training,validation}/<city>_<seq>_<frame>.png + id2label.json "
        "(gtFine labelIds converted to the 19 trainIds 0..18, 255 ignored)",
    ),
}


def registry_table() -> str:
    """What `scripts/prepare_data.py --list` prints: one Markdown row per archive."""
    lines = ["| dataset | archive | bytes | SHA-256 | source |", "|---|---|---|---|---|"]
    for spec in DATASETS.values():
        for archive in spec.archives.values():
            size = f"{archive.size:,}" if archive.size else "-"
            digest = f"`{archive.sha256}`" if archive.sha256 else f"none: {archive.unpinned}"
            url = archive.url or archive.filename + " (local)"
            lines.append(f"| {spec.name} | {url} | {size} | {digest} | {archive.source} |")
    return "\n".join(lines)


def default_data_root() -> Path:
    """$MASKFORMER_DATA, else ~/.cache/maskformer-hf/datasets."""
    return Path(os.environ.get(DATA_ROOT_ENV) or Path.home() / ".cache" / "maskformer-hf" / "datasets").expanduser()


def read_marker(folder: Path) -> dict | None:
    """The record a finished preparation leaves in `folder` (None: not prepared, or bad JSON)."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def prepared_folder(name: str, data_root: str | Path | None = None, split: str | None = None) -> Path | None:
    """The prepared folder of `name` under `data_root` (default `default_data_root()`), if it holds `split`."""
    folder = Path(data_root or default_data_root()).expanduser() / DATASETS[name].folder
    marker = read_marker(folder)
    if marker is None or (split is not None and SPLIT_ALIASES.get(split, split) not in marker.get("splits", {})):
        return None
    return folder


def prepare_command(name: str, root: str | Path | None = None, splits=None) -> str:
    """The command line that prepares `name` (for messages)."""
    parts = ["python scripts/prepare_data.py", name]
    archives = DATASETS[name].archives.values()
    if archives and all(a.url is None for a in archives):
        parts.append("--archives " + " ".join(f"PATH/{a.filename}" for a in archives))
    if splits and name == "coco_panoptic":
        parts.append("--splits " + ",".join("val" if s == "validation" else s for s in splits))
    parts.append(f"--root {root if root is not None else 'DIR'}")
    return " ".join(parts)
