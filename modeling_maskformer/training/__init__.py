"""Training: the paper's recipes, model presets, AdamW parameter groups, verified resumable checkpoints and the
Accelerate training loop behind `scripts/train_maskformer.py`.

    from modeling_maskformer.training import train

    train(["--dataset", "synthetic", "--model_preset", "demo", "--crop_size", "128", "--max_train_steps", "300",
           "--output_dir", "outputs/first"])
"""

from .checkpoints import (
    MANIFEST_FILE,
    STATE_FILE,
    CheckpointError,
    complete_checkpoints,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    save_hub_folder,
    verify_checkpoint,
)
from .interruption import TrainingStopped
from .loop import epoch_batches, parse_args, train
from .presets import STAGES, base_processor, build_model, preset_config
from .recipes import RECIPES, Recipe, RecipeChoice, choose_recipe, parameter_groups, recipe_for

__all__ = [
    "MANIFEST_FILE",
    "RECIPES",
    "STAGES",
    "STATE_FILE",
    "CheckpointError",
    "Recipe",
    "RecipeChoice",
    "TrainingStopped",
    "base_processor",
    "build_model",
    "choose_recipe",
    "complete_checkpoints",
    "epoch_batches",
    "list_checkpoints",
    "parameter_groups",
    "parse_args",
    "preset_config",
    "recipe_for",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_hub_folder",
    "train",
    "verify_checkpoint",
]
