"""Training: the paper's recipes, model presets, verified resumable checkpoints and the Accelerate training loop
behind `scripts/train_maskformer.py` (`train(["--dataset", "synthetic", "--max_train_steps", "300", ...])`)."""

from .checkpoints import (
    MANIFEST_FILE,
    STATE_FILE,
    CheckpointError,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    save_hub_folder,
    verify_checkpoint,
)
from .interruption import TrainingStopped
from .loop import epoch_batches, parse_args, train
from .presets import build_model, preset_config
from .recipes import RECIPES, Recipe, RecipeChoice, choose_recipe, parameter_groups, recipe_for

__all__ = [
    "MANIFEST_FILE",
    "RECIPES",
    "STATE_FILE",
    "CheckpointError",
    "Recipe",
    "RecipeChoice",
    "TrainingStopped",
    "build_model",
    "choose_recipe",
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
