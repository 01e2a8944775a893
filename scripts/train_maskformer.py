"""Train MaskFormer with Accelerate: the paper's recipe, resumable checkpoints, evaluation, Hub-ready output.

    python scripts/train_maskformer.py --dataset synthetic --model_preset demo --crop_size 128 \
        --max_train_steps 300 --output_dir outputs/first
    python scripts/train_maskformer.py --model_name_or_path outputs/first --dataset my_data \
        --label_convention as_is --max_train_steps 2000 --output_dir outputs/my-model
    python scripts/prepare_data.py ade20k --root data      # -> data/ADEChallengeData2016 (967 MB download)
    accelerate launch --num_processes 8 scripts/train_maskformer.py --dataset data/ADEChallengeData2016 \
        --label_convention ade --model_preset swin-tiny --crop_size 512 --max_train_steps 160000 \
        --output_dir outputs/ade-swin-t

SIGTERM or Ctrl-C saves a checkpoint and exits with status 128 + the signal's number (143, 130), naming the
checkpoint; the same command again resumes from it. All options: `--help`. The loop is
`modeling_maskformer.training.train`.
"""

import sys
from pathlib import Path

from modeling_maskformer.cli import run_cli
from modeling_maskformer.training import TrainingStopped, parse_args, train


def main() -> None:
    try:
        train(parse_args())
    except TrainingStopped as stop:
        print(f"{Path(sys.argv[0]).name}: {stop}", file=sys.stderr)
        raise SystemExit(stop.exit_status) from None


if __name__ == "__main__":
    run_cli(main)
