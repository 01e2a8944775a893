"""Batch prediction (`scripts/predict.py`, guide: `docs/predict.md`): the image files that files, folders and glob
patterns name (`expand_inputs`) in, the files of `prediction_writers` out under `<out>/<task>/`, plus
`<out>/predictions.json` (settings, per image its files and segments, summary). Nothing is lost: unreadable images are
skipped and reported, the JSON files are written every `flush_seconds` and at the end (also on a bug, Ctrl-C or
SIGTERM), and the same inputs and settings into the same folder resume the earlier run.

NOTE: MaskFormer, like the original, does not read `pixel_mask`, so padding an image to a larger batch-mate would
change its predictions: only images of one padded size share a batch (`forward_batches`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from tqdm.auto import tqdm

from ..data.labels import segment, task_caveats
from ..data.progress import write_json
from ..errors import InvalidInputError, MissingInputError
from .prediction_writers import WRITERS, ImageRecord

logger = logging.getLogger(__name__)

TASKS = tuple(WRITERS)  # semantic, panoptic, instance
INDEX_FILE = "predictions.json"
FREE_KEYS = ("batch_size", "device")  # the run settings that change nothing: every other must match to resume
FILE_FIELDS = ("overlay", "mask", "png")  # the fields of an image's entry that name a file
Progress = Literal["auto", "bar", "lines", "none"]


def resolve_device(name: str, *, torch_model: bool = True) -> torch.device:
    """ "auto" (CUDA if there is one and the model is PyTorch's, else the CPU), "cpu", "cuda", "cuda:N" or "mps"."""
    if name == "auto":
        return torch.device("cuda" if torch_model and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInputError(f"device {name!r}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"device {name!r}: not supported here (auto, cpu, cuda, cuda:N, mps)")
    if not torch_model and device.type != "cpu":
        raise InvalidInputError(f"device {name!r}: an exported model (ONNX / OpenVINO) runs on the CPU only; use cpu")
    why = None
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        why += f" (torch {torch.__version__})"
    elif device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        why = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        why = "MPS needs Apple silicon, macOS 12.3+ and a torch built with it"
    if why:
        raise InvalidInputError(f"device {name!r} is not available: {why}; use cpu")
    return device


# Extensions of the formats PIL can open (not those it can only write, such as .pdf).
IMAGE_EXTENSIONS = frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


class UnreadableImageError(Exception):
    """A file PIL cannot decode; batch prediction reports it and goes on."""


def _images(candidates: Iterable[Path], root: Path | None, exclude: list[Path]) -> list[Path]:
    return sorted(
        path
        for path in candidates
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not (root and any(part.startswith(".") for part in path.relative_to(root).parts))
        and path.is_file()
        and not any(path.resolve().is_relative_to(folder) for folder in exclude)
    )


def expand_inputs(
    inputs: Iterable[str | os.PathLike], *, recursive: bool = False, exclude: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """The image files that `inputs` name, none inside the folders `exclude` (the output folder); a folder without
    images, a pattern matching none or a missing path is a user error naming it."""
    exclude = [Path(folder).resolve() for folder in exclude]
    paths: dict[Path, Path] = {}  # resolved -> as given: each file once
    for given in inputs:
        text = str(given)
        path = Path(text).expanduser()
        if path.is_dir():
            found = _images(path.rglob("*") if recursive else path.iterdir(), path, exclude)
            if not found:
                subfolders = not recursive and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
                hint = "; its subfolders are searched with --recursive" if subfolders else ""
                raise InvalidInputError(
                    f"{text}: no image files in this folder (extensions PIL reads, e.g. .jpg, .png){hint}"
                )
        elif path.is_file():
            found = [path]
        elif any(character in text for character in "*?["):
            found = _images(map(Path, glob.glob(os.path.expanduser(text), recursive=True)), None, exclude)
            if not found:
                raise InvalidInputError(f"{text}: the pattern matches no image files")
        elif path.exists():
            raise InvalidInputError(f"{text}: neither a file nor a folder")
        else:
            raise MissingInputError(f"{text}: no such file or folder")
        for image in found:
            paths.setdefault(image.resolve(), image)
    if not paths:
        raise InvalidInputError("no input images given")
    return list(paths.values())


def output_names(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """Per path, (file_name, key): its path relative to the deepest folder holding every path, and that without its
    suffix (kept where two files differ only by it), made unique."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    names = [p.relative_to(root).as_posix() for p in absolute]
    stems = [name.removesuffix(Path(name).suffix) for name in names]
    counts = Counter(stems)
    keys, used = [], set()
    for name, stem in zip(names, stems):
        key = stem if counts[stem] == 1 else name
        while key in used:  # only for contrived names (`a.jpg` beside `a.jpg.png` and `a.jpg.gif`)
            key += "_"
        used.add(key)
        keys.append(key)
    return list(zip(names, keys))


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path` as RGB, EXIF orientation applied (as transformers' `load_image`)."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImageError("not an image (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"cannot decode it ({type(error).__name__}: {error})") from None


# What post-processing reads of a model's outputs ("logits": the per-pixel baseline's).
OUTPUT_FIELDS = ("class_queries_logits", "masks_queries_logits", "logits", "pixel_mask")


def forward_batches(
    model, inputs: Sequence[Mapping[str, Tensor]], *, batch_size: int, device: torch.device | str
) -> Iterator[tuple[list[int], list[dict[str, Tensor]]]]:
    """Per forward pass over `inputs` (each the processor's output for ONE image): the positions it covered and their
    outputs, each as a batch of one."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for position, single in enumerate(inputs):
        by_size.setdefault(tuple(single["pixel_values"].shape[-2:]), []).append(position)
    for positions in by_size.values():
        for chunk in (positions[i : i + batch_size] for i in range(0, len(positions), batch_size)):
            batch = {
                key: torch.cat([inputs[p][key] for p in chunk]).to(device) for key in ("pixel_values", "pixel_mask")
            }
            outputs = model(**batch)
            fields = [name for name in OUTPUT_FIELDS if outputs.get(name) is not None]
            yield chunk, [{name: outputs[name][i : i + 1] for name in fields} for i in range(len(chunk))]


def forward_by_padded_size(
    model, inputs: Sequence[Mapping[str, Tensor]], *, batch_size: int, device: torch.device | str
) -> list[dict[str, Tensor]]:
    """Per input, in input order, the model's outputs as a batch of one."""
    outputs: dict[int, dict[str, Tensor]] = {}
    for chunk, singles in forward_batches(model, inputs, batch_size=batch_size, device=device):
        outputs.update(zip(chunk, singles))
    return [outputs[position] for position in range(len(inputs))]


@dataclass
class PredictionSummary:
    """What a run did. `exit_status`: 0 every image done, 1 some skipped, 128 + the signal's number when stopped by one
    (130 for Ctrl-C, 143 for SIGTERM)."""

    out_dir: Path
    total: int
    done: list[str] = field(default_factory=list)  # predicted by this run
    resumed: list[str] = field(default_factory=list)  # done by an earlier run into the same folder
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM"
    forward_passes: int = 0
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)  # the JSON files written

    @property
    def exit_status(self) -> int:
        if self.stopped_by is not None:
            return 128 + signal.Signals[self.stopped_by].value
        return 1 if self.skipped else 0

    def as_dict(self, *, finished: bool = True) -> dict[str, Any]:
        return {
            "finished": finished,
            "images": self.total,
            "done": len(self.done) + len(self.resumed),
            "resumed": len(self.resumed),
            "skipped": self.skipped,
            "stopped_by": self.stopped_by,
            "forward_passes": self.forward_passes,
            "seconds": round(self.seconds, 3),
        }

    def report(self) -> str:
        done = len(self.done) + len(self.resumed)
        earlier = f", {len(self.resumed)} of them by the earlier run" if self.resumed else ""
        lines = [
            f"{done} of {self.total} images done{earlier}, in {self.seconds:.1f} s ({self.forward_passes} forward "
            f"passes); outputs in {self.out_dir}"
        ]
        if self.stopped_by:
            lines.append(
                f"stopped by {self.stopped_by}: {self.total - done - len(self.skipped)} images not predicted; the "
                "results of those done are written (run the command again to go on)"
            )
        if self.skipped:
            lines.append(f"{len(self.skipped)} skipped:")
            lines.extend(f"  {path}: {reason}" for path, reason in self.skipped.items())
        lines.extend(f"wrote {path}" for path in self.files)
        return "\n".join(lines)


class _Progress:
    """A tqdm bar on a terminal, else one stderr line per image `[k/N] path: note`; "none": only problems.
    NOTE: lines wait for those of the images before them in `order`: an unreadable file is found when its window is
    read, before the forward passes of the images ahead of it."""

    def __init__(self, total: int, mode: Progress, order: Sequence[int]):
        self.mode = ("bar" if sys.stderr.isatty() else "lines") if mode == "auto" else mode
        self.total, self.order, self.pending = total, deque(order), {}
        bar = {
            "total": total,
            "initial": total - len(order),
            "desc": "predicting",
            "unit": "image",
            "file": sys.stderr,
        }
        self.bar = tqdm(**bar) if self.mode == "bar" else None

    def step(self, position: int, path: Path, note: str, *, problem: bool = False) -> None:
        if self.bar is not None:
            if problem:
                tqdm.write(f"{path}: {note}", file=sys.stderr)
            self.bar.update(1)
        elif self.mode == "lines" or problem:
            self.pending[position] = f"[{position + 1}/{self.total}] {path}: {note}"
            while self.order and self.order[0] in self.pending:
                print(self.pending.pop(self.order.popleft()), file=sys.stderr, flush=True)

    def close(self) -> None:
        for position in sorted(self.pending):  # a run stopped early
            print(self.pending[position], file=sys.stderr, flush=True)
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[dict[str, str]]:
    """SIGINT / SIGTERM set the dict's "name" (stop after this forward pass) and restore the previous handler, so a
    second one stops the program at once. Main thread only."""
    stop, previous = {}, {}

    def handle(number: int, frame) -> None:
        stop["name"] = signal.Signals(number).name
        signal.signal(number, previous[number])
        tqdm.write(
            f"{stop['name']}: stopping after the current forward pass and writing the results "
            "(send it again to stop at once)",
            file=sys.stderr,
        )

    for number in (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ():
        current = signal.getsignal(number)
        if current is not signal.SIG_IGN:  # NOTE: an ignored signal (nohup) stays ignored
            previous[number] = signal.SIG_DFL if current is None else current
            signal.signal(number, handle)
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _earlier_entries(out_dir: Path, run: dict[str, Any], overwrite: bool) -> dict[int, dict]:
    """By image id, the entries of the images an earlier run into `out_dir` finished, their files present; a user
    error when it had other settings, unless `overwrite` (then its outputs are removed)."""
    index_path = out_dir / INDEX_FILE
    if not index_path.is_file():
        return {}
    if overwrite:
        earlier = [out_dir / name for name in (*TASKS, INDEX_FILE) if (out_dir / name).exists()]
        names = ", ".join(p.name for p in earlier)
        tqdm.write(f"overwrite: removing the earlier predictions in {out_dir} ({names})", file=sys.stderr)
        for path in earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return {}
    try:
        earlier = json.loads(index_path.read_text())
        if not isinstance(earlier, dict) or not {"run", "summary", "images"} <= set(earlier):
            raise ValueError("no run, summary, images")
    except ValueError as error:  # also json.JSONDecodeError, UnicodeDecodeError
        raise InvalidInputError(
            f"{index_path}: not a predictions.json written by batch prediction ({error}); pass --overwrite "
            "(overwrite=True) to start over"
        ) from None
    was = earlier["run"]
    keys = [k for k in {**was, **run} if k not in FREE_KEYS]
    differences = [f"{k} {was.get(k)!r} -> {run.get(k)!r}" for k in keys if was.get(k) != run.get(k)]
    if differences:
        raise InvalidInputError(
            f"{out_dir} holds predictions of another run ({'; '.join(differences)}): pass --overwrite "
            "(overwrite=True) to replace them, or choose another output folder"
        )
    kept = {}
    for entry in earlier["images"]:
        files = [entry[task][k] for task in run["tasks"] for k in FILE_FIELDS if entry[task].get(k)]
        if all((out_dir / name).is_file() for name in files):
            kept[entry["id"]] = entry
    return kept


@torch.inference_mode()
def predict_images(
    model,
    processor,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tasks: Sequence[str] = ("panoptic",),
    batch_size: int = 1,
    device: str | torch.device = "auto",
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    fuse_stuff: bool = True,
    overlays: bool = True,
    overwrite: bool = False,
    progress: Progress = "auto",
    flush_seconds: float = 300.0,
    run_info: dict[str, Any] | None = None,
) -> PredictionSummary:
    """Predict `paths` into `out_dir` (see the module docstring); `run_info` (e.g. the model's name) must match for a
    later run to resume this one. Instance output lists thing classes only (`config.thing_ids`; None: every class is
    a thing); panoptic output fuses each stuff class's segments unless `fuse_stuff=False`."""
    if not tasks or set(tasks) - set(TASKS):
        raise InvalidInputError(f"tasks must be some of {', '.join(TASKS)}; got {list(tasks)}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(str(device), torch_model=isinstance(model, torch.nn.Module))
    model = model.to(device).eval()
    out_dir = Path(out_dir)
    thing_ids = getattr(model.config, "thing_ids", None)
    if thing_ids is None and {"instance", "panoptic"} & set(tasks):
        logger.warning(
            "The model does not record which classes are things (config.thing_ids): every class is treated as a "
            "thing (instance output lists them all, panoptic output fuses none)."
        )
    name = (run_info or {}).get("model") or getattr(model.config, "name_or_path", None) or "the model"
    for line in task_caveats(model.config, tasks, str(name)):
        logger.warning("%s", line)  # NOTE: WARNING reaches stderr also where no logging is set up (predict.py)
    digest = hashlib.sha256("\n".join(str(Path(p).resolve()) for p in paths).encode()).hexdigest()
    run = {**(run_info or {}), "tasks": list(tasks), "threshold": threshold, "mask_threshold": mask_threshold}
    run |= {"overlap_threshold": overlap_threshold, "fuse_stuff": fuse_stuff, "overlays": overlays}
    run |= {"inputs": {"count": len(paths), "sha256": digest}, "batch_size": batch_size, "device": str(device)}
    post = {"threshold": threshold, "mask_threshold": mask_threshold, "overlap_mask_area_threshold": overlap_threshold}
    post |= {"thing_ids": thing_ids, "label_ids_to_fuse": None if fuse_stuff else ()}
    carried = _earlier_entries(out_dir, run, overwrite)
    id2label = model.config.id2label
    writers = {t: WRITERS[t](out_dir / t, id2label, thing_ids=thing_ids, overlays=overlays) for t in tasks}
    summary = PredictionSummary(out_dir=out_dir, total=len(paths))
    entries: dict[int, dict[str, Any]] = {}
    if carried:
        ids = set(carried)
        for writer in writers.values():
            ids &= writer.resume(ids)
        entries = {image_id: carried[image_id] for image_id in ids}
        done = f"{len(entries)} of {len(paths)} images were done"
        tqdm.write(f"resuming: {done} by the earlier run into {out_dir}", file=sys.stderr)

    def flush(finished: bool) -> list[Path]:
        summary.seconds = time.monotonic() - started
        files = [path for writer in writers.values() for path in writer.flush()]
        images = [entries[i] for i in sorted(entries)]
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / INDEX_FILE, {"run": run, "summary": summary.as_dict(finished=finished), "images": images})
        return [out_dir / INDEX_FILE, *files]

    names = output_names(paths)
    todo = [index for index in range(len(paths)) if index + 1 not in entries]
    summary.resumed = [str(paths[index]) for index in range(len(paths)) if index + 1 in entries]
    bar = _Progress(len(paths), progress, todo)
    started = last_flush = time.monotonic()
    finished = False  # every image tried (a bug or a signal leaves it False)
    window = 8 * batch_size  # images read and grouped by padded size at a time (as the evaluator)
    try:
        with _stop_on_signal() as stop:
            for first in range(0, len(todo), window):
                if stop:
                    break
                loaded = []
                for index in todo[first : first + window]:
                    try:
                        image = read_image(paths[index])
                    except UnreadableImageError as error:
                        summary.skipped[str(paths[index])] = str(error)
                        bar.step(index, paths[index], f"skipped: {error}", problem=True)
                        continue
                    loaded.append((index, ImageRecord(index + 1, *names[index], image.height, image.width), image))
                inputs = [processor([image], return_tensors="pt") for _, _, image in loaded]
                for chunk, outputs in forward_batches(model, inputs, batch_size=batch_size, device=device):
                    summary.forward_passes += 1
                    for position, single in zip(chunk, outputs):
                        index, record, image = loaded[position]
                        entry = {"file": str(paths[index]), **record.coco_image()}
                        size = [(record.height, record.width)]
                        for task, writer in writers.items():
                            binary = task == "instance"
                            [result] = segment(
                                processor, single, task, target_sizes=size, return_binary_maps=binary, **post
                            )
                            written = writer.add(record, image, result)
                            entry[task] = {
                                k: Path(os.path.relpath(v, out_dir)).as_posix() if k in FILE_FIELDS and v else v
                                for k, v in written.items()
                            }
                        entries[record.image_id] = entry
                        summary.done.append(str(paths[index]))
                        counts = (len(entry[t]["segments"]) for t in tasks)
                        notes = (f"{t}: {n} segment{'' if n == 1 else 's'}" for t, n in zip(tasks, counts))
                        bar.step(index, paths[index], ", ".join(notes))
                    if stop:
                        break
                    if time.monotonic() - last_flush > flush_seconds:
                        flush(finished=False)
                        last_flush = time.monotonic()
            summary.stopped_by = stop.get("name")
            finished = not stop
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        summary.stopped_by = "SIGINT"
    finally:
        bar.close()
        summary.files = flush(finished=finished)
    return summary
