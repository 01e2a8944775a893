"""Atomic, resumable training checkpoints and the Hub-ready output folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

from ..hub import build_model_card

logger = logging.getLogger(__name__)

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
