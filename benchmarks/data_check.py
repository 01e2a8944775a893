"""Section "data_check": the data check before training (`data.checks.check_dataset`) over a training split of
ADE20K's size and shapes, on every available core. Target: under 2 minutes for 20,210 items on 2 cores.

The files: 20,210 pairs (ADE20K's training split) of 512x683 / 683x512 photo-like JPEGs (quality 90, ~100 kB,
`data_pipeline.scene`) and 8-bit PNG label maps with 10-30 of 150 classes, in an ADEChallengeData2016 folder in a
temporary directory. `distinct` scenes are drawn and the rest are byte copies of them: every file is its own file,
opened and decoded by the check, but drawing 20,210 scenes would take longer than checking them. The files were
just written, so they are read from the page cache: a first run on a cold disk adds the disk's read time.

Measured: the whole pass (`check_dataset` as training runs it: a process per core, the loader's own reading of
every item, JPEG data checked at 1/8 scale); and, on one core with the two interleaved item by item, the cost per
item of that check against a full decode of every image (`decoding.open_image(decode=False)` against the decoding
training does), the choice the check makes. The CPU model and flags and the load average come with the figures.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from benchmarks.data_pipeline import NUM_CLASSES, cpu_flags, scene
from modeling_maskformer.data import load_ade_folder
from modeling_maskformer.data.checks import available_cores, check_dataset, check_item

TARGET_SECONDS, TARGET_CORES, ADE20K_TRAIN = 120.0, 2, 20_210


@dataclass(frozen=True)
class CheckSettings:
    num_items: int = ADE20K_TRAIN
    distinct: int = 64  # scenes drawn; the other files are copies
    image_size: tuple[int, int] = (512, 683)  # (H, W); every other pair is portrait
    per_item_sample: int = 200  # items timed one by one, both ways, on one core


FULL_CHECK = CheckSettings()
QUICK_CHECK = CheckSettings(num_items=2_000, distinct=16, per_item_sample=100)
TINY_CHECK = CheckSettings(num_items=80, distinct=4, image_size=(64, 85), per_item_sample=10)


def write_split(root: Path, s: CheckSettings) -> Path:
    """An ADEChallengeData2016-style training split of `s.num_items` pairs (see the module docstring)."""
    images, labels = root / "images" / "training", root / "annotations" / "training"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(s.num_items):
        name = f"ADE_train_{i + 1:08d}"
        if i < s.distinct:
            height, width = s.image_size if i % 2 == 0 else s.image_size[::-1]
            image, label = scene(height, width, seed=i)
            image.save(images / f"{name}.jpg", quality=90)
            label.save(labels / f"{name}.png")
        else:
            source = f"ADE_train_{i % s.distinct + 1:08d}"
            shutil.copyfile(images / f"{source}.jpg", images / f"{name}.jpg")
            shutil.copyfile(labels / f"{source}.png", labels / f"{name}.png")
    return root


def bench_data_check(s: CheckSettings = FULL_CHECK) -> dict:
    """The section's figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="maskformer-check-") as workdir:
        started = time.perf_counter()
        root = write_split(Path(workdir), s)
        written = time.perf_counter() - started
        id2label = {i: str(i) for i in range(NUM_CLASSES)}
        dataset = load_ade_folder(root, "train[:100%]", reduce_labels=True, id2label=id2label)  # every item
        result = {
            "settings": s.__dict__ | {"image_size": list(s.image_size)},
            "machine": cpu_flags(),
            "cores": available_cores(),
            "load_average_at_start": os.getloadavg(),
            "seconds_to_write_files": written,
        }
        files = sorted((root / "images" / "training").iterdir())[: s.distinct]
        result["jpeg_kb"] = statistics.mean(p.stat().st_size for p in files) / 1024
        started, cpu = time.perf_counter(), _cpu_seconds()
        check_dataset(dataset, show_progress=False)
        result["seconds"] = time.perf_counter() - started
        # NOTE: CPU time of this process and its (finished) workers: what the pass costs whatever else runs; on idle
        # cores the pass takes about cpu_seconds / cores.
        result["cpu_seconds"] = _cpu_seconds() - cpu
        result["items_per_second"] = s.num_items / result["seconds"]
        result["load_average_at_end"] = os.getloadavg()
        result["target"] = {"seconds": TARGET_SECONDS * s.num_items / ADE20K_TRAIN, "cores": TARGET_CORES}
        result["per_item_ms"] = per_item_costs(dataset, s.per_item_sample)
    return result


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def per_item_costs(dataset, sample: int) -> dict[str, float]:
    """Median ms per item on one core (OpenCV on one thread), the check as run vs every image decoded in full,
    interleaved item by item so that load from other processes hits both alike."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        ways = {"check (JPEG data at 1/8 scale)": dataset.header_only(), "full decode": dataset}
        times: dict[str, list[float]] = {name: [] for name in ways}
        step = max(1, len(dataset) // sample)
        for index in range(0, step * sample, step):
            for name, items in ways.items():
                started = time.perf_counter()
                problem, _ = check_item(items, index % len(dataset))
                times[name].append(time.perf_counter() - started)
                if problem is not None:
                    raise RuntimeError(f"the generated data has a problem: {problem}")
        return {name: 1000 * statistics.median(values) for name, values in times.items()}
    finally:
        cv2.setNumThreads(threads)


def print_data_check(section: dict) -> None:
    s, target = section["settings"], section["target"]
    verdict = "PASS" if section["seconds"] < target["seconds"] else "MISS"
    on_target_cores = section["cores"] == target["cores"]
    print(
        f"\nData check before training: {s['num_items']} items of {s['image_size'][0]}x{s['image_size'][1]} "
        f"(JPEG ~{section['jpeg_kb']:.0f} kB + 8-bit PNG), {section['cores']} core(s), "
        f"{section['machine']['model_name']}; load {section['load_average_at_start'][0]:.1f} at start, "
        f"{section['load_average_at_end'][0]:.1f} at end"
    )
    print(
        f"  whole pass: {section['seconds']:.1f} s ({section['items_per_second']:.0f} items/s); target < "
        f"{target['seconds']:.1f} s on {target['cores']} cores: {verdict}"
        f"{'' if on_target_cores else ' (measured on another core count)'}"
    )
    print(
        f"  CPU time of the pass: {section['cpu_seconds']:.1f} s ({1000 * section['cpu_seconds'] / s['num_items']:.2f} "
        f"ms per item; on {target['cores']} idle cores about {section['cpu_seconds'] / target['cores']:.0f} s)"
    )
    for name, ms in section["per_item_ms"].items():
        print(f"  per item, one core, {name}: {ms:.2f} ms")
