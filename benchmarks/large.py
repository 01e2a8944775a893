"""Large section: post-processing at Cityscapes' size and for a 12-MP photo, and the whole pipeline on a 12-MP
photo; time and peak memory, ours against transformers, each measurement in a fresh process.

Cases (output H_t x W_t, stride-4 logits h x w of the padded input, K classes, Q = 100 queries):
- "cityscapes": 1024x2048 from 256x512 logits (no resize: the output is the padded input), K = 19;
- "photo-12mp": 3000x4000 from 128x176 logits (a 512x683 input in 512x704, as an ADE20K processor gives it), K = 150;
- "square-2048", "square-4096": 2048x2048 and 4096x4096 from 128x128 logits (512x512 input), K = 150;
- "demo-12mp": the `make demo` model's recorded outputs on a 384 px synthetic scene (20 queries, 9 classes,
  `recorded.py`) brought to 3464x3464, as a pipeline does for a 12-MP photo.

Regimes (the logits of `case_outputs`):
- "trained-like": low-frequency blobs at confident magnitudes (`common.random_outputs("confident")`: Voronoi
  objects with confident classes, the other queries "no object" with smooth low masks);
- "random-init": what a randomly initialised ADE20K-shaped model gives, with the statistics measured on the
  forward section's Swin-T (class logits N(0, 0.31^2): near-uniform probabilities; mask logits of std 2.7,
  correlated over neighbouring samples as a 3x3 box filter of noise makes them, mean -0.6);
- "noise": i.i.d. N(0, 4^2) class and mask logits, the worst case for bounds.

Each measurement runs `python -m benchmarks.large <spec>` in a fresh process: the peak resident
set is reset (/proc/self/clear_refs) once the inputs exist, the first call gives the peak growth, and the median
of `repeats` calls the time. The returned maps are counted in the peak and reported apart ("returned MB").
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from benchmarks.common import FULL, build_checkpoints, machine_info, random_outputs, scene_image
from benchmarks.recorded import load_recorded
from benchmarks.training import memory_kb, reset_peak_memory, run_in_subprocess
from modeling_maskformer.image_processing import MaskFormerImageProcessor
from modeling_maskformer.modeling_maskformer import MaskFormerForInstanceSegmentation

CASES = {
    "cityscapes": {"target": (1024, 2048), "low": (256, 512), "valid": (1024, 2048), "classes": 19},
    "photo-12mp": {"target": (3000, 4000), "low": (128, 176), "valid": (512, 683), "classes": 150},
    "square-2048": {"target": (2048, 2048), "low": (128, 128), "valid": (512, 512), "classes": 150},
    "square-4096": {"target": (4096, 4096), "low": (128, 128), "valid": (512, 512), "classes": 150},
    "demo-12mp": {"target": (3464, 3464), "recorded": "demo_384"},
}
TASKS = ("semantic", "panoptic", "instance")
# (case, regime, tasks): the cells of issue 22's table, plus every task for the 12-MP photo's memory bound.
RUNS = [
    ("cityscapes", "trained-like", TASKS),
    ("cityscapes", "random-init", ("semantic",)),
    ("cityscapes", "noise", ("semantic",)),
    ("photo-12mp", "trained-like", TASKS),
    ("photo-12mp", "random-init", TASKS),
    ("photo-12mp", "noise", TASKS),
    ("demo-12mp", "trained", TASKS),
    ("square-2048", "noise", ("semantic",)),
    ("square-4096", "noise", ("semantic",)),
]
NUM_QUERIES = 100
PHOTO = (3000, 4000)


def case_outputs(case: str, regime: str) -> dict:
    """Model outputs for a case and regime: class and mask logits, pixel_mask and target size (one image)."""
    spec = CASES[case]
    if "recorded" in spec:
        recorded = load_recorded(spec["recorded"])
        return {
            "class_queries_logits": recorded["class_queries_logits"][:1],
            "masks_queries_logits": recorded["masks_queries_logits"][:1],
            "pixel_mask": recorded["pixel_mask"][:1],
            "target_sizes": [spec["target"]],
        }
    (h, w), classes = spec["low"], spec["classes"]
    generator = torch.Generator().manual_seed(0)
    if regime == "trained-like":
        class_logits, mask_logits = random_outputs(
            "confident",
            num_queries=NUM_QUERIES,
            num_classes=classes,
            mask_size=(h, w),
            num_objects=24,
            seed=0,
        )
    elif regime == "random-init":
        class_logits = torch.randn(1, NUM_QUERIES, classes + 1, generator=generator) * 0.31
        noise = torch.randn(NUM_QUERIES, 1, h, w, generator=generator)
        mask_logits = (F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False) * 3 * 2.7 - 0.6)[
            None, :, 0
        ]
    elif regime == "noise":
        class_logits = torch.randn(1, NUM_QUERIES, classes + 1, generator=generator) * 4
        mask_logits = torch.randn(1, NUM_QUERIES, h, w, generator=generator) * 4
    else:
        raise ValueError(f"unknown regime {regime!r}")
    pixel_mask = torch.zeros(1, 4 * h, 4 * w, dtype=torch.long)
    pixel_mask[:, : spec["valid"][0], : spec["valid"][1]] = 1
    return {
        "class_queries_logits": class_logits,
        "masks_queries_logits": mask_logits,
        "pixel_mask": pixel_mask,
        "target_sizes": [spec["target"]],
    }


def _returned_bytes(results) -> int:
    if isinstance(results, torch.Tensor):
        return results.numel() * results.element_size()
    if isinstance(results, dict):
        return sum(_returned_bytes(value) for value in results.values())
    if isinstance(results, list | tuple):
        return sum(_returned_bytes(value) for value in results)
    return 0


def _release_free_memory() -> None:
    """Returns the allocator's free pages to the system (glibc), so that a call's peak counts what it allocates
    rather than what building its inputs left behind."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the peak may then understate the call's growth
        pass


