"""Batch prediction: files, folders and globs in; overlays, class-index PNGs, COCO panoptic and COCO instance files
out (`prediction_writers.py`). `scripts/predict.py` is its command line.

    from modeling_maskformer.app import load_model
    from modeling_maskformer.batch_predict import expand_inputs, predict_images

    paths = expand_inputs(["photos/", "more/*.jpg"], recursive=True)
    model, processor = load_model("outputs/my-model")
    summary = predict_images(model, processor, paths, "predictions/", tasks=["panoptic", "instance"], batch_size=4)
    print(summary.report())

- Inputs: a file is taken as given; a folder gives its files with an extension PIL reads (`IMAGE_EXTENSIONS`), hidden
  ones (".name") left out, its subfolders too with `recursive=True`; a pattern (`*`, `?`, `[`; `**` for any depth)
  gives the matching files with such an extension. Sorted within each input; duplicates dropped.
- Images are read as transformers' `load_image` reads them (EXIF orientation applied, RGB); one that cannot be read
  is reported and skipped, and the run goes on.
- Batches hold images of one padded size only (`modeling_maskformer.batching`): results do not depend on
  `batch_size`.
- Outputs go to `<out>/<task>/`, named after the input's path relative to the deepest folder holding every input
  (`photos/a/1.jpg` -> `a/1.png`), plus `<out>/predictions.json` (settings, per image its files and segments, the
  summary). The files of every image done are written also when a run stops early: on a file that cannot be read,
  on a bug (the traceback follows), or on Ctrl-C / SIGTERM, which stop the run after the current forward pass (a
  second one stops it at once).
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .batching import forward_batches
from .prediction_writers import WRITERS, ImageRecord, write_json

logger = logging.getLogger(__name__)

TASKS = tuple(WRITERS)  # semantic, panoptic, instance
INDEX_FILE = "predictions.json"
GLOB_CHARACTERS = "*?["
# Extensions of the formats PIL can open (not those it can only write, such as .pdf).
IMAGE_EXTENSIONS = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)
Progress = Literal["auto", "bar", "lines", "none"]


class UnreadableImageError(Exception):
    """An input file that is not an image PIL can decode; the run reports it and goes on."""


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path
        for path in candidates
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    )


def expand_inputs(inputs: Iterable[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """The image files that `inputs` (files, folders, glob patterns) name, in order (see the module docstring). A
    folder without images, a pattern that matches none or a missing path is a ValueError / FileNotFoundError."""
    paths, seen = [], set()
    for given in inputs:
        text = str(given)
        path = Path(text).expanduser()
        if path.is_dir():
            found = _folder_images(path, recursive)
            if not found:
                subfolders = not recursive and any(
                    p.is_dir() and not p.name.startswith(".") for p in path.iterdir()
                )
                hint = "; its subfolders are searched with --recursive" if subfolders else ""
                raise ValueError(
                    f"{text}: no image files in this folder (extensions PIL reads, e.g. .jpg, .png){hint}"
                )
        elif path.is_file():
            found = [path]
        elif any(character in text for character in GLOB_CHARACTERS):
            matches = (Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
            found = sorted(p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                raise ValueError(f"{text}: the pattern matches no image files")
        elif path.exists():
            raise ValueError(f"{text}: neither a file nor a folder")
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
        for image in found:
            if (resolved := image.resolve()) not in seen:
                seen.add(resolved)
                paths.append(image)
    if not paths:
        raise ValueError("no input images given")
    return paths


def output_names(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """Per path, (file_name, key): its path relative to the deepest folder holding every path, and that without
    its suffix (kept where two files differ only by it: `a.jpg`, `a.png`), made unique."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    names = [p.relative_to(root).as_posix() for p in absolute]
    stems = [name[: len(name) - len(Path(name).suffix)] for name in names]
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
    """The image at `path` as RGB, EXIF orientation applied (as transformers' `load_image`); an
    `UnreadableImageError` saying why when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImageError("not an image (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"cannot decode it ({type(error).__name__}: {error})") from None


def resolve_device(name: str, *, torch_model: bool = True) -> torch.device:
    """ "auto" (CUDA when available for a PyTorch model, else the CPU), "cpu", "cuda", "cuda:N" or "mps"; a device
    this machine lacks is a ValueError saying why."""
    if name == "auto":
        return torch.device("cuda" if torch_model and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if not torch_model and device.type != "cpu":
        raise ValueError(
            f"device {name!r}: an exported model (ONNX / OpenVINO) runs on the CPU only; use cpu"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            )
            raise ValueError(f"device {name!r} is not available: {why} (torch {torch.__version__}); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {name!r} is not available: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device {name!r} is not available: MPS needs Apple silicon, macOS 12.3+ and a torch built with it"
            )
    elif device.type != "cpu":
        raise ValueError(f"device {name!r}: not supported here (auto, cpu, cuda, cuda:N, mps)")
    return device


@dataclass
class PredictionSummary:
    """What a run did. `exit_status`: 0 all done, 1 some images skipped, 128 + signal number when stopped by a
    signal (130 for Ctrl-C, 143 for SIGTERM)."""

    out_dir: Path
    total: int
    done: list[str] = field(default_factory=list)
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

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.total, "done": len(self.done), "skipped": self.skipped, "stopped_by": self.stopped_by,
                "forward_passes": self.forward_passes, "seconds": round(self.seconds, 3)}  # fmt: skip

    def report(self) -> str:
        lines = [f"{len(self.done)} of {self.total} images done in {self.seconds:.1f} s ({self.forward_passes} "
                 f"forward passes); outputs in {self.out_dir}"]  # fmt: skip
        if self.stopped_by:
            lines.append(f"stopped by {self.stopped_by}: {self.total - len(self.done) - len(self.skipped)} images "
                         "not predicted; the results of those done are written")  # fmt: skip
        if self.skipped:
            lines.append(f"{len(self.skipped)} skipped:")
            lines.extend(f"  {path}: {reason}" for path, reason in self.skipped.items())
        lines.extend(f"wrote {path}" for path in self.files)
        return "\n".join(lines)


class _Progress:
    """A tqdm bar on a terminal, else one plain line per image (logs, CI); on stderr."""

    def __init__(self, total: int, mode: Progress):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.count = mode, total, 0
        self.bar = (
            tqdm(total=total, desc="predicting", unit="image", file=sys.stderr) if mode == "bar" else None
        )

    def step(self, path: Path, note: str, *, problem: bool = False) -> None:
        self.count += 1
        if self.bar is not None:
            if problem:
                self.bar.write(f"{path}: {note}", file=sys.stderr)
            self.bar.update(1)
        elif self.mode == "lines" or problem:
            print(f"[{self.count}/{self.total}] {path}: {note}", file=sys.stderr, flush=True)

    def say(self, message: str) -> None:
        (self.bar.write if self.bar is not None else print)(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StopOnSignal:
    """SIGINT / SIGTERM ask the run to stop after the current forward pass (`signal_name` set); the handler then
    gives the signal back its previous behaviour, so a second one stops the program at once. Main thread only."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, progress: _Progress):
        self.progress, self.signal_name, self.previous = progress, None, {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = signal.Signals[name]
                current = signal.getsignal(number)
                if current is not signal.SIG_IGN:  # NOTE: an ignored signal (nohup) stays ignored
                    self.previous[number] = current if current is not None else signal.SIG_DFL
                    signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        self.signal_name = signal.Signals(number).name
        signal.signal(number, self.previous[number])
        self.progress.say(f"{self.signal_name}: stopping after the current forward pass and writing the results "
                          "(send it again to stop at once)")  # fmt: skip

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


_FILE_FIELDS = ("overlay", "mask", "png")


def _relative(path: str | None, folder: Path) -> str | None:
    return None if path is None else Path(os.path.relpath(path, folder)).as_posix()


def _post_process(
    processor, task: str, outputs, size: tuple[int, int], settings: dict[str, Any], fuse: set[int]
):
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    thresholds = {"threshold": settings["threshold"], "mask_threshold": settings["mask_threshold"],
                  "overlap_mask_area_threshold": settings["overlap_threshold"]}  # fmt: skip
    if task == "instance":
        return processor.post_process_instance_segmentation(
            outputs, target_sizes=[size], return_binary_maps=True, **thresholds
        )[0]
    return processor.post_process_panoptic_segmentation(
        outputs, target_sizes=[size], label_ids_to_fuse=fuse, **thresholds
    )[0]


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
    progress: Progress = "auto",
    run_info: dict[str, Any] | None = None,
) -> PredictionSummary:
    """Predict every image of `paths` (files; see `expand_inputs`) and write, per task, the files of
    `prediction_writers` under `<out_dir>/<task>/`, plus `<out_dir>/predictions.json` (`run_info` recorded in it).

    Things and stuff come from `model.config.thing_ids` (None: unknown, so every class counts as a thing and nothing
    is fused, said in one log line). Instance output lists thing classes only; panoptic output fuses the segments of
    each stuff class into one unless `fuse_stuff=False`. `threshold`, `mask_threshold`, `overlap_threshold`: the
    instance and panoptic post-processings' (`MaskFormerImageProcessor.post_process_*`).
    """
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"tasks must be some of {', '.join(TASKS)}; got {list(tasks)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(str(device), torch_model=isinstance(model, torch.nn.Module))
    model = model.to(device).eval()
    out_dir = Path(out_dir)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    thing_ids = getattr(model.config, "thing_ids", None)
    if thing_ids is None and {"instance", "panoptic"} & set(tasks):
        logger.warning("The model does not record which classes are things (config.thing_ids): every class is "
                       "treated as a thing (instance output lists them all, panoptic output fuses none).")  # fmt: skip
    fuse = set(id2label) - set(thing_ids) if thing_ids is not None and fuse_stuff else set()
    settings = {"threshold": threshold, "mask_threshold": mask_threshold, "overlap_threshold": overlap_threshold,
                "fuse_stuff": fuse_stuff, "batch_size": batch_size, "device": str(device)}  # fmt: skip
    writers = {
        task: WRITERS[task](out_dir / task, id2label, thing_ids=thing_ids, overlays=overlays)
        for task in tasks
    }
    names = output_names(paths)
    summary = PredictionSummary(out_dir=out_dir, total=len(paths))
    entries: list[dict[str, Any]] = []
    bar = _Progress(len(paths), progress)
    started = time.monotonic()
    window = 8 * batch_size  # images read and grouped by padded size at a time (as the evaluator)
    try:
        with _StopOnSignal(bar) as stop:
            for first in range(0, len(paths), window):
                if stop.signal_name:
                    break
                loaded = []
                for index in range(first, min(first + window, len(paths))):
                    try:
                        image = read_image(paths[index])
                    except UnreadableImageError as error:
                        summary.skipped[str(paths[index])] = str(error)
                        bar.step(paths[index], f"skipped: {error}", problem=True)
                        continue
                    file_name, key = names[index]
                    loaded.append(
                        (index, ImageRecord(index + 1, file_name, key, image.height, image.width), image)
                    )
                inputs = [processor([image], return_tensors="pt") for _, _, image in loaded]
                for chunk, outputs in forward_batches(model, inputs, batch_size=batch_size, device=device):
                    summary.forward_passes += 1
                    for position, single in zip(chunk, outputs):
                        index, record, image = loaded[position]
                        entry = {"file": str(paths[index]), **record.coco_image()}
                        for task, writer in writers.items():
                            result = _post_process(
                                processor, task, single, (record.height, record.width), settings, fuse
                            )
                            files = writer.add(record, image, result)
                            entry[task] = {
                                k: _relative(v, out_dir) if k in _FILE_FIELDS else v for k, v in files.items()
                            }
                        entries.append(entry)
                        summary.done.append(str(paths[index]))
                        bar.step(
                            paths[index],
                            ", ".join(f"{t}: {len(entry[t]['segments'])} segments" for t in tasks),
                        )
                    if stop.signal_name:
                        break
            summary.stopped_by = stop.signal_name
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        summary.stopped_by = "SIGINT"
    finally:
        bar.close()
        summary.seconds = time.monotonic() - started
        for writer in writers.values():
            summary.files.extend(writer.close())
        index_payload = {"run": {**(run_info or {}), "tasks": list(tasks), **settings}, "summary": summary.as_dict(),
                         "images": sorted(entries, key=lambda e: e["id"])}  # fmt: skip
        summary.files.insert(0, write_json(out_dir / INDEX_FILE, index_payload, indent=1))
    return summary
