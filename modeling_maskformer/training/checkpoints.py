"""Resumable training checkpoints that are either complete and verified or ignored, and the Hub-ready folder.

A checkpoint is the folder `checkpoints/checkpoint-<step>` holding Accelerate's state (model, optimizer,
scheduler, one `random_states_<process>.pkl` per process), `trainer_state.json` and, written last,
`manifest.json`: every other file's name, size and SHA-256. It is written as `checkpoint-<step>.partial`,
every file and the folder are fsync'ed, and only then is it renamed into place, so a kill or a power cut at
any moment leaves either the previous checkpoints untouched or a new one that verifies.
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
MANIFEST_FORMAT = 1
_NAME = re.compile(r"checkpoint-(\d+)")
_LEFTOVER = re.compile(r"checkpoint-(\d+)\.(partial|replaced)")


class CheckpointError(InvalidInputError):
    """A checkpoint is incomplete or damaged; the message names the folder and the file."""


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, total_limit: int | None) -> Path:
    """Write `state` and Accelerate's state as `output_dir/checkpoints/checkpoint-<step>` (see the module
    docstring), then keep the `total_limit` newest checkpoints (None: all), never the one just written."""
    if total_limit is not None and total_limit < 1:
        raise InvalidInputError(f"checkpoints_total_limit must be >= 1 (or None to keep all), got {total_limit}")
    final = Path(output_dir) / "checkpoints" / f"checkpoint-{state['step']}"
    partial, aside = final.with_name(final.name + ".partial"), final.with_name(final.name + ".replaced")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)  # before any process writes its random state into it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process's files are written
    if accelerator.is_main_process:
        make_weights_readable(partial)
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
        write_manifest(partial)
        shutil.rmtree(aside, ignore_errors=True)
        if final.exists():  # the same step saved again (a run resumed from an older checkpoint)
            logger.info("replacing %s with the one just saved at the same step", final)
            os.replace(final, aside)
        os.replace(partial, final)
        _fsync_directory(final.parent)
        shutil.rmtree(aside, ignore_errors=True)
        rotate_checkpoints(output_dir, total_limit, keep=final)
    accelerator.wait_for_everyone()
    return final


def write_manifest(folder: Path) -> dict:
    """fsync every file of `folder`, then write `manifest.json` (name, size, SHA-256 of each) and fsync it
    and the folder. Returns the manifest."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    with open(folder / MANIFEST_FILE, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_directory(folder)
    return manifest


def rotate_checkpoints(output_dir: Path, total_limit: int | None, keep: Path) -> None:
    """Delete all but the `total_limit` newest checkpoints (by step), never `keep`; remove leftovers of
    interrupted saves (`*.partial`, `*.replaced`) of other steps."""
    for leftover in (Path(output_dir) / "checkpoints").iterdir():
        if _LEFTOVER.fullmatch(leftover.name) and leftover.is_dir() and leftover.name.split(".")[0] != keep.name:
            logger.info("removing %s, left by an interrupted save", leftover)
            shutil.rmtree(leftover)
    if total_limit is None:
        return
    others = [c for c in list_checkpoints(output_dir) if c.name != keep.name]
    for old in others[: max(len(others) - (total_limit - 1), 0)]:
        logger.info("removing %s: --checkpoints_total_limit %d keeps the newest", old, total_limit)
        shutil.rmtree(old)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha_fileobj(handle).hex()


def _fsync_directory(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (POSIX; a no-op where directories can't be opened)."""
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Folders named `checkpoint-<step>` under `output_dir/checkpoints`, oldest first (not verified; other
    names such as `checkpoint-30-backup` or `checkpoint-30.partial` are not checkpoints)."""
    folder = Path(output_dir) / "checkpoints"
    found = [p for p in folder.iterdir() if _NAME.fullmatch(p.name) and p.is_dir()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints that verify (`verify_checkpoint`, which reads every file), oldest first."""
    complete = []
    for checkpoint in list_checkpoints(output_dir):
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError:
            continue
        complete.append(checkpoint)
    return complete


def verify_checkpoint(checkpoint: Path) -> dict:
    """Check `checkpoint` against its manifest (every file present, same size, same SHA-256) and return its
    trainer state. Raises `CheckpointError` naming the first file that is missing or differs."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint}: no such folder")
    manifest_path = checkpoint / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint}: no {MANIFEST_FILE}, so it is not a complete checkpoint (an interrupted save, "
            f"a folder that is not a checkpoint, or one written by a version without manifests)"
        )
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path} is damaged ({error})") from error
    if STATE_FILE not in files:
        raise CheckpointError(f"{manifest_path} does not list {STATE_FILE}")
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
    """The checkpoint to resume from: `"latest"` (the newest one in `output_dir` that verifies, with a
    warning for each newer one skipped; None when there is none) or a folder (an error unless it verifies).

    NOTE: Accelerate resumes without a process's `random_states_<i>.pkl` (a checkpoint written by fewer
    processes, or deleted files) with an INFO line, and the losses then differ from an uninterrupted run: an
    error here, or with `allow_missing_random_states` a warning."""
    checkpoint = Path(resume_from)
    if resume_from == "latest":
        candidates, problems = list_checkpoints(output_dir), []
        if not candidates:
            logger.warning("--resume_from_checkpoint latest: no checkpoint in %s, starting from step 0", output_dir)
            return None
        for checkpoint in reversed(candidates):
            try:
                verify_checkpoint(checkpoint)
                break
            except CheckpointError as error:
                logger.warning("--resume_from_checkpoint latest: skipping %s: %s", checkpoint.name, error)
                problems.append(str(error))
        else:
            raise CheckpointError(
                f"--resume_from_checkpoint latest: none of the {len(candidates)} checkpoint(s) in "
                f"{Path(output_dir) / 'checkpoints'} verifies:\n  "
                + "\n  ".join(problems)
                + "\nMove them away to start from step 0."
            )
    else:
        verify_checkpoint(checkpoint)
    missing = [f"random_states_{i}.pkl" for i in range(num_processes)]
    missing = [name for name in missing if not (checkpoint / name).is_file()]
    if missing:
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
