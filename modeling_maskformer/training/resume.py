"""What a training command does with its `--output_dir`: a rerun resumes from the newest checkpoint that verifies
(as detectron2's `--resume`), a checkpoint of a different run is refused in one line, an earlier run's results
without a checkpoint are never overwritten, and `--overwrite_output_dir` removes them, naming each.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import InvalidInputError
from .checkpoints import CheckpointError, list_checkpoints, resolve_checkpoint

logger = logging.getLogger(__name__)

# What a training run writes into its output folder (`--overwrite_output_dir` removes exactly these).
RUN_OUTPUTS = (
    "checkpoints best training_history.json config.json model.safetensors preprocessor_config.json README.md "
    "eval_results.json"
).split()
# The settings that make a checkpoint belong to one run: a rerun that changes any of them is another run.
IDENTITY = {
    "dataset": "--dataset",
    "dataset_config_name": "--dataset_config_name",
    "model": "--model_name_or_path / --model_preset",
    "head": "--head",
    "classes": "the classes (id2label)",
    "label_convention": "--label_convention",
    "held_out": "the held-out validation split (--train_val_split)",
}
# Arguments that may change between a run and its resumption without a word.
_UNREMARKABLE = {
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "hub_token",
    "allow_missing_random_states",
}


def _where(value: str) -> str:
    """A path as an absolute path (a rerun from another folder names the same data), anything else as it is."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def run_identity(args, dataset) -> dict:
    """What identifies a run (`IDENTITY`, kept in every checkpoint's trainer state) and its plain arguments."""
    plain = (int, float, str, bool, type(None))
    return {
        "dataset": _where(str(args.dataset)),
        "dataset_config_name": args.dataset_config_name,
        "model": _where(args.model_name_or_path) if args.model_name_or_path else f"preset {args.model_preset}",
        "head": args.head,
        "classes": {str(k): v for k, v in dataset.id2label.items()},
        "label_convention": None if dataset.task != "semantic" else ("ade" if dataset.reduce_labels else "as_is"),
        "held_out": None if dataset.held_out is None else dataset.held_out.to_dict(),
        "args": {k: v for k, v in vars(args).items() if k not in _UNREMARKABLE and isinstance(v, plain)},
    }


def start_from(args, output_dir: Path, num_processes: int, *, clear: bool = True) -> Path | None:
    """The checkpoint this run resumes from (None: step 0). With `--overwrite_output_dir` the earlier outputs are
    removed when `clear` (the main process; the others wait for it)."""
    output_dir = Path(output_dir)
    earlier = [output_dir / name for name in RUN_OUTPUTS if (output_dir / name).exists()]
    if args.overwrite_output_dir:
        checkpoints = ", ".join(p.name for p in list_checkpoints(output_dir)) or "no checkpoint"
        described = [f"{p.name}/ ({checkpoints})" if p.name == "checkpoints" else p.name for p in earlier]
        if earlier and clear:
            logger.warning(
                "--overwrite_output_dir: removing the earlier run's %s from %s", ", ".join(described), output_dir
            )
        for path in earlier if clear else ():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return None
    resume = args.resume_from_checkpoint or ("latest" if list_checkpoints(output_dir) else None)
    if resume is None:
        if found := [p.name for p in earlier if p.name != "checkpoints"]:
            raise InvalidInputError(
                f"{output_dir} holds the results of an earlier run ({', '.join(found)}) but no checkpoint to resume "
                f"from: pass --overwrite_output_dir to start over (it removes them), or choose another --output_dir"
            )
        return None
    try:
        return resolve_checkpoint(
            resume,
            output_dir,
            num_processes=num_processes,
            allow_missing_random_states=args.allow_missing_random_states,
        )
    except CheckpointError as error:
        if args.resume_from_checkpoint is None:  # found by itself: say how to start over instead
            raise CheckpointError(f"{error} (or pass --overwrite_output_dir to start over)") from error
        raise


def check_same_run(checkpoint: Path, state: dict, run: dict) -> None:
    """Refuse (one line) to resume a checkpoint written by a different run; log the arguments that changed."""
    saved = state.get("run")
    if saved is None:
        logger.warning(
            "%s records no run settings (an older version wrote it): resuming without checking that it is this run's",
            checkpoint,
        )
        return
    differences = [
        f"{flag}: {_short(key, saved[key])} then, {_short(key, run[key])} now"
        for key, flag in IDENTITY.items()
        if key in saved and saved[key] != run[key]  # a key an older version did not record: not compared
    ]
    if differences:
        raise InvalidInputError(
            f"{checkpoint} belongs to a different run ({'; '.join(differences)}): pass --overwrite_output_dir to start "
            f"over in {checkpoint.parent.parent}, or choose another --output_dir"
        )
    before, now = saved.get("args", {}), run["args"]
    if changed := [f"--{k} {before[k]} -> {now[k]}" for k in sorted(now) if k in before and before[k] != now[k]]:
        logger.info("settings changed since %s: %s", checkpoint.name, ", ".join(changed))


def _short(key: str, value) -> str:
    if key == "held_out" and value is not None:  # data.splits.HoldOut.to_dict()
        return f"{value['fraction']:g} of {value['items']} items in {value['subset']!r}"
    if isinstance(value, dict):
        names = list(value.values())
        return f"{len(names)} classes ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
    return repr(value)
