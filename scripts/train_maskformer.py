"""Train MaskFormer with Accelerate: the paper's recipe, resumable checkpoints, evaluation, Hub-ready output.

    python scripts/train_maskformer.py --dataset synthetic --model_preset demo --crop_size 128 \
        --max_train_steps 300 --output_dir outputs/first
    python scripts/train_maskformer.py --model_name_or_path outputs/first --dataset my_data \
        --label_convention as_is --max_train_steps 2000 --output_dir outputs/my-model
    python scripts/prepare_data.py ade20k --root data      # -> data/ADEChallengeData2016 (967 MB download)
    accelerate launch --num_processes 8 scripts/train_maskformer.py --dataset data/ADEChallengeData2016 \
        --label_convention ade --model_preset swin-tiny --crop_size 512 --max_train_steps 160000 \
        --output_dir outputs/ade-swin-t

All options: `--help`. The loop is `modeling_maskformer.training.train`.
"""

from modeling_maskformer.cli import run_cli
from modeling_maskformer.training import parse_args, train

if __name__ == "__main__":
    run_cli(lambda: train(parse_args()))
