"""MaskFormer against per-pixel classification (the paper's Table 4 at CPU scale): for each class count K both heads
train from the same `demo` weights, recipe and data stream, and are scored by mIoU on the same held-out scenes.

NOTE: fair under a loaded machine: both train in one process, alternating steps on the same batch, so other work
slows both alike. The poly schedule (power 0.9, linear warm-up) runs over the time *budget*, so it always completes.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass

import torch

from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..data import Augmentation, MaskFormerCollator, SyntheticShapesConfig, TrainingSet, build_dataset
from ..data.synthetic import MAX_THING_CLASSES, STUFF_CLASSES
from ..errors import InvalidInputError
from ..evaluation import evaluate_model
from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..training.loop import epoch_batches
from ..training.presets import preset_config
from ..training.recipes import parameter_groups, recipe_for
from .per_pixel import PerPixelBaselineForSemanticSegmentation

logger = logging.getLogger(__name__)

# The share of each class count's budget kept for evaluation (measured: ~30 s of 10 min at 128 px, 100 scenes, both heads).
EVAL_SHARE = 0.08


@dataclass
class CompareSettings:
    """`minutes`: the budget, split over `class_counts` (3 stuff + K - 3 thing classes); training as `make demo`."""

    class_counts: tuple[int, ...] = (8, 32, 128)
    minutes: float = 30.0
    image_size: int = 128
    batch_size: int = 8
    num_train_images: int = 4000
    num_eval_images: int = 100
    learning_rate: float = 5e-4
    # `make demo`'s 100 warm-up steps of 2,600, as a share of the time (a step count would not end on a slow machine)
    warmup_fraction: float = 0.04
    max_steps: int | None = None  # also end at this step, the schedule compressed to it (quick checks)
    seed: int = 0

    def __post_init__(self) -> None:
        self.class_counts = tuple(self.class_counts)
        low, high = len(STUFF_CLASSES) + 1, len(STUFF_CLASSES) + MAX_THING_CLASSES
        if not self.class_counts or any(not isinstance(k, int) or not low <= k <= high for k in self.class_counts):
            raise InvalidInputError(
                f"class_counts must be ints in {low}..{high} (3 stuff + 1..{MAX_THING_CLASSES} thing classes), got "
                f"{self.class_counts}"
            )
        rules = {
            "minutes": (self.minutes > 0, "> 0"),
            "learning_rate": (self.learning_rate > 0, "> 0"),
            "warmup_fraction": (0 <= self.warmup_fraction < 1, "in [0, 1)"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "num_eval_images": (self.num_eval_images >= 1, ">= 1"),
            "num_train_images": (self.num_train_images >= self.batch_size, f">= batch_size ({self.batch_size})"),
            "image_size": (self.image_size >= 32, ">= 32"),
            "max_steps": (self.max_steps is None or self.max_steps >= 1, ">= 1 or None"),
        }
        for name, (ok, requirement) in rules.items():
            if not ok:
                raise InvalidInputError(f"{name} must be {requirement}, got {getattr(self, name)}")


def build_pair(id2label: dict[int, str], seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    config = preset_config("demo", id2label)
    maskformer = MaskFormerForInstanceSegmentation(config)
    per_pixel = PerPixelBaselineForSemanticSegmentation(PerPixelBaselineConfig.from_maskformer_config(config))
    per_pixel.model.backbone.load_state_dict(maskformer.model.backbone.state_dict())
    per_pixel.model.pixel_decoder.load_state_dict(maskformer.model.pixel_decoder.state_dict())
    return {"maskformer": maskformer, "per_pixel": per_pixel}


class _Trainer:
    """One model's AdamW and gradient clipping; the caller sets each step's lr factor."""

    def __init__(self, model, settings: CompareSettings):
        self.model = model
        # NOTE: warm-up by time (`lr_factor`), not the recipe's steps.
        self.recipe = recipe_for(
            model.config, learning_rate=settings.learning_rate, backbone_lr_multiplier=1.0, warmup_steps=0
        )
        groups = parameter_groups(
            model, self.recipe.learning_rate, self.recipe.weight_decay, self.recipe.backbone_lr_multiplier
        )
        self.optimizer = torch.optim.AdamW(groups, lr=self.recipe.learning_rate)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.seconds = 0.0
        self.last_loss = math.nan

    def step(self, batch: dict, factor: float) -> None:
        start = time.perf_counter()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        self.model.train()
        outputs = self.model(**{k: batch[k] for k in ("pixel_values", "pixel_mask", "mask_labels", "class_labels")})
        outputs.loss.backward()
        if self.recipe.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_loss = float(outputs.loss.detach())
        if not math.isfinite(self.last_loss):
            raise FloatingPointError(f"{type(self.model).__name__}: loss is {self.last_loss}")
        self.seconds += time.perf_counter() - start


def lr_factor(progress: float, warmup_fraction: float, power: float) -> float:
    """Linear warm-up over `warmup_fraction`, times (1 - progress)^power; `progress` in [0, 1]."""
    warmup = min(1.0, progress / warmup_fraction) if warmup_fraction > 0 else 1.0
    return max(warmup, 1e-3) * max(0.0, 1.0 - progress) ** power


def _batches(settings: CompareSettings, training_set: TrainingSet, collate):
    for epoch in itertools.count():
        training_set.epoch = epoch
        yield from torch.utils.data.DataLoader(
            training_set,
            batch_sampler=epoch_batches(len(training_set), settings.batch_size, settings.seed, epoch),
            collate_fn=collate,
            generator=torch.Generator().manual_seed(settings.seed + epoch),
        )


def compare_one(settings: CompareSettings, num_classes: int, budget_seconds: float) -> dict:
    start = time.monotonic()
    num_things = num_classes - len(STUFF_CLASSES)
    scenes = SyntheticShapesConfig(num_thing_classes=num_things)
    train_data, eval_data = (
        build_dataset(
            "synthetic", split, num_images=n, image_size=settings.image_size, seed=settings.seed, config=scenes
        )
        for split, n in (("train", settings.num_train_images), ("validation", settings.num_eval_images))
    )
    processor = MaskFormerImageProcessor(
        size={"shortest_edge": settings.image_size, "longest_edge": 4 * settings.image_size},
        ignore_index=train_data.ignore_index,
        num_labels=num_classes,
    )
    # NOTE: the demo's crop and scale range (`make demo`).
    training_set = TrainingSet(train_data, Augmentation(settings.image_size, 0.75, 1.5, 1.0), settings.seed)
    stream = _batches(settings, training_set, MaskFormerCollator(processor))

    trainers = {
        name: _Trainer(model, settings) for name, model in build_pair(train_data.id2label, settings.seed).items()
    }
    recipe = trainers["maskformer"].recipe  # the same for both (the demo preset's backbone)
    train_seconds = max(budget_seconds * (1 - EVAL_SHARE) - (time.monotonic() - start), 1e-3)
    logger.info("K=%d: training both heads for %.0f s, alternating steps", num_classes, train_seconds)
    train_start, steps_done = time.monotonic(), 0
    while True:
        progress = (time.monotonic() - train_start) / train_seconds
        if settings.max_steps is not None:
            progress = max(progress, steps_done / settings.max_steps)
        if progress >= 1:
            break
        factor = lr_factor(progress, settings.warmup_fraction, recipe.poly_power)
        batch = next(stream)
        for trainer in trainers.values():  # the same batch and learning rate for both, one step each
            trainer.step(batch, factor)
        steps_done += 1
        if steps_done % 100 == 0:
            losses = {name: round(t.last_loss, 3) for name, t in trainers.items()}
            logger.info("K=%d step %d (%.0f%% of the time): loss %s", num_classes, steps_done, 100 * progress, losses)
    train_wall = time.monotonic() - train_start

    results = {}
    for name, trainer in trainers.items():
        metrics = evaluate_model(
            trainer.model, processor, eval_data, batch_size=settings.batch_size, show_progress=False
        )["semantic"]
        per_class = metrics["per_class_iou"]
        thing_ious = [per_class[train_data.id2label[c]] for c in train_data.thing_ids]
        thing_ious = [v for v in thing_ious if v is not None]
        results[name] = {
            "mean_iou": metrics["mean_iou"],
            "things_mean_iou": sum(thing_ious) / len(thing_ious) if thing_ious else None,
            "pixel_accuracy": metrics["pixel_accuracy"],
            "seconds_per_step": trainer.seconds / steps_done,
            "final_loss": trainer.last_loss,
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
        }
    return {
        "num_classes": num_classes,
        "num_thing_classes": num_things,
        "steps": steps_done,
        "train_seconds": train_wall,
        "total_seconds": time.monotonic() - start,
        "difference": results["maskformer"]["mean_iou"] - results["per_pixel"]["mean_iou"],
        **results,
    }


# Below this thing-class mIoU a head has not learned the thing classes yet: at such a class count the comparison
# measures the stuff classes and early training speed, not how the classifier scales with K.
UNTRAINED_THINGS_MIOU = 0.05


def trend(rows: list[dict]) -> dict:
    """The paper's trend reproduces if MaskFormer's advantage grows strictly with K, it leads at the largest K, and
    some head is past `UNTRAINED_THINGS_MIOU` at every K (a gap that "grows" near zero says nothing)."""
    rows = sorted(rows, key=lambda r: r["num_classes"])
    differences = [r["difference"] for r in rows]
    grows = len(rows) >= 2 and all(b > a for a, b in zip(differences, differences[1:]))
    ahead = bool(rows) and differences[-1] > 0
    untrained = [
        r["num_classes"]
        for r in rows
        if all((r[head].get("things_mean_iou") or 0.0) < UNTRAINED_THINGS_MIOU for head in ("maskformer", "per_pixel"))
    ]
    return {
        "class_counts": [r["num_classes"] for r in rows],
        "differences": differences,
        "grows_with_classes": grows,
        "maskformer_ahead_at_largest": ahead,
        "reproduces": grows and ahead and not untrained,
        "untrained_class_counts": untrained,
    }


def compare_heads(settings: CompareSettings) -> dict:
    budget = settings.minutes * 60 / len(settings.class_counts)
    rows = [compare_one(settings, k, budget) for k in settings.class_counts]
    return {"settings": asdict(settings), "torch_threads": torch.get_num_threads(), "rows": rows, "trend": trend(rows)}


def format_report(report: dict) -> str:
    lines = [
        "| K (things + 3 stuff) | steps | MaskFormer mIoU | per-pixel mIoU | difference | MaskFormer things mIoU | "
        "per-pixel things mIoU | s/step MaskFormer, per-pixel |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    for row in report["rows"]:
        mf, pp = row["maskformer"], row["per_pixel"]
        lines.append(
            f"| {row['num_classes']} ({row['num_thing_classes']} + 3) | {row['steps']} | {pct(mf['mean_iou'])} | "
            f"{pct(pp['mean_iou'])} | {100 * row['difference']:+.1f} | {pct(mf['things_mean_iou'])} | "
            f"{pct(pp['things_mean_iou'])} | {mf['seconds_per_step']:.2f}, {pp['seconds_per_step']:.2f} |"
        )
    t = trend(report["rows"])
    lines.append(
        "\nMaskFormer's advantage in mIoU points: "
        + ", ".join(f"K={k}: {100 * d:+.1f}" for k, d in zip(t["class_counts"], t["differences"]))
        + f". It {'grows' if t['grows_with_classes'] else 'does not grow'} with the class count, and MaskFormer is "
        + f"{'' if t['maskformer_ahead_at_largest'] else 'not '}ahead at the largest K."
    )
    if t["untrained_class_counts"]:
        lines.append(
            f"Neither head learned the thing classes (things mIoU < {100 * UNTRAINED_THINGS_MIOU:.0f}) at K = "
            f"{', '.join(map(str, t['untrained_class_counts']))}: there the figures measure the stuff classes and early "
            "training speed, not how the classifier scales with K."
        )
    lines.append(f"The paper's trend {'reproduces' if t['reproduces'] else 'does not reproduce'} here.")
    return "\n".join(lines)
