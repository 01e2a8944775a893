"""Reproduce a row of the MaskFormer model zoo from its transformers checkpoint on the Hub: convert it, evaluate it
on the row's dataset with the authors' settings, and print the paper's number against the measured one.

    python scripts/reproduce.py swin-large-ade --tta --download   # ADE20K val, multi-scale + flip: paper 55.6 mIoU
    python scripts/reproduce.py swin-tiny-ade --limit 50 --download   # a quick look at the first 50 images
    python scripts/reproduce.py swin-base-coco --download     # COCO panoptic val2017 (1.7 GB of archives)
    python scripts/reproduce.py swin-base-coco --dataset /data/coco   # a folder prepared before
    python scripts/reproduce.py --list                        # the rows

Needs the network (the checkpoint; with --download the row's data, prepared like scripts/prepare_data.py into
--data_root) or local folders (--model, --dataset), and for a full run a GPU.
Writes <output_dir>/reproduction.json; with --model_card also the converted folder's README.md with `model-index`
entries for the paper's and the measured figure.
"""

from __future__ import annotations

import argparse
import logging

from modeling_maskformer.cli import run_cli
from modeling_maskformer.paper.reproduction import reproduce, summary_line
from modeling_maskformer.paper.zoo import markdown_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="?", help="a model-zoo row (see --list), e.g. swin-large-ade, or its Hub id")
    parser.add_argument("--list", action="store_true", help="print the model-zoo table and exit")
    parser.add_argument("--tta", action="store_true", help="multi-scale + flip, the authors' TEST.AUG (semantic rows)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--model", default=None, help="a local transformers MaskFormer folder instead of the Hub id")
    parser.add_argument(
        "--dataset", default=None, help="a local dataset folder (or `datasets` name) instead of the row's"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="prepare the row's data when it is missing (no prompt), as scripts/prepare_data.py does",
    )
    parser.add_argument(
        "--data_root",
        default=None,
        help="where the prepared datasets are (default $MASKFORMER_DATA, else ~/.cache/maskformer-hf/datasets)",
    )
    parser.add_argument(
        "--mirror", default=None, help="with --download: a base URL serving the official archive paths"
    )
    parser.add_argument(
        "--output_dir", default=None, help="converted model, JSON, model card (default outputs/reproduce/ROW)"
    )
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: a GPU; the CPU only with --limit)")
    parser.add_argument("--batch_size", type=int, default=1, help="images of one padded size per forward pass")
    parser.add_argument(
        "--model_card", action="store_true", help="write model-index entries into the folder's README.md"
    )
    args = parser.parse_args(argv)
    if not args.list and not args.row:
        parser.error("give a ROW (see --list)")
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.list:
        print(markdown_table())
        return None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = reproduce(
        args.row,
        tta=args.tta,
        limit=args.limit,
        model=args.model,
        dataset=args.dataset,
        output_dir=args.output_dir,
        device=args.device,
        batch_size=args.batch_size,
        model_card=args.model_card,
        download=args.download,
        data_root=args.data_root,
        mirror=args.mirror,
    )
    print(summary_line(report))
    print(f"written: {report['converted_folder']}/reproduction.json" + (" and README.md" if args.model_card else ""))
    return report


if __name__ == "__main__":
    run_cli(main)
