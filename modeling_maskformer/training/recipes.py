"""The paper's optimisation recipes (Sec. 4.1 and App. A) and AdamW parameter groups."""

from __future__ import annotations

from dataclasses import dataclass

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


RECIPES = {
    "resnet": Recipe(learning_rate=1e-4, weight_decay=1e-4, backbone_lr_multiplier=0.1, warmup_steps=0),
    "swin": Recipe(learning_rate=6e-5, weight_decay=0.01, backbone_lr_multiplier=1.0, warmup_steps=1500),
}


def recipe_for(config: MaskFormerConfig) -> Recipe:
    return RECIPES["swin" if "swin" in config.backbone_config.model_type else "resnet"]


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
