"""Resumable checkpoints that are either complete and verified or ignored, and the Hub-ready output folder.

`checkpoints/checkpoint-<step>` holds Accelerate's state, `trainer_state.json` and, written last, `manifest.json`
(each file's size and SHA-256). It is written as `checkpoint-<step>.partial`, fsync'ed, then renamed into place, so
a kill at any moment leaves the earlier checkpoints untouched or a new one that verifies.

NOTE: not Accelerate's `ProjectConfiguration(automatic_checkpoint_naming, total_limit)`: it names folders by save
count, not step, deletes the oldest checkpoint before the new one is written (with a limit of 1 a crash mid-save
leaves none) and writes in place, with nothing that tells a complete checkpoint from a truncated one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator
from huggingface_hub.utils.sha import sha_fileobj

from ..errors import InvalidInputError
from ..interop.hub import build_model_card
from ..interop.saving import make_weights_readable
from ..interop.transformers_folder import is_transformers_folder

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"checkpoint-(\d+)")
_LEFTOVER = re.compile(r"checkpoint-(\d+)\.(partial|replaced)")


class CheckpointError(InvalidInputError):
    """A checkpoint is incomplete or damaged; the message names the folder and the file."""


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, total_limit: int | None) -> Path:
    """Write `state` and Accelerate's state as `output_dir/checkpoints/checkpoint-<step>`, then keep the
    `total_limit` newest checkpoints (None: all), never the one just written."""
    if total_limit is not None and total_limit < 1:
        raise InvalidInputError(f"checkpoints_total_limit must be >= 1 (or None to keep all), got {total_limit}")
    final = Path(output_dir) / "checkpoints" / f"checkpoint-{state['step']}"
    partial, aside = final.with_name(final.name + ".partial"), final.with_name(final.name + ".replaced")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)  # before any process writes its random state into it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        make_weights_readable(partial)
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
        write_manifest(partial)
        shutil.rmtree(aside, ignore_errors=True)
        if final.exists():  # the same step saved again (a run resumed from an older checkpoint)
            logger.info("replacing %s with the one just saved at the same step", final)
            os.replace(final, aside)
        os.replace(partial, final)
        _fsync(final.parent)
        shutil.rmtree(aside, ignore_errors=True)
        rotate_checkpoints(output_dir, total_limit, keep=final)
    accelerator.wait_for_everyone()
    return final


def write_manifest(folder: Path) -> None:
    """fsync every file of `folder`, then write and fsync `manifest.json` (each file's size and SHA-256)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    with open(folder / MANIFEST_FILE, "w") as handle:
        json.dump({"format": 1, "files": files}, handle, indent=1)
    _fsync(folder / MANIFEST_FILE)
    _fsync(folder)


def rotate_checkpoints(output_dir: Path, total_limit: int | None, keep: Path) -> None:
    """Delete all but the `total_limit` newest checkpoints, never `keep`, and leftovers of interrupted saves."""
    for leftover in (Path(output_dir) / "checkpoints").iterdir():
        if _LEFTOVER.fullmatch(leftover.name) and leftover.is_dir() and leftover.name.split(".")[0] != keep.name:
            logger.info("removing %s, left by an interrupted save", leftover)
            shutil.rmtree(leftover)
    others = [c for c in list_checkpoints(output_dir) if c.name != keep.name]
    for old in others[: max(len(others) - (total_limit - 1), 0)] if total_limit is not None else ():
        logger.info("removing %s: --checkpoints_total_limit %d keeps the newest", old, total_limit)
        shutil.rmtree(old)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha_fileobj(handle).hex()


def _fsync(path: Path) -> None:
    """Make a file, or a rename or a new file in a folder, durable (a no-op for folders where they can't be opened)."""
    if path.is_dir() and not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Folders named `checkpoint-<step>` under `output_dir/checkpoints`, oldest first, not verified."""
    folder = Path(output_dir) / "checkpoints"
    found = [p for p in folder.iterdir() if _NAME.fullmatch(p.name) and p.is_dir()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def verify_checkpoint(checkpoint: Path) -> dict:
    """Check `checkpoint` against its manifest and return its trainer state; `CheckpointError` names the first file
    that is missing or differs."""
    checkpoint = Path(checkpoint)
    manifest = checkpoint / MANIFEST_FILE
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint}: no such folder")
    if not manifest.is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint}: no {MANIFEST_FILE}, so it is not a complete checkpoint (an interrupted save, "
            f"a folder that is not a checkpoint, or one written by a version without manifests)"
        )
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest} is damaged ({error})") from error
    if STATE_FILE not in files:
        raise CheckpointError(f"{manifest} does not list {STATE_FILE}")
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {MANIFEST_FILE})")
        if (size := path.stat().st_size) != expected["size"]:
            raise CheckpointError(
                f"{path} has {size} bytes, the manifest says {expected['size']} (truncated or overwritten)"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path} does not match its checksum in {MANIFEST_FILE} (damaged)")
    return json.loads((checkpoint / STATE_FILE).read_text())


def resolve_checkpoint(
    resume_from: str, output_dir: Path, *, num_processes: int = 1, allow_missing_random_states: bool = False
) -> Path | None:
    """`"latest"` (the newest checkpoint in `output_dir` that verifies, warning for each newer one skipped; None
    when there is none) or a folder (an error unless it verifies).

    NOTE: Accelerate resumes without a process's `random_states_<i>.pkl` with an INFO line, and the losses then
    differ from an uninterrupted run: an error here, or with `allow_missing_random_states` a warning."""
    checkpoint, problems = Path(resume_from), []
    candidates = list_checkpoints(output_dir) if resume_from == "latest" else [checkpoint]
    if not candidates:
        logger.warning("--resume_from_checkpoint latest: no checkpoint in %s, starting from step 0", output_dir)
        return None
    for checkpoint in reversed(candidates):
        try:
            verify_checkpoint(checkpoint)
            break
        except CheckpointError as error:
            if resume_from != "latest":
                raise
            logger.warning("--resume_from_checkpoint latest: skipping %s: %s", checkpoint.name, error)
            problems.append(str(error))
    else:
        raise CheckpointError(
            f"--resume_from_checkpoint latest: none of the {len(candidates)} checkpoint(s) in "
            f"{Path(output_dir) / 'checkpoints'} verifies:\n  " + "\n  ".join(problems) + "\nMove them away to start "
            "from step 0."
        )
    missing = [f"random_states_{i}.pkl" for i in range(num_processes)]
    if missing := [name for name in missing if not (checkpoint / name).is_file()]:
        message = (
            f"checkpoint {checkpoint} has no {', '.join(missing)} (written by fewer processes, or deleted): the "
            f"resumed run's random numbers, and so its losses, will differ from an uninterrupted run"
        )
        if not allow_missing_random_states:
            raise CheckpointError(message + ". Pass --allow_missing_random_states to resume anyway.")
        logger.warning("!!! %s. Resuming anyway (--allow_missing_random_states).", message)
    return checkpoint


def save_hub_folder(model, processor, folder: Path, args, metrics: dict | None) -> None:
    """The model, its processor, a model card and `eval_results.json`: the folder `push_to_hub` uploads."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    card = build_model_card(
        model.config,
        repo_id=args.hub_model_id or f"your-name/{Path(args.output_dir).name}",
        metrics=metrics,
        dataset=args.dataset,
        base_model=args.model_name_or_path,
        training_args={k: v for k, v in vars(args).items() if k != "hub_token"},
        transformers_native=is_transformers_folder(folder),
    )
    card.save(folder / "README.md")
    if metrics:
        (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2))
