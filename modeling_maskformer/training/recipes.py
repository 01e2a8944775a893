"""The paper's optimisation recipes (Sec. 4.1 and App. A), keyed by backbone type, and AdamW parameter groups."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..configuration import MaskFormerConfig


@dataclass(frozen=True)
class Recipe:
    """Optimisation defaults of the paper (Sec. 4.1 and App. A), per backbone family."""

    learning_rate: float
    weight_decay: float
    backbone_lr_multiplier: float
    warmup_steps: int
    max_grad_norm: float = 0.01
    poly_power: float = 0.9


_RESNET = Recipe(learning_rate=1e-4, weight_decay=1e-4, backbone_lr_multiplier=0.1, warmup_steps=0)
_SWIN = Recipe(learning_rate=6e-5, weight_decay=0.01, backbone_lr_multiplier=1.0, warmup_steps=1500)

# Keyed by the backbone config's `model_type`. The paper gives recipes for ResNet and Swin only; any other
# backbone needs an explicit choice (`recipe_for(..., name=...)`, or every field given as an override).
RECIPES = {"resnet": _RESNET, "swin": _SWIN, "maskformer-swin": _SWIN}

# The fields that a recipe must supply (the others have the paper's defaults for every backbone).
REQUIRED_FIELDS = ("learning_rate", "weight_decay", "backbone_lr_multiplier", "warmup_steps")


def recipe_for(config: MaskFormerConfig, name: str | None = None, **overrides) -> Recipe:
    """The recipe for `config`'s backbone type (or the one called `name`), with `overrides` (None = keep).

    An unknown backbone type is an error, unless `name` picks a recipe or `overrides` give every field of
    `REQUIRED_FIELDS`."""
    unknown = sorted(set(overrides) - {f.name for f in fields(Recipe)})
    if unknown:
        raise TypeError(f"recipe_for: unknown recipe field(s) {unknown}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if name is not None:
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
        base = RECIPES[name]
    else:
        backbone_type = config.backbone_config.model_type
        base = RECIPES.get(backbone_type)
        if base is None:
            if all(k in overrides for k in REQUIRED_FIELDS):
                return Recipe(**overrides)
            raise ValueError(
                f"no training recipe for backbone type {backbone_type!r} (the paper's recipes: "
                f"{', '.join(sorted(RECIPES))}). Pick one with --recipe (recipe_for(config, name=...)), or give "
                f"all of --learning_rate, --weight_decay, --backbone_lr_multiplier and --num_warmup_steps."
            )
    return replace(base, **overrides)


def parameter_groups(model, learning_rate: float, weight_decay: float, backbone_multiplier: float):
    """AdamW groups: backbone at `lr * multiplier`; no weight decay on norms, biases, embeddings and
    relative position bias tables (Swin recipe)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_backbone = ".backbone." in f".{name}"
        no_decay = param.ndim <= 1 or "relative_position_bias_table" in name or "embed" in name.split(".")[-2]
        groups.setdefault((in_backbone, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": learning_rate * (backbone_multiplier if in_backbone else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (in_backbone, no_decay), params in groups.items()
    ]
