"""Download and prepare a real dataset in the folder layout the training and evaluation programs read.

    python scripts/prepare_data.py ade20k --root data                  # 967 MB -> data/ADEChallengeData2016
    python scripts/prepare_data.py coco_panoptic --splits val --root data   # 861 MB + 816 MB -> data/coco
    python scripts/prepare_data.py coco_panoptic --root data           # + train2017.zip, 19.3 GB
    python scripts/prepare_data.py cityscapes --archives ~/Downloads/gtFine_trainvaltest.zip \\
        ~/Downloads/leftImg8bit_trainvaltest.zip --root data          # Cityscapes needs a login: local archives
    python scripts/prepare_data.py --list                              # the archives, sizes and SHA-256 sums

Each archive is checked against its pinned size and SHA-256, a partial download resumes (HTTP Range), extraction
refuses entries that would leave the folder, and the layout is verified (images per split, every annotation paired
with its image) before it is renamed into place. A second run does nothing and says so. --root defaults to
$MASKFORMER_DATA, else ~/.cache/maskformer-hf/datasets; --mirror (or $MASKFORMER_DATA_MIRROR) takes a base URL that
serves the official paths.
"""

from __future__ import annotations

import argparse
import logging

from modeling_maskformer.cli import run_cli
from modeling_maskformer.data.prepare import DATASETS, PrepareResult, default_data_root, prepare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", nargs="?", choices=list(DATASETS), help="the dataset")
    parser.add_argument(
        "--root", default=None, help=f"where the dataset folder goes (default {default_data_root()})"
    )
    parser.add_argument(
        "--splits", default=None, help="comma-separated: train,val (default both; coco_panoptic, cityscapes)"
    )
    parser.add_argument("--archives", nargs="+", default=None, help="cityscapes: the local zip files")
    parser.add_argument(
        "--mirror", default=None, help="base URL serving the official paths instead of the official sites"
    )
    parser.add_argument(
        "--keep_archives", action="store_true", help="keep the downloaded zips in ROOT/downloads"
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="resumes of a dropped connection before giving up"
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--list", action="store_true", help="print the archives, their sizes and checksums, and exit"
    )
    args = parser.parse_args(argv)
    if not args.list and not args.name:
        parser.error("give a dataset name (or --list)")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    if args.name == "ade20k" and args.splits:
        parser.error("ade20k comes as one archive holding both splits: drop --splits")
    return args


def registry_table() -> str:
    lines = ["| dataset | archive | bytes | SHA-256 | source |", "|---|---|---|---|---|"]
    for spec in DATASETS.values():
        for archive in spec.archives.values():
            size = f"{archive.size:,}" if archive.size else "-"
            digest = f"`{archive.sha256}`" if archive.sha256 else f"none: {archive.unpinned}"
            lines.append(f"| {spec.name} | {archive.url or archive.filename + ' (local)'} | {size} | {digest} | "
                         f"{archive.source} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> PrepareResult | None:
    args = parse_args(argv)
    if args.list:
        print(registry_table())
        return None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = prepare(
        args.name, args.root, splits=args.splits.split(",") if args.splits else None, archives=args.archives,
        mirror=args.mirror, keep_archives=args.keep_archives, retries=args.retries, progress=not args.no_progress,
    )  # fmt: skip
    print(result.summary())
    spec = DATASETS[args.name]
    convention = f" --label_convention {spec.label_convention}" if spec.label_convention else ""
    print(f"use it with: --dataset {result.folder}{convention}")
    return result


if __name__ == "__main__":
    run_cli(main)
