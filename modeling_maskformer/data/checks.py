"""The data check before training: one pass over every item (`dataset.header_only()`, read by the loader's own
code), on every core, reporting every problem at once; then warnings about data that loads but is probably wrong."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack

import cv2
import numpy as np
from accelerate.utils import broadcast_object_list

from ..errors import InvalidInputError, first_line
from .dataset import SegmentationDataset, present_labels
from .decoding import binary_mask_warning, load_progress

logger = logging.getLogger(__name__)

# Below this many items the pass runs in this process (a pool costs more than it saves).
_MIN_ITEMS_FOR_POOL = 64


class DataCheckError(InvalidInputError):
    """The data check found problems; `problems` holds every one (one line each, naming the file)."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


def available_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # Linux: affinity
    return max(1, cores or 1)


def check_item(dataset: SegmentationDataset, index: int) -> tuple[str | None, np.ndarray | None]:
    """(problem or None, the item's distinct semantic labels or None). A ValueError or OSError (the loaders' errors)
    is a problem; any other exception is a bug and propagates."""
    try:
        item = dataset[index]
    except (ValueError, OSError) as error:
        message = first_line(error)
        if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
        return message, None
    return None, present_labels(item["semantic"]) if item["semantic"] is not None else None


_worker_dataset: SegmentationDataset | None = None  # the dataset of this worker process (set by `_start_worker`)


def _start_worker(dataset: SegmentationDataset) -> None:
    global _worker_dataset
    _worker_dataset = dataset
    cv2.setNumThreads(1)  # NOTE: one process per core already; OpenCV's own pool would oversubscribe


def _check_in_worker(index: int) -> tuple[str | None, np.ndarray | None]:
    return check_item(_worker_dataset, index)


def _run_pass(dataset: SegmentationDataset, num_workers: int, desc: str, show_progress: bool):
    """(problems sorted by index, the union of semantic labels, sorted)."""
    header_only = dataset.header_only()
    total = len(header_only)
    problems, seen = [], np.zeros(1 << 16, dtype=bool)
    with ExitStack() as stack:
        if num_workers <= 1 or total < _MIN_ITEMS_FOR_POOL:
            results = (check_item(header_only, index) for index in range(total))
        else:
            pool = ProcessPoolExecutor(num_workers, initializer=_start_worker, initargs=(header_only,))
            # NOTE: chunks small enough for a balanced finish, large enough to amortise the trip.
            chunksize = max(1, min(256, total // (num_workers * 16)))
            results = stack.enter_context(pool).map(_check_in_worker, range(total), chunksize=chunksize)
        bar = load_progress(results, total=total, desc=desc, unit="item", disable=not show_progress)
        for index, (problem, labels) in enumerate(bar):  # a worker's bug re-raises here
            if problem is not None:
                problems.append((index, problem))
            elif labels is not None:
                seen[labels[labels < len(seen)].astype(np.int64)] = True
    return problems, np.flatnonzero(seen)


def check_dataset(
    dataset: SegmentationDataset,
    *,
    skip_bad_items: bool = False,
    num_workers: int | None = None,
    max_reported: int = 50,
    accelerator=None,
    name: str = "the data",
    show_progress: bool = True,
) -> SegmentationDataset:
    """`dataset` when no item has a problem, else a `DataCheckError` counting them, then up to `max_reported`, one
    line each; with `skip_bad_items`, the good items. With an Accelerate `accelerator`, the main process checks and
    the others receive its findings."""
    if not dataset.needs_check:  # generated data (the synthetic shapes)
        return dataset
    num_workers = available_cores() if num_workers is None else num_workers
    payload = None
    if accelerator is None or accelerator.is_main_process:
        problems, seen = _run_pass(dataset, num_workers, f"checking {name}", show_progress)
        payload = (problems, seen.tolist())
    if accelerator is not None and accelerator.num_processes > 1:
        payload = broadcast_object_list([payload])[0]
    problems, seen = payload
    total = len(dataset)
    if problems:
        bad = {index for index, _ in problems}
        shown = [message for _, message in problems[:max_reported]]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        if skip_bad_items and len(bad) < total:
            for message in shown:
                logger.warning("--skip_bad_items: leaving out %s", message)
            logger.warning(f"the data check left out {len(bad)} of {total} items of {name}{more} (--skip_bad_items)")
            dataset = dataset.subset([i for i in range(total) if i not in bad])
        else:
            for message in shown:
                logger.error("data check: %s", message)
            fix = "fix them, or pass --skip_bad_items to leave those items out" if len(bad) < total else "fix them"
            summary = (
                f"the data check found {len(problems)} problem(s) in {len(bad)} of {total} items of {name}; "
                f"{fix}. The first: {problems[0][1]}"
            )
            raise DataCheckError(
                "\n".join([summary, *shown]) + (f"\n...{more}" if more else ""), [message for _, message in problems]
            )
    _warn_about_labels(dataset, set(seen), name)
    return dataset


def _warn_about_labels(dataset: SegmentationDataset, seen: set[int], name: str) -> None:
    if dataset.task != "semantic" or not seen or getattr(dataset, "palette", None) is not None:
        return
    if not dataset.reduce_labels:  # the values seen are the files' values
        warning = binary_mask_warning(
            seen, reduce_labels=False, ignore_index=dataset.ignore_index, source=f"{name} (every label map checked)"
        )
        if warning:
            logger.warning(warning)
    if seen <= {dataset.ignore_index}:
        logger.warning(
            f"every labelled pixel of {name} is ignore_index {dataset.ignore_index}: there is nothing to learn; "
            "check the label convention (--label_convention)"
        )
