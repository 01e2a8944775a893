"""Train MaskFormer with Accelerate: the paper's recipe, resumable checkpoints, evaluation, Hub-ready output.

    python scripts/train_maskformer.py --dataset synthetic --model_preset demo --output_dir outputs/demo
    accelerate launch --num_processes 8 scripts/train_maskformer.py --dataset scene_parse_150 \
        --model_preset swin-tiny --crop_size 512 --max_train_steps 160000 --output_dir outputs/ade-swin-t

All options: `--help`. The loop is `modeling_maskformer.training.train`.
"""

from modeling_maskformer.cli import run_cli
from modeling_maskformer.training import parse_args, train

if __name__ == "__main__":
    run_cli(lambda: train(parse_args()))
