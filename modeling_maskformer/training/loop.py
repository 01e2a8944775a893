"""The training loop (Accelerate): the paper's recipe, resumable checkpoints, evaluation, Hub-ready output.

    python scripts/train_maskformer.py --dataset synthetic --model_preset demo --crop_size 128 \
        --max_train_steps 300 --output_dir outputs/first
    accelerate launch --num_processes 8 scripts/train_maskformer.py --dataset data/ADEChallengeData2016 \
        --label_convention ade --model_preset swin-tiny --crop_size 512 --max_train_steps 160000 \
        --output_dir outputs/ade-swin-t

From Python: `train(["--output_dir", "outputs/x", ...])` or `train(parse_args([...]))`. The global batch is
`per_device_train_batch_size x processes x gradient_accumulation_steps`; each process takes its slice of every
global batch, so a run's losses do not depend on the process count. docs/training.md has the details.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import get_polynomial_decay_schedule_with_warmup
from transformers.utils import logging as transformers_logging

from ..data import Augmentation, MaskFormerCollator, TrainingSet, build_dataset
from ..data.arguments import add_dataset_arguments
from ..data.arguments import dataset_kwargs as shared_dataset_kwargs
from ..data.checks import check_dataset
from ..errors import InvalidInputError
from ..evaluation import evaluate_model, summary
from ..image_processing import MaskFormerImageProcessor
from ..interop.hub import push_folder_to_hub
from .checkpoints import STATE_FILE, save_checkpoint, save_hub_folder
from .interruption import StopRequests, TrainingStopped, decide, ignore_stop_signals
from .presets import HEADS, build_model
from .recipes import RECIPES, choose_recipe, parameter_groups
from .resume import check_same_run, run_identity, start_from

logger = logging.getLogger(__name__)

# The metrics a semantic-only model (the per-pixel baseline) can select the best checkpoint by (`summary`'s keys).
SEMANTIC_METRICS = ("mean_iou", "pixel_accuracy")
# The options that must be >= 1.
_POSITIVE = (
    "per_device_train_batch_size per_device_eval_batch_size gradient_accumulation_steps max_train_steps "
    "checkpointing_steps checkpoints_total_limit eval_steps logging_steps"
).split()
_MODEL_INPUTS = ("pixel_values", "pixel_mask", "mask_labels", "class_labels")


def epoch_batches(num_items: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of an epoch: a seeded permutation, last partial batch dropped."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    return [order[i : i + global_batch] for i in range(0, num_items - global_batch + 1, global_batch)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_split", default="train")
    p.add_argument("--eval_split", default="validation")
    p.add_argument("--num_train_images", type=int, help="synthetic: training scenes")
    p.add_argument("--num_eval_images", type=int, help="synthetic: validation scenes")
    p.add_argument("--model_preset", default="demo", help="demo, resnet50, resnet101, swin-tiny, swin-small, ...")
    p.add_argument("--model_name_or_path", help="fine-tune this model folder / Hub id, not a preset")
    p.add_argument("--crop_size", type=int, help="training crop (default: the base model's processor size, else 512)")
    p.add_argument("--min_scale", type=float, default=0.5)
    p.add_argument("--max_scale", type=float, default=2.0)
    p.add_argument("--single_category_max_area", type=float, default=1.0)
    p.add_argument("--eval_short_side", type=int, help="evaluation size (default: the base model's, else the crop)")
    p.add_argument("--per_device_train_batch_size", type=int, default=2)
    p.add_argument("--per_device_eval_batch_size", type=int, default=4)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, help="default: the recipe's")
    p.add_argument("--weight_decay", type=float, help="default: the recipe's")
    p.add_argument("--backbone_lr_multiplier", type=float, help="default: the recipe's")
    p.add_argument("--num_warmup_steps", type=int, help="default: the recipe's")
    p.add_argument("--max_grad_norm", type=float, help="default: the recipe's (0.01)")
    p.add_argument("--max_train_steps", type=int, help="required: the schedule's length")
    p.add_argument("--max_train_seconds", type=float, help="stop (and save) after this wall time")
    p.add_argument("--stop_at_step", type=int, help="save and exit at this step, keeping --max_train_steps' schedule")
    p.add_argument("--checkpointing_steps", type=int, default=5000, help="save a checkpoint every N steps")
    p.add_argument("--checkpointing_minutes", type=float, default=30.0, help="also save every N minutes (0: off)")
    p.add_argument("--checkpoints_total_limit", type=int, default=3, help="keep this many newest checkpoints (>= 1)")
    p.add_argument("--eval_steps", type=int, default=5000)
    p.add_argument("--max_eval_items", type=int)
    p.add_argument("--metric_for_best_model", help="for best/ (default: mean_iou; instance data: mask_ap)")
    p.add_argument("--logging_steps", type=int, default=20)
    p.add_argument("--report_to", default="none", help="'tensorboard', 'wandb', 'all' or 'none'")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hub_model_id")
    p.add_argument("--hub_token")
    p.add_argument("--overwrite_output_dir", action="store_true", help="start over: remove an earlier run's outputs")
    p.add_argument("--allow_missing_random_states", action="store_true", help="resume anyway (losses will differ)")
    p.add_argument("--stop_on_eval_error", action="store_true", help="stop at an evaluation error (default: go on)")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument(
        "--head",
        choices=list(HEADS),
        default="mask_classification",
        help="mask_classification (MaskFormer) or per_pixel (the paper's per-pixel classification baseline: the "
        "same backbone and pixel decoder, a 1x1 conv classifier, per-pixel cross-entropy; semantic only)",
    )
    p.add_argument("--mask_loss_mode", choices=["dense", "point"], default=None)
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="default: 'scratch' for a backbone that starts from random weights, as the demo preset's, else the "
        "paper's for the backbone type",
    )
    p.add_argument(
        "--resume_from_checkpoint",
        help="a checkpoint folder, or 'latest' (the newest one in --output_dir that verifies: what a rerun into a "
        "folder with checkpoints does by itself)",
    )
    args = p.parse_args(argv)
    if args.max_train_steps is None:
        p.error(
            "--max_train_steps is required: it sets the length of the learning-rate schedule. For scale: the paper "
            "trained ADE20K for 160000 steps of 16 images (about a day on 8 GPUs); the README's first CPU run uses 300."
        )
    for name in _POSITIVE:
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("crop_size", "eval_short_side"):
        if getattr(args, name) is not None and getattr(args, name) < 32:
            p.error(f"--{name} must be at least 32 (the network's stride), got {getattr(args, name)}")
    if not 0 < args.min_scale <= args.max_scale:
        p.error(f"need 0 < --min_scale <= --max_scale, got {args.min_scale} and {args.max_scale}")
    if args.checkpointing_minutes < 0:
        p.error(f"--checkpointing_minutes must be >= 0 (0: by steps only), got {args.checkpointing_minutes}")
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        p.error("--overwrite_output_dir starts over; --resume_from_checkpoint continues: choose one")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    if args.head == "per_pixel" and args.metric_for_best_model not in (None, *SEMANTIC_METRICS):
        p.error(
            f"--head per_pixel is semantic segmentation only: --metric_for_best_model must be one of "
            f"{', '.join(SEMANTIC_METRICS)}, got {args.metric_for_best_model!r} (PQ and mask AP need mask "
            "classification)"
        )
    if args.head == "per_pixel" and args.mask_loss_mode is not None:
        p.error("--mask_loss_mode is MaskFormer's mask loss; --head per_pixel trains with per-pixel cross-entropy")
    return args


def dataset_kwargs(args, split: str, id2label: dict[int, str] | None = None) -> dict:
    """Loader arguments for `args.dataset`'s `split` (the evaluation split takes the training split's classes)."""
    num_images = args.num_train_images if split == args.train_split else args.num_eval_images
    return shared_dataset_kwargs(args, num_images=num_images, id2label=id2label)


def describe_labels(dataset, label_convention: str | None = None) -> str:
    """One line for the start of a run: annotation kind, the label convention and where it came from
    (`label_convention`: the flag given, if any; `dataset.convention_from`), and the classes."""
    names = list(dataset.id2label.values())
    classes = f"{dataset.num_labels} classes ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
    if dataset.task != "semantic":
        classes += f", {len(dataset.thing_ids)} of them things"
    kind = "instance annotations (COCO JSON)" if dataset.task == "instance" else f"{dataset.task} annotations"
    source = getattr(dataset, "convention_from", "argument" if dataset.task == "semantic" else None)
    if source is None:
        where = "the JSON's categories" if dataset.task == "instance" else "the annotations' categories"
        unused = f" (--label_convention {label_convention} is not used)" if label_convention else ""
        return f"{kind}, classes from {where}{unused}; {classes}"
    if source != "argument":
        return f"{kind}, labels as {source} defines them (no --label_convention applies); {classes}"
    given = f"--label_convention {label_convention}" if label_convention else f"reduce_labels={dataset.reduce_labels}"
    value = "pixel" if dataset.task == "semantic" else "class channel"
    if dataset.reduce_labels:
        convention = f"ADE convention ({given}): {value} 0 = 'other', ignored; {value} k = class k-1"
    else:
        convention = f"labels as they are ({given}): {value} k = class k"
    return f"{kind}, {convention}; {classes}; pixel {dataset.ignore_index} = ignored"


@contextlib.contextmanager
def readable_output(is_main_process: bool):
    """Training output without clutter: this package logs at INFO on the main process only, log lines go
    above the progress bar, and transformers' save/load progress bars (and, off the main process, its
    warnings) are silenced; everything is restored on exit."""
    package = logging.getLogger(__package__.split(".")[0])
    level, verbosity = package.level, transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    package.setLevel(logging.INFO if is_main_process else logging.ERROR)
    transformers_logging.disable_progress_bar()
    if not is_main_process:
        transformers_logging.set_verbosity_error()
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        package.setLevel(level)
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def train(args: argparse.Namespace | list[str] | None = None) -> dict:
    """Run a training: `args` from `parse_args`, or a command line for it (None: `sys.argv`). Returns the
    final state (steps, history, best metric), the last evaluation and the recipe used."""
    if not isinstance(args, argparse.Namespace):
        args = parse_args(args)
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
        project_dir=str(args.output_dir),
    )
    with readable_output(accelerator.is_main_process):
        return _train(args, accelerator)


def _train(args: argparse.Namespace, accelerator: Accelerator) -> dict:
    output_dir = Path(args.output_dir)
    set_seed(args.seed)
    # Before anything slow: the checkpoint this run continues, or the refusal to overwrite an earlier run.
    checkpoint = start_from(args, output_dir, accelerator.num_processes, clear=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    train_data, eval_data, run = _read_data(args, accelerator, checkpoint)

    model = build_model(args, train_data.id2label)
    # Recorded with the model (data/labels.py): which classes are things, and which items of a source without a
    # validation split were held out, so that evaluating the model reads them again (data/splits.py).
    model.config.thing_ids = list(train_data.thing_ids)
    model.config.validation_held_out = None if train_data.held_out is None else train_data.held_out.to_dict()
    choice = choose_recipe(
        model.config,
        args.recipe,
        pretrained_backbone=bool(args.model_name_or_path or model.config.use_pretrained_backbone),  # trained weights
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        backbone_lr_multiplier=args.backbone_lr_multiplier,
        warmup_steps=args.num_warmup_steps,
        max_grad_norm=args.max_grad_norm,
    )
    recipe = choice.recipe
    logger.info("%s", choice.describe())

    processor, recorded_processor, crop_size = _processors(args, train_data)
    augmentation = Augmentation(crop_size, args.min_scale, args.max_scale, args.single_category_max_area)
    training_set = TrainingSet(train_data, augmentation, args.seed)
    collate = MaskFormerCollator(processor, mask_dtype=torch.bool)  # the model makes them float on its device
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    batches_per_epoch = len(epoch_batches(len(training_set), global_batch, args.seed, 0))
    logger.info(
        f"{args.max_train_steps} steps, num_processes={accelerator.num_processes}, global batch {global_batch} x "
        f"{args.gradient_accumulation_steps} accumulation steps, {len(training_set)} training / {len(eval_data)} "
        "evaluation items"
    )
    if batches_per_epoch == 0:
        raise InvalidInputError(
            f"the training set has {len(training_set)} items, fewer than one global batch ({global_batch})"
        )

    groups = parameter_groups(model, recipe.learning_rate, recipe.weight_decay, recipe.backbone_lr_multiplier)
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate)
    scheduler = get_polynomial_decay_schedule_with_warmup(
        optimizer, recipe.warmup_steps, args.max_train_steps, lr_end=0.0, power=recipe.poly_power
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = {"step": 0, "micro_batch": 0, "best_metric": None, "best_step": None, "last_loss": None, "history": []}
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / STATE_FILE).read_text())
        found = f"the newest checkpoint in {checkpoint.parent} that verifies"
        logger.info(
            f"resuming from {checkpoint} at step {state['step']} of {args.max_train_steps} "
            f"({'as asked' if args.resume_from_checkpoint else found}); --overwrite_output_dir starts over instead"
        )
    state["run"] = run
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    accelerator.init_trackers("maskformer", config=plain)

    def evaluate() -> None:
        evaluate_and_record(model, processor, recorded_processor, eval_data, accelerator, args, state)

    last_save = time.monotonic()

    def save() -> Path:
        nonlocal last_save
        path = save_checkpoint(
            accelerator, output_dir, {**state, "eval_pending": due_eval}, args.checkpoints_total_limit
        )
        last_save = time.monotonic()
        return path

    if state.pop("eval_pending", False):  # the checkpoint was saved just before an evaluation that did not finish
        evaluate()
    progress = tqdm(
        total=args.max_train_steps,
        initial=state["step"],
        desc="training",
        dynamic_ncols=True,
        disable=not accelerator.is_local_main_process,
    )
    start_time, due_eval = time.monotonic(), False
    done = state["step"] >= min(args.max_train_steps, args.stop_at_step or args.max_train_steps)
    if done:
        logger.info(
            f"nothing left to train: the run is at step {state['step']} of {args.max_train_steps}"
            f"{f', --stop_at_step {args.stop_at_step}' if args.stop_at_step else ''} (a larger --max_train_steps "
            "continues it, --overwrite_output_dir starts over)"
        )
    model.train()
    with StopRequests() as stops:
        while not done and state["step"] < args.max_train_steps:
            epoch, first_batch = divmod(state["micro_batch"], batches_per_epoch)
            training_set.epoch = epoch
            start = accelerator.process_index * args.per_device_train_batch_size
            local = [
                batch[start : start + args.per_device_train_batch_size]
                for batch in epoch_batches(len(training_set), global_batch, args.seed, epoch)[first_batch:]
            ]
            # NOTE: its own generator, so creating a loader (its base seed) draws nothing from the global RNG
            # that the loss's point sampling uses; otherwise a resumed run would diverge.
            loader = torch.utils.data.DataLoader(
                training_set,
                batch_sampler=local,
                collate_fn=collate,
                num_workers=args.num_workers,
                worker_init_fn=ignore_stop_signals,
                generator=torch.Generator().manual_seed(args.seed + epoch),
            )
            for batch in loader:
                with accelerator.accumulate(model):
                    outputs = model(**{key: batch[key] for key in _MODEL_INPUTS})
                    accelerator.backward(outputs.loss)
                    if accelerator.sync_gradients and recipe.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
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
                    raise FloatingPointError(
                        f"loss is {loss} at step {state['step']}: lower the learning rate or check the data"
                    )
                state["last_loss"] = loss
                if state["step"] % args.logging_steps == 0:
                    state["history"].append({"step": state["step"], "loss": loss})
                    logs = {"train/loss": loss, "train/lr": scheduler.get_last_lr()[0]}
                    for name, value in outputs.loss_dict.items():
                        if not name[-1].isdigit():  # the auxiliary layers' terms are in the total only
                            logs[f"train/{name}"] = accelerator.reduce(value.detach(), reduction="mean").item()
                    accelerator.log(logs, step=state["step"])
                    progress.set_postfix(loss=f"{loss:.3f}")
                elapsed = time.monotonic() - start_time
                out_of_time = args.max_train_seconds is not None and elapsed > args.max_train_seconds
                stopped = args.stop_at_step is not None and state["step"] >= args.stop_at_step
                done = state["step"] >= args.max_train_steps or out_of_time or stopped
                due_eval = state["step"] % args.eval_steps == 0 or done
                # NOTE: save before evaluating, so that an evaluation that crashes never costs the checkpoint; a
                # run resumed from it finishes the evaluation first (`eval_pending`).
                by_time = 0 < 60 * args.checkpointing_minutes <= time.monotonic() - last_save
                stop, by_time = decide(accelerator, stops.signum is not None, by_time)
                if state["step"] % args.checkpointing_steps == 0 or done or stop or by_time:
                    saved_in = save()
                if stop:  # a signal: stop here; a resumed run evaluates first if this step was due to
                    raise _stopped(stops, state, args, saved_in, accelerator, progress)
                if due_eval:
                    evaluate()
                    if decide(accelerator, stops.signum is not None, False)[0]:  # a signal during the evaluation
                        due_eval = False
                        raise _stopped(stops, state, args, save(), accelerator, progress)
                if done:
                    break
            if done:
                logger.info("stopping at step %d", state["step"])
    progress.close()

    final_metrics = next((h["eval"] for h in reversed(state["history"]) if "eval" in h), None)
    if failures := [h["step"] for h in state["history"] if "eval_error" in h]:
        logger.warning("%d evaluation(s) failed, at step(s) %s; see training_history.json", len(failures), failures)
    if accelerator.is_main_process:
        save_hub_folder(accelerator.unwrap_model(model), recorded_processor, output_dir, args, final_metrics)
        (output_dir / "training_history.json").write_text(json.dumps(state["history"]))
        if args.push_to_hub:
            best = output_dir / "best"
            url = push_folder_to_hub(best if best.is_dir() else output_dir, args.hub_model_id, token=args.hub_token)
            logger.info("pushed to %s", url)
    accelerator.end_training()
    return {"state": state, "metrics": final_metrics, "recipe": asdict(recipe)}


def _read_data(args, accelerator: Accelerator, checkpoint: Path | None):
    """The training and evaluation data, checked (data/checks.py), and the run's identity (resume.py): a rerun
    with other settings than `checkpoint`'s is refused before the pass over the data."""
    train_data = build_dataset(args.dataset, args.train_split, **dataset_kwargs(args, args.train_split))
    eval_ids = train_data.id2label if train_data.task == "semantic" else None
    eval_data = build_dataset(args.dataset, args.eval_split, **dataset_kwargs(args, args.eval_split, eval_ids))
    if eval_data.id2label != train_data.id2label:
        raise InvalidInputError(
            f"{args.dataset}: the {args.train_split} and {args.eval_split} splits have different classes "
            f"({train_data.num_labels} and {eval_data.num_labels})"
        )
    logger.info(
        f"data {args.dataset}: {describe_labels(train_data, args.label_convention)}; {len(train_data)} items in the "
        f"{args.train_split!r} split, {len(eval_data)} in the {args.eval_split!r} split"
    )
    if train_data.task == "instance" and (
        args.head == "per_pixel" or args.metric_for_best_model not in (None, "mask_ap", "mask_ap50")
    ):
        raise InvalidInputError(
            "instance data (COCO JSON) has no semantic maps: it trains MaskFormer's mask classification "
            "and is scored by mask AP (--metric_for_best_model mask_ap or mask_ap50)"
        )
    if args.metric_for_best_model is None:
        args.metric_for_best_model = "mask_ap" if train_data.task == "instance" else "mean_iou"
    run = run_identity(args, train_data)
    if checkpoint is not None:
        check_same_run(checkpoint, json.loads((checkpoint / STATE_FILE).read_text()), run)
    # Every item read once, on every core, before step 1; problems reported at once (data/checks.py).
    check = {"skip_bad_items": args.skip_bad_items, "accelerator": accelerator}
    train_data = check_dataset(train_data, name=f"the {args.train_split!r} split", **check)
    eval_data = check_dataset(eval_data, name=f"the {args.eval_split!r} split", **check)
    if args.head == "per_pixel" and train_data.task == "panoptic":
        logger.info("--head per_pixel: trained on the semantic maps of the panoptic annotations, evaluated by mIoU")
    return train_data, eval_data, run


