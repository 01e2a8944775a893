"""The web demo: a Gradio app serving one MaskFormer, chosen here (never by a visitor of the page).

    python scripts/app.py                                   # the folder `make demo` writes (outputs/demo)
    python scripts/app.py --model exported/demo-onnx        # an exported folder (onnxruntime / OpenVINO)
    python scripts/app.py --model you/maskformer --host 0.0.0.0 --port 7860   # expose it deliberately

Listens on 127.0.0.1 unless --host (or $GRADIO_SERVER_NAME, set on a Space) says otherwise. Uploads are
limited to --max_upload_mb and --max_megapixels.
On a Hugging Face Space, this file is the Space's `app.py` (see docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os

from modeling_maskformer.cli import run_cli
from modeling_maskformer.inference.app import Limits, build_demo, launch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=os.environ.get("MASKFORMER_MODEL", "outputs/demo"),
        help="model folder, Hub id or exported folder (default: $MASKFORMER_MODEL or outputs/demo)",
    )
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="for exported folders")
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1: localhost only)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free)")
    parser.add_argument("--max_upload_mb", type=float, default=10)
    parser.add_argument("--max_megapixels", type=float, default=25)
    args = parser.parse_args(argv)
    limits = Limits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
    launch(
        build_demo(args.model, precision=args.precision, limits=limits),
        host=args.host,
        port=args.port,
        limits=limits,
    )


if __name__ == "__main__":
    run_cli(main)
