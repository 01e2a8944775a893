"""Convert MaskFormer checkpoints between this package and transformers' or the authors' (detectron2) format.

    python scripts/convert_checkpoint.py --from transformers facebook/maskformer-swin-tiny-ade out/ours
    python scripts/convert_checkpoint.py --to transformers out/ours out/transformers
    python scripts/convert_checkpoint.py --from original model_final_8657a5.pkl out/ours --config swin-tiny-ade

`--from transformers` reads a transformers MaskFormer folder (or a Hub id, when the network is there) with
its preprocessor_config.json (our classes' `from_pretrained` also reads such folders directly, converting on
the fly); `--to transformers` writes a folder that transformers' `MaskFormerForInstanceSegmentation` and
`AutoImageProcessor` load (what `save_pretrained` writes by default when transformers can represent the model); `--from original` reads the authors'
`model_final_*.pkl` (numpy arrays only: other pickled objects are refused before they run). Any missing,
unexpected or mis-shaped weight is an error that names the keys. A user error (missing path, wrong format,
refused pickle) prints one line and exits with status 2; `--debug` shows the traceback. The library:
modeling_maskformer/interop/transformers_weights.py and authors_checkpoints.py.
"""

from __future__ import annotations

import argparse
import logging

from modeling_maskformer.cli import run_cli
from modeling_maskformer.interop.authors_checkpoints import PRESETS, convert_from_original
from modeling_maskformer.interop.transformers_weights import convert_from_transformers, convert_to_transformers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from", dest="source_format", choices=["transformers", "original"], help="convert from this format to ours"
    )
    direction.add_argument("--to", dest="target_format", choices=["transformers"], help="convert ours to this format")
    parser.add_argument("source", help="folder, Hub id (transformers) or .pkl/.pth file (original)")
    parser.add_argument("destination", help="output folder")
    parser.add_argument(
        "--config",
        choices=sorted(PRESETS),
        default=None,
        help="original format: the released model (checks the architecture, sets the processor)",
    )
    parser.add_argument(
        "--num_attention_heads",
        type=int,
        default=None,
        help="original format: attention heads (not stored in the weights; default 8)",
    )
    args = parser.parse_args(argv)
    if (args.config or args.num_attention_heads) and args.source_format != "original":
        parser.error("--config and --num_attention_heads apply to --from original only")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.target_format == "transformers":
        model = convert_to_transformers(args.source, args.destination)
    elif args.source_format == "transformers":
        model, _ = convert_from_transformers(args.source, args.destination)
    else:
        model, _ = convert_from_original(
            args.source, args.destination, preset=args.config, num_attention_heads=args.num_attention_heads
        )
    num_tensors = len(model.state_dict())
    num_parameters = sum(p.numel() for p in model.parameters())
    print(f"Wrote {args.destination}: {num_tensors} tensors, {num_parameters / 1e6:.2f} M parameters")


if __name__ == "__main__":
    run_cli(main)