def _processors(args, train_data):
    """The processor that batches the data, the one saved with the model (it records how the label maps were read),
    and the training crop; sizes from the flags, else the base model's processor (the size it was trained at)."""
    base = None
    with contextlib.suppress(OSError):  # no base model, or one without a `preprocessor_config.json`
        base = MaskFormerImageProcessor.from_pretrained(args.model_name_or_path) if args.model_name_or_path else None
    size = getattr(base, "size", None) or {}
    base_side = size.get("shortest_edge") or (min(size["height"], size["width"]) if "height" in size else None)
    crop_size = args.crop_size or base_side or 512
    eval_side = args.eval_short_side or base_side or crop_size
    if args.min_scale * crop_size < 32:
        raise InvalidInputError(f"--min_scale x crop size must be at least 32 px, got {args.min_scale} x {crop_size}")
    settings = base.to_dict() if base is not None else {}
    if args.eval_short_side is not None or base_side is None:
        settings["size"] = {"shortest_edge": eval_side, "longest_edge": 4 * eval_side}
    processor = MaskFormerImageProcessor.from_dict(
        settings, ignore_index=train_data.ignore_index, num_labels=train_data.num_labels, do_reduce_labels=False
    )
    # NOTE: `do_reduce_labels` is transformers' field; the loader already applied it, so the processor that
    # batches the training data must not apply it again.
    recorded = MaskFormerImageProcessor.from_dict(
        {**processor.to_dict(), "do_reduce_labels": train_data.reduce_labels}
    )
    base_from = "the base model's processor" if base_side else None
    crop_from = "--crop_size" if args.crop_size else base_from or "default"
    eval_from = "--eval_short_side" if args.eval_short_side else base_from or "the crop"
    model_from = f"from {args.model_name_or_path}" if args.model_name_or_path else f"preset {args.model_preset}"
    logger.info(
        f"model {model_from}; training crop {crop_size} px ({crop_from}), evaluation short side {eval_side} px "
        f"({eval_from})"
    )
    return processor, recorded, crop_size


