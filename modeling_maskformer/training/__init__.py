"""Training: the paper's recipes, model presets, AdamW parameter groups, resumable checkpoints and the
Accelerate training loop behind `scripts/train_maskformer.py`.

    from modeling_maskformer.training import train

    train(["--dataset", "synthetic", "--model_preset", "demo", "--output_dir", "outputs/demo"])
"""

from .checkpoints import (
    STATE_FILE,
    complete_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    save_hub_folder,
)
from .loop import epoch_batches, parse_args, train
from .presets import STAGES, build_model, preset_config
from .recipes import RECIPES, Recipe, parameter_groups, recipe_for

__all__ = [
    "RECIPES",
    "STAGES",
    "STATE_FILE",
    "Recipe",
    "build_model",
    "complete_checkpoints",
    "epoch_batches",
    "parameter_groups",
    "parse_args",
    "preset_config",
    "recipe_for",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_hub_folder",
    "train",
]