def _timed(call, repeats: int) -> dict:
    """The first call's peak growth (MB, over the resident set before it) and the median time of `repeats`."""
    gc.collect()
    _release_free_memory()
    reset = reset_peak_memory()
    before = memory_kb()["rss"]
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = call()
        seconds.append(time.perf_counter() - start)
        if len(seconds) == 1:
            peak_mb = (memory_kb()["peak"] - before) / 1024
            returned_mb = _returned_bytes(results) / 2**20
        del results
    return {
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "peak_mb": peak_mb,
        "returned_mb": returned_mb,
        "peak_reset": reset,
    }


def post_worker(spec: dict) -> dict:
    outputs = case_outputs(spec["case"], spec["regime"])
    task, targets = spec["task"], outputs["target_sizes"]
    extra = {"label_ids_to_fuse": set()} if task == "panoptic" else {}
    if spec["impl"] == "transformers":
        processor = transformers.MaskFormerImageProcessor()
        inputs = SimpleNamespace(
            class_queries_logits=outputs["class_queries_logits"],
            masks_queries_logits=outputs["masks_queries_logits"],
        )
    else:
        processor = MaskFormerImageProcessor()
        inputs = SimpleNamespace(
            **{k: outputs[k] for k in ("class_queries_logits", "masks_queries_logits", "pixel_mask")}
        )
        if spec["impl"] != "ours":
            extra["method"] = spec["impl"].removeprefix("ours_")
    method = getattr(processor, f"post_process_{task}_segmentation")
    return _timed(lambda: method(inputs, target_sizes=targets, **extra), spec["repeats"])


def pipeline_worker(spec: dict) -> dict:
    folder = spec["folder"]
    if spec["impl"] == "transformers":
        model = transformers.MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
        processor = transformers.MaskFormerImageProcessor.from_pretrained(folder)
    else:
        model = MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
        processor = MaskFormerImageProcessor.from_pretrained(folder)
    segmenter = transformers.pipeline("image-segmentation", model=model, image_processor=processor)
    image = photo(*PHOTO)
    kwargs = {"subtask": spec["subtask"]} if spec["subtask"] else {}
    segmenter(image.resize((640, 480)), **kwargs)  # NOTE: a warm-up at a small size, so first-call costs stay out
    return _timed(lambda: segmenter(image, **kwargs), spec["repeats"])


