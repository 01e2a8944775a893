"""Train MaskFormer with Accelerate: the paper's recipe, resumable checkpoints, evaluation, Hub-ready output.

    python scripts/train.py --dataset synthetic --model_preset demo --output_dir outputs/demo
    accelerate launch --num_processes 8 scripts/train.py --dataset scene_parse_150 \
        --model_preset swin-tiny --crop_size 512 --max_train_steps 160000 --output_dir outputs/ade-swin-t
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py ...   # two processes on a CPU-only machine
    (accelerate's `--cpu` flag starts a single process whatever `--num_processes` says.)

Data: `synthetic` (built in), a folder in the ADE20K or COCO panoptic layout, or a `datasets` name/path.
The global batch is `per_device_train_batch_size x processes x gradient_accumulation_steps`; each
process takes its slice of every global batch, so a run's losses do not depend on the process count.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from data import build_dataset, to_instance_targets
from evaluate import evaluate_model, summary
from synthetic import SyntheticShapesConfig
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm
from transformers import MaskFormerSwinConfig, ResNetConfig, get_polynomial_decay_schedule_with_warmup

from modeling_maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from modeling_maskformer.hub import build_model_card, push_folder_to_hub

logger = logging.getLogger(__name__)
STAGES = ["stage1", "stage2", "stage3", "stage4"]


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


# --- model --------------------------------------------------------------------------------------------------


def preset_config(name: str, id2label: dict[int, str]) -> MaskFormerConfig:
    """Architectures by name. `demo` is a small from-scratch model for CPU; the others are the paper's,
    with ImageNet backbones from the Hub."""
    labels = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if name == "demo":
        # NOTE: dropout 0 — on short from-scratch runs decoder dropout 0.1 made eval-mode predictions
        # collapse to "no object" (REFERENCE.md, observed here); the paper's 0.1 stays the default elsewhere.
        backbone = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                                layer_type="basic", out_features=STAGES)  # fmt: skip
        return MaskFormerConfig(backbone_config=backbone, num_queries=20, hidden_size=128, num_attention_heads=4,
                                decoder_layers=3, decoder_ffn_dim=512, fpn_feature_size=64, mask_feature_size=64,
                                dropout=0.0, attention_dropout=0.0, **labels)  # fmt: skip
    if name in ("resnet50", "resnet101"):
        depths = [3, 4, 6, 3] if name == "resnet50" else [3, 4, 23, 3]
        backbone = ResNetConfig(depths=depths, layer_type="bottleneck", out_features=STAGES)
        return MaskFormerConfig(backbone_config=backbone, backbone=f"microsoft/{name.replace('resnet', 'resnet-')}",
                                use_pretrained_backbone=True, use_timm_backbone=False, **labels)  # fmt: skip
    swin = {
        "swin-tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, "microsoft/swin-tiny-patch4-window7-224"),
        "swin-small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, "microsoft/swin-small-patch4-window7-224"),
        "swin-base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, "microsoft/swin-base-patch4-window12-384-in22k"),
    }
    if name in swin:
        embed, depths, heads, window, checkpoint = swin[name]
        backbone = MaskFormerSwinConfig(embed_dim=embed, depths=depths, num_heads=heads, window_size=window,
                                        drop_path_rate=0.3, out_features=STAGES)  # fmt: skip
        return MaskFormerConfig(backbone_config=backbone, backbone=checkpoint, use_pretrained_backbone=True,
                                use_timm_backbone=False, **labels)  # fmt: skip
    raise ValueError(f"unknown --model_preset {name!r}; choose from demo, resnet50, resnet101, {', '.join(swin)}")


def build_model(args, id2label: dict[int, str]) -> MaskFormerForInstanceSegmentation:
    overrides = {"mask_loss_mode": args.mask_loss_mode} if args.mask_loss_mode else {}
    if args.model_name_or_path:
        model = MaskFormerForInstanceSegmentation.from_pretrained(
            args.model_name_or_path, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **overrides
        )
    else:
        config = preset_config(args.model_preset, id2label)
        for key, value in overrides.items():
            setattr(config, key, value)
        config.validate()
        model = MaskFormerForInstanceSegmentation(config)
    return model


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


# --- data ---------------------------------------------------------------------------------------------------


class Augmentation:
    """The paper's training augmentation (torchvision.transforms.v2 moves masks with the image): short side
    resized to a random 0.5-2.0x the crop size, random crop (retried so that no class covers more than
    `single_category_max_area` of it), horizontal flip, photometric distortion. Padding to the crop size
    happens in the image processor (masks padded with 0, i.e. no target)."""

    def __init__(self, crop_size: int, min_scale: float, max_scale: float, single_category_max_area: float):
        self.crop_size = crop_size
        self.single_category_max_area = single_category_max_area
        self.resize = v2.RandomResize(int(min_scale * crop_size), int(max_scale * crop_size) + 1, antialias=True)
        self.flip_and_colour = v2.Compose([
            v2.RandomHorizontalFlip(),
            # brightness +-32/255, contrast and saturation 0.5-1.5, hue +-18 (OpenCV units: 0.1 turn)
            v2.RandomPhotometricDistort(brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                                        hue=(-0.1, 0.1), p=0.5),
        ])  # fmt: skip

    def crop_box(self, semantic: torch.Tensor, ignore_index: int) -> tuple[int, int, int, int]:
        height, width = semantic.shape
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)
        for _ in range(10):
            top = int(torch.randint(0, height - crop_h + 1, ()))
            left = int(torch.randint(0, width - crop_w + 1, ()))
            if self.single_category_max_area >= 1.0:
                break
            counts = torch.bincount(semantic[top : top + crop_h, left : left + crop_w].flatten().long())
            counts = counts[:ignore_index] if ignore_index < len(counts) else counts
            if len(counts) > 1 and counts.max() < self.single_category_max_area * counts.sum():
                break
        return top, left, crop_h, crop_w

    def __call__(self, image: torch.Tensor, instance_map: torch.Tensor, instance_to_class: dict[int, int],
                 ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        image, mask = self.resize(tv_tensors.Image(image), tv_tensors.Mask(instance_map))
        lookup = torch.full((int(mask.max()) + 1,), ignore_index, dtype=torch.int64)
        for instance, label in instance_to_class.items():
            if instance < len(lookup):
                lookup[instance] = label
        box = self.crop_box(lookup[mask.long()], ignore_index)
        image, mask = TF.crop(image, *box), TF.crop(mask, *box)
        image, mask = self.flip_and_colour(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class TrainingSet(torch.utils.data.Dataset):
    """Augmented items as (image uint8 (3, H, W), instance map (H, W), instance -> class). The augmentation
    of item i in epoch e depends only on (seed, e, i), so a resumed run sees exactly the same data."""

    def __init__(self, dataset, augmentation: Augmentation, seed: int):
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        instance_map, instance_to_class = to_instance_targets(item, self.dataset.ignore_index)
        image = torch.from_numpy(np.array(item["image"].convert("RGB"))).permute(2, 0, 1).contiguous()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            image, instance_map = self.augmentation(
                image, torch.from_numpy(instance_map.astype(np.int64)), instance_to_class, self.dataset.ignore_index
            )
        return image, instance_map, instance_to_class


class Collator:
    """Batches augmented items through the image processor (rescale, normalise, pad, binary masks)."""

    def __init__(self, processor: MaskFormerImageProcessor):
        self.processor = processor

    def __call__(self, batch):
        images, maps, mappings = zip(*batch)
        return self.processor(list(images), segmentation_maps=[m.numpy() for m in maps],
                              instance_id_to_semantic_id=list(mappings), do_resize=False, return_tensors="pt")  # fmt: skip


def epoch_batches(num_items: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of an epoch: a seeded permutation, last partial batch dropped."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    return [order[i : i + global_batch] for i in range(0, num_items - global_batch + 1, global_batch)]


# --- checkpoints --------------------------------------------------------------------------------------------

STATE_FILE = "trainer_state.json"


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, total_limit: int | None) -> Path:
    """Accelerate's state saving into a temporary folder, renamed into place once complete: a kill during
    a save never damages the last good checkpoint."""
    final = output_dir / "checkpoints" / f"checkpoint-{state['step']}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)  # before any process writes its random state into it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in complete_checkpoints(output_dir)[:-total_limit] if total_limit else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(output_dir: Path) -> list[Path]:
    folders = (output_dir / "checkpoints").glob("checkpoint-*")
    complete = [f for f in folders if not f.name.endswith(".partial") and (f / STATE_FILE).is_file()]
    return sorted(complete, key=lambda f: int(f.name.split("-")[-1]))


def resolve_checkpoint(resume_from: str, output_dir: Path) -> Path | None:
    if resume_from == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            logger.warning("--resume_from_checkpoint latest: no checkpoint in %s, starting fresh", output_dir)
        return found[-1] if found else None
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume_from_checkpoint {path}: not a complete checkpoint (no {STATE_FILE})")
    return path


# --- output -------------------------------------------------------------------------------------------------


def save_hub_folder(model, processor, folder: Path, args, metrics: dict | None) -> None:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    card = build_model_card(
        model.config,
        repo_id=args.hub_model_id or f"your-name/{Path(args.output_dir).name}",
        metrics=metrics,
        dataset=args.dataset,
        base_model=args.model_name_or_path,
        training_args={k: v for k, v in vars(args).items() if k != "hub_token"},
    )
    card.save(folder / "README.md")
    if metrics:
        (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2))


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic", help="'synthetic', an ADE/COCO-panoptic folder, or a datasets name/path")
    p.add_argument("--dataset_config_name", default=None)
    p.add_argument("--train_split", default="train")
    p.add_argument("--eval_split", default="validation")
    p.add_argument("--num_train_images", type=int, default=None, help="synthetic: training scenes")
    p.add_argument("--num_eval_images", type=int, default=None, help="synthetic: validation scenes")
    p.add_argument("--image_size", type=int, default=None, help="synthetic: image side")
    p.add_argument("--synthetic_thing_colours", choices=["random", "by_class"], default="random",
                   help="synthetic: thing colours random (shape alone tells the class) or by class hue band")
    p.add_argument("--model_preset", default="demo", help="demo, resnet50, resnet101, swin-tiny, swin-small, swin-base")
    p.add_argument("--model_name_or_path", default=None, help="start from this model folder / Hub id instead")
    p.add_argument("--mask_loss_mode", choices=["dense", "point"], default=None)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--crop_size", type=int, default=512)
    p.add_argument("--min_scale", type=float, default=0.5)
    p.add_argument("--max_scale", type=float, default=2.0)
    p.add_argument("--single_category_max_area", type=float, default=1.0)
    p.add_argument("--eval_short_side", type=int, default=None, help="evaluation resize (default: crop size)")
    p.add_argument("--per_device_train_batch_size", type=int, default=2)
    p.add_argument("--per_device_eval_batch_size", type=int, default=4)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=None, help="default: the recipe's")
    p.add_argument("--weight_decay", type=float, default=None, help="default: the recipe's")
    p.add_argument("--backbone_lr_multiplier", type=float, default=None, help="default: the recipe's")
    p.add_argument("--num_warmup_steps", type=int, default=None, help="default: the recipe's")
    p.add_argument("--max_grad_norm", type=float, default=None, help="default: the recipe's (0.01)")
    p.add_argument("--max_train_steps", type=int, default=160000)
    p.add_argument("--max_train_seconds", type=float, default=None, help="stop (and save) after this wall time")
    p.add_argument("--stop_at_step", type=int, default=None,
                   help="save and exit at this step, keeping the schedule of --max_train_steps (for time-limited jobs)")
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--checkpointing_steps", type=int, default=5000)
    p.add_argument("--checkpoints_total_limit", type=int, default=3)
    p.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    p.add_argument("--eval_steps", type=int, default=5000)
    p.add_argument("--max_eval_items", type=int, default=None)
    p.add_argument("--metric_for_best_model", default="mean_iou")
    p.add_argument("--logging_steps", type=int, default=20)
    p.add_argument("--report_to", default="none", help="'tensorboard', 'wandb', 'all' or 'none'")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    p.add_argument("--hub_token", default=None)
    args = p.parse_args(argv)
    for name in ("crop_size", "per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "max_train_steps", "checkpointing_steps", "eval_steps", "logging_steps"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.crop_size < 32:
        p.error(f"--crop_size must be at least 32 (the network's stride), got {args.crop_size}")
    if not 0 < args.min_scale <= args.max_scale:
        p.error(f"need 0 < --min_scale <= --max_scale, got {args.min_scale} and {args.max_scale}")
    if args.min_scale * args.crop_size < 32:
        p.error("--min_scale x --crop_size must be at least 32 px")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    return args


def dataset_kwargs(args, split: str) -> dict:
    if args.dataset == "synthetic":
        kwargs = {"image_size": args.image_size, "config": SyntheticShapesConfig(thing_colours=args.synthetic_thing_colours)}
        kwargs["num_images"] = args.num_train_images if split == args.train_split else args.num_eval_images
        return {k: v for k, v in kwargs.items() if v is not None}
    return {"name": args.dataset_config_name} if args.dataset_config_name else {}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    # NOTE: several processes without CUDA (`accelerate launch --multi_gpu --num_processes 2` or torchrun on a
    # CPU machine) must ask Accelerate for CPU explicitly, or it silently runs N independent copies.
    multi_process_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_process_cpu,
        # NOTE: our steps count global optimizer steps already; by default Accelerate would advance the
        # schedule num_processes times per step.
        step_scheduler_with_optimizer=False,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    set_seed(args.seed)

    train_data = build_dataset(args.dataset, args.train_split, **dataset_kwargs(args, args.train_split))
    eval_data = build_dataset(args.dataset, args.eval_split, **dataset_kwargs(args, args.eval_split))
    model = build_model(args, train_data.id2label)
    recipe = recipe_for(model.config)
    learning_rate = args.learning_rate if args.learning_rate is not None else recipe.learning_rate
    weight_decay = args.weight_decay if args.weight_decay is not None else recipe.weight_decay
    backbone_multiplier = args.backbone_lr_multiplier if args.backbone_lr_multiplier is not None else recipe.backbone_lr_multiplier
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else recipe.warmup_steps
    max_grad_norm = args.max_grad_norm if args.max_grad_norm is not None else recipe.max_grad_norm

    eval_side = args.eval_short_side or args.crop_size
    processor = MaskFormerImageProcessor(size={"shortest_edge": eval_side, "longest_edge": 4 * eval_side},
                                         ignore_index=train_data.ignore_index, num_labels=train_data.num_labels)  # fmt: skip
    training_set = TrainingSet(
        train_data, Augmentation(args.crop_size, args.min_scale, args.max_scale, args.single_category_max_area), args.seed
    )
    collate = Collator(processor)
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    batches_per_epoch = len(epoch_batches(len(training_set), global_batch, args.seed, 0))
    logger.info("num_processes=%d, global batch %d x %d accumulation steps, %d training items, recipe %s",
                accelerator.num_processes, global_batch, args.gradient_accumulation_steps, len(training_set), recipe)  # fmt: skip
    if batches_per_epoch == 0:
        raise ValueError(f"the training set has {len(training_set)} items, fewer than one global batch ({global_batch})")

    optimizer = torch.optim.AdamW(parameter_groups(model, learning_rate, weight_decay, backbone_multiplier),
                                  lr=learning_rate)  # fmt: skip
    scheduler = get_polynomial_decay_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup, num_training_steps=args.max_train_steps, lr_end=0.0, power=recipe.poly_power
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = {"step": 0, "micro_batch": 0, "best_metric": None, "best_step": None, "history": []}
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir) if args.resume_from_checkpoint else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / STATE_FILE).read_text())
        logger.info("Resumed from %s at step %d", checkpoint, state["step"])
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers("maskformer", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    progress = tqdm(total=args.max_train_steps, initial=state["step"], disable=not accelerator.is_local_main_process)
    start_time = time.monotonic()
    done = False
    model.train()
    while state["step"] < args.max_train_steps:
        epoch, first_batch = divmod(state["micro_batch"], batches_per_epoch)
        training_set.epoch = epoch
        local = [
            batch[accelerator.process_index * args.per_device_train_batch_size :][: args.per_device_train_batch_size]
            for batch in epoch_batches(len(training_set), global_batch, args.seed, epoch)[first_batch:]
        ]
        # NOTE: its own generator, so creating a loader (its base seed) draws nothing from the global RNG
        # that the loss's point sampling uses; otherwise a resumed run would diverge.
        loader = torch.utils.data.DataLoader(training_set, batch_sampler=local, collate_fn=collate,
                                             num_workers=args.num_workers,
                                             generator=torch.Generator().manual_seed(args.seed + epoch))  # fmt: skip
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"],
                                mask_labels=batch["mask_labels"], class_labels=batch["class_labels"])  # fmt: skip
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            state["micro_batch"] += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            progress.update(1)
            loss = accelerator.reduce(outputs.loss.detach(), reduction="mean").item()
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {state['step']}: lower the learning rate or check the data")
            if state["step"] % args.logging_steps == 0:
                state["history"].append({"step": state["step"], "loss": loss})
                parts = {k: accelerator.reduce(v.detach(), reduction="mean").item()
                         for k, v in outputs.loss_dict.items() if not k[-1].isdigit()}  # fmt: skip
                accelerator.log({"train/loss": loss, "train/lr": scheduler.get_last_lr()[0], **{f"train/{k}": v for k, v in parts.items()}}, step=state["step"])
                progress.set_postfix(loss=f"{loss:.3f}")
            out_of_time = args.max_train_seconds is not None and time.monotonic() - start_time > args.max_train_seconds
            stopped = args.stop_at_step is not None and state["step"] >= args.stop_at_step
            done = state["step"] >= args.max_train_steps or out_of_time or stopped
            if state["step"] % args.eval_steps == 0 or done:
                results = summary(evaluate_model(model, processor, eval_data, accelerator=accelerator,
                                                 batch_size=args.per_device_eval_batch_size, max_items=args.max_eval_items,
                                                 show_progress=False))  # fmt: skip
                accelerator.log({f"eval/{k}": v for k, v in results.items() if v is not None}, step=state["step"])
                logger.info("step %d: %s", state["step"], {k: round(v, 4) for k, v in results.items() if v is not None})
                state["history"].append({"step": state["step"], "loss": loss, "eval": results})
                score = results.get(args.metric_for_best_model)
                if score is not None and (state["best_metric"] is None or score > state["best_metric"]):
                    state.update(best_metric=score, best_step=state["step"])
                    if accelerator.is_main_process:
                        save_hub_folder(accelerator.unwrap_model(model), processor, output_dir / "best", args, results)
            if state["step"] % args.checkpointing_steps == 0 or done:
                save_checkpoint(accelerator, output_dir, state, args.checkpoints_total_limit)
            if done:
                break
        if done:
            logger.info("stopping at step %d", state["step"])
            break
    progress.close()

    final_metrics = next((h["eval"] for h in reversed(state["history"]) if "eval" in h), None)
    if accelerator.is_main_process:
        save_hub_folder(accelerator.unwrap_model(model), processor, output_dir, args, final_metrics)
        (output_dir / "training_history.json").write_text(json.dumps(state["history"]))
        if args.push_to_hub:
            url = push_folder_to_hub(output_dir / "best" if (output_dir / "best").is_dir() else output_dir,
                                     args.hub_model_id, token=args.hub_token)  # fmt: skip
            logger.info("pushed to %s", url)
    accelerator.end_training()
    return {"state": state, "metrics": final_metrics, "recipe": asdict(recipe)}


if __name__ == "__main__":
    main()
