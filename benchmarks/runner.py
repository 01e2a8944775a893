"""All sections in one run, as `python -m benchmarks` (`make bench`) does it."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks.common import FULL, QUICK, TINY, Settings, build_checkpoints, load_pair, machine_info, scene_image
from benchmarks.forward import bench_forward
from benchmarks.pipeline import bench_pipeline
from benchmarks.postprocess import bench_post_processing, random_init_outputs
from benchmarks.processor import bench_image_processor
from benchmarks.training import bench_compile, bench_training


def settings_for(*, tiny: bool = False, quick: bool = False, repeats: int | None = None) -> Settings:
    """FULL (ADE20K shapes, 512 px), QUICK (128 px, one repeat) or TINY (tiny model, 64 px: the test suite)."""
    settings = TINY if tiny else QUICK if quick else FULL
    if repeats:
        settings = replace(settings, repeats=repeats, post_repeats=max(repeats, 2))
    return settings


def run_all(
    settings: Settings,
    *,
    backbones: list[str],
    train_backbones: list[str],
    supervision: str = "both",
    threads: int,
    with_compile: bool = False,
    compile_timeout: float = 300.0,
) -> dict:
    """Every section; `supervision` is "deep", "last" or "both" (training runs)."""
    results = {
        "machine": machine_info(),
        "settings": {**asdict(settings), "threads": threads},
        "forward": {},
        "pipeline": {},
        "training": {},
    }
    with tempfile.TemporaryDirectory(prefix="maskformer-bench-") as workdir:
        folders = {}
        for backbone in dict.fromkeys(backbones + train_backbones):
            folders[backbone] = build_checkpoints(backbone, Path(workdir) / backbone, settings)
        random_init = None
        for backbone in backbones:
            print(f"forward and pipeline, {backbone} ...", flush=True)
            theirs, their_processor, ours, our_processor = load_pair(folders[backbone])
            if random_init is None:  # the first backbone's outputs: the post-processing's random-init regime
                random_init = random_init_outputs(ours, scene_image(*settings.original, seed=3), our_processor)
            results["forward"][backbone] = bench_forward(theirs, ours, settings)
            results["pipeline"][backbone] = bench_pipeline(theirs, their_processor, ours, our_processor, settings)
            del theirs, ours
        if with_compile:
            print("torch.compile (one process per backbone) ...", flush=True)
            results["compile"] = {
                backbone: bench_compile(folders[backbone], settings, threads, compile_timeout)
                for backbone in backbones
            }
        print("post-processing and image processor ...", flush=True)
        results["post_processing"] = bench_post_processing(settings, random_init)
        results["image_processor"] = bench_image_processor(settings)
        for backbone in train_backbones:
            for deep in {"deep": [True], "last": [False], "both": [True, False]}[supervision]:
                name = f"{backbone}/{'deep-supervision' if deep else 'last-layer'}"
                print(f"training, {name} (one process per configuration) ...", flush=True)
                results["training"][name] = bench_training(folders[backbone], settings, threads, deep)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results