def photo(height: int, width: int) -> Image.Image:
    """A photo-sized RGB picture: a synthetic scene drawn at a quarter of the size, upscaled, with fresh noise."""
    small = np.asarray(scene_image(height // 4, width // 4, seed=3).resize((width, height)), dtype=np.float32)
    noise = np.random.default_rng(4).normal(0, 6, small.shape).astype(np.float32)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8))


def _run(spec: dict, threads: int, timeout: float) -> dict:
    return run_in_subprocess({**spec, "threads": threads}, timeout=timeout, module=__name__)


def bench_large(
    *,
    threads: int,
    repeats: int = 2,
    folder: dict | None = None,
    demo_model: str | None = None,
    runs=RUNS,
    impls=("transformers", "ours"),
    pipeline: bool = True,
    timeout: float = 900.0,
) -> dict:
    """Every run of `runs` for each of `impls` (ours is method="auto"; "ours_dense", "ours_bounded" force a
    method), then with `pipeline` the whole pipeline on a 12-MP photo with `folder` (a random-init ADE20K-shaped
    pair from `build_checkpoints`, built when None) and `demo_model` (a `make demo` folder, when it exists)."""
    results = {
        "machine": machine_info(),
        "threads": threads,
        "repeats": repeats,
        "post_processing": {},
        "pipeline": {},
    }
    for case, regime, tasks in runs:
        for task in tasks:
            name = f"{case} {regime} {task}"
            print(f"large: {name} ...", flush=True)
            spec = {"kind": "post", "case": case, "regime": regime, "task": task, "repeats": repeats}
            results["post_processing"][name] = {impl: _run({**spec, "impl": impl}, threads, timeout) for impl in impls}
    if not pipeline:
        results["machine"]["load_average_at_end"] = os.getloadavg()
        return results
    with tempfile.TemporaryDirectory(prefix="maskformer-large-") as workdir:
        if folder is None:
            folder = build_checkpoints("swin-t", Path(workdir), FULL)
        models = {"swin-t random-init": folder}
        if demo_model and Path(demo_model, "config.json").is_file():
            models["make demo model"] = {"transformers": demo_model, "ours": demo_model}
        for name, folders in models.items():
            for subtask in ("semantic", None):
                label = f"{name} {subtask or 'defaults (panoptic)'}"
                print(f"large: pipeline {label} ...", flush=True)
                spec = {"kind": "pipeline", "subtask": subtask, "repeats": repeats}
                results["pipeline"][label] = {
                    impl: _run({**spec, "impl": impl, "folder": folders[impl]}, threads, timeout)
                    for impl in ("transformers", "ours")
                }
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def print_large(results: dict) -> None:
    machine = results["machine"]
    start, end = machine["load_average_at_start"], machine.get("load_average_at_end")
    print(f"\nlarge: {machine['cpu_model']}, {results['threads']} threads, load average {start} -> {end}")
    print(f"{'case':<44} {'transformers s / MB':>20} {'ours s / MB':>16} {'ratio':>7}")
    for section in ("post_processing", "pipeline"):
        for name, entry in results[section].items():
            theirs, ours = entry.get("transformers", {}), entry.get("ours", {})
            cells = [
                run.get("error", "-") if "seconds" not in run else f"{run['seconds']:.2f} / {run['peak_mb']:.0f}"
                for run in (theirs, ours)
            ]
            ratio = f"{theirs['seconds'] / ours['seconds']:.2f}x" if "seconds" in theirs and "seconds" in ours else ""
            print(f"{name:<44} {cells[0]:>20} {cells[1]:>16} {ratio:>7}")
    print("(peak: resident-set growth of the first call in a fresh process, MB, returned maps included)")


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with torch.no_grad():
        return post_worker(spec) if spec["kind"] == "post" else pipeline_worker(spec)


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
