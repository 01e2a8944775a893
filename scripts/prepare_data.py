"""Download and prepare a real dataset in the folder layout the training and evaluation programs read.

    python scripts/prepare_data.py ade20k --root data                  # 967 MB -> data/ADEChallengeData2016
    python scripts/prepare_data.py coco_panoptic --splits val --root data   # 861 MB + 816 MB -> data/coco
    python scripts/prepare_data.py coco_panoptic --root data           # + train2017.zip, 19.3 GB
    python scripts/prepare_data.py cityscapes --archives ~/Downloads/gtFine_trainvaltest.zip \\
        ~/Downloads/leftImg8bit_trainvaltest.zip --root data          # Cityscapes needs a login: local archives
    python scripts/prepare_data.py --list                              # the archives, sizes and SHA-256 sums

Each archive is checked against its pinned size and SHA-256, a partial download resumes (HTTP Range), extraction
refuses entries that would leave the folder, and the layout is verified (images per split, every annotation paired
with its image) before it is renamed into place. A second run does nothing and says so; one run at a time per
--root. A failed or interrupted run (Ctrl-C, SIGTERM) keeps what it downloaded: run the same command again.
--root defaults to $MASKFORMER_DATA, else ~/.cache/maskformer-hf/datasets; --mirror (or $MASKFORMER_DATA_MIRROR)
takes a base URL (http, https or file) that serves the official paths. Retries, the low-speed limit and the logs:
docs/datasets-download.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import sys
from pathlib import Path
from types import ModuleType

REGISTRY = "modeling_maskformer.data.registry"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked with the standard library alone (so --help answers before torch loads)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the dataset: ade20k, coco_panoptic or cityscapes")
    parser.add_argument(
        "--root",
        default=None,
        help="where the dataset folder goes (default $MASKFORMER_DATA, else ~/.cache/maskformer-hf/datasets)",
    )
    parser.add_argument(
        "--splits", default=None, help="comma-separated: train,val (default both; coco_panoptic, cityscapes)"
    )
    parser.add_argument("--archives", nargs="+", default=None, help="cityscapes: the local zip files")
    parser.add_argument(
        "--mirror",
        default=None,
        help="base URL (http://, https:// or file://) serving the official paths, instead of the official sites",
    )
    parser.add_argument("--keep_archives", action="store_true", help="keep the downloaded zips in ROOT/downloads")
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries of a failed attempt (dropped connection, "
        "timeout, stall, HTTP 408/429/5xx) per archive before giving up; a rerun resumes",
    )
    parser.add_argument(
        "--low_speed_limit",
        type=int,
        default=1024,
        help="bytes/s: an attempt slower than this on "
        "average over --low_speed_time seconds is ended and retried (0: never)",
    )
    parser.add_argument("--low_speed_time", type=float, default=60.0, help="seconds (see --low_speed_limit)")
    parser.add_argument(
        "--no_progress",
        action="store_true",
        help="no progress bars: a plain log line every 30 s instead (as when stderr is not a terminal)",
    )
    parser.add_argument("--list", action="store_true", help="print the archives, their sizes and checksums, and exit")
    parser.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    if not args.list and not args.name:
        parser.error("give a dataset name (or --list)")
    if args.retries < 0:
        parser.error("--retries must be >= 0")
    if args.low_speed_limit < 0 or not args.low_speed_time > 0:
        parser.error("--low_speed_limit must be >= 0 and --low_speed_time > 0")
    if args.name == "ade20k" and args.splits:
        parser.error("ade20k comes as one archive holding both splits: drop --splits")
    return args


def load_registry() -> ModuleType:
    """`modeling_maskformer/data/registry.py`, read from its file when the package is not imported yet: importing it
    by name would first run the package's __init__, which loads torch and transformers (seconds) to register the Auto
    classes. The file imports only the standard library."""
    if REGISTRY in sys.modules:
        return sys.modules[REGISTRY]
    package = importlib.util.find_spec("modeling_maskformer")  # a top-level name: found, not run
    if package is None or package.origin is None:
        raise ModuleNotFoundError("modeling_maskformer is not installed: run pip install -e . in the repository")
    spec = importlib.util.spec_from_file_location(REGISTRY, Path(package.origin).parent / "data" / "registry.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[REGISTRY] = module  # as an import would: dataclasses look the module up there
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    # NOTE: checked before the library is imported: importing modeling_maskformer loads torch and transformers (to
    # register the Auto classes), seconds that --help, a mistyped option and --list do not need.
    if parse_args().list:
        print(load_registry().registry_table())
        raise SystemExit(0)

from modeling_maskformer.cli import run_cli  # noqa: E402
from modeling_maskformer.data.download import DownloadPolicy  # noqa: E402
from modeling_maskformer.data.prepare import PrepareResult, prepare  # noqa: E402
from modeling_maskformer.data.registry import DATASETS, registry_table  # noqa: E402


def main(argv: list[str] | None = None) -> PrepareResult | None:
    args = parse_args(argv)
    if args.list:
        print(registry_table())
        return None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    policy = DownloadPolicy(
        retries=args.retries, low_speed_limit=args.low_speed_limit, low_speed_time=args.low_speed_time
    )
    result = prepare(
        args.name,
        args.root,
        splits=args.splits.split(",") if args.splits else None,
        archives=args.archives,
        mirror=args.mirror,
        keep_archives=args.keep_archives,
        download_policy=policy,
        progress=not args.no_progress,
    )
    print(result.summary())
    spec = DATASETS[args.name]
    convention = f" --label_convention {spec.label_convention}" if spec.label_convention else ""
    print(f"use it with: --dataset {shlex.quote(str(result.folder))}{convention}")
    return result


if __name__ == "__main__":
    run_cli(main)