def _stopped(stops: StopRequests, state: dict, args, checkpoint: Path, accelerator, progress) -> TrainingStopped:
    progress.close()
    if accelerator.is_main_process:
        (Path(args.output_dir) / "training_history.json").write_text(json.dumps(state["history"]))
    accelerator.end_training()
    return TrainingStopped(stops.signum, state["step"], args.max_train_steps, checkpoint)


def evaluate_and_record(model, processor, recorded_processor, eval_data, accelerator, args, state: dict) -> None:
    """Evaluate, log, append to `state["history"]` and keep the best model in `output_dir/best`.

    NOTE: an evaluation error does not stop a single-process run (logged with its traceback, recorded as
    `eval_error`): the step's checkpoint is already saved and the failure is usually in the data or the metric,
    not the weights. `--stop_on_eval_error` stops; so does any error with several processes, which may be waiting
    inside the evaluation's collective operations."""
    step, record = state["step"], {"step": state["step"], "loss": state["last_loss"]}
    settings = {
        "batch_size": args.per_device_eval_batch_size,
        "max_items": args.max_eval_items,
        "show_progress": False,
    }
    try:
        results = summary(evaluate_model(model, processor, eval_data, accelerator=accelerator, **settings))
    except Exception as error:
        if args.stop_on_eval_error or accelerator.num_processes > 1:
            raise
        record["eval_error"] = f"{type(error).__name__}: {error}"
        logger.warning(
            f"evaluation at step {step} failed; training goes on (its checkpoint is saved; --stop_on_eval_error "
            f"stops instead): {record['eval_error']}",
            exc_info=True,
        )
        state["history"].append(record)
        return
    accelerator.log({f"eval/{k}": v for k, v in results.items() if v is not None}, step=step)
    logger.info("step %d: %s", step, {k: round(v, 4) for k, v in results.items() if v is not None})
    state["history"].append(record | {"eval": results})
    score = results.get(args.metric_for_best_model)
    if score is not None and (state["best_metric"] is None or score > state["best_metric"]):
        state.update(best_metric=score, best_step=step)
        if accelerator.is_main_process:
            save_hub_folder(
                accelerator.unwrap_model(model), recorded_processor, Path(args.output_dir) / "best", args, results
            )
