"""Training section: forward + backward + AdamW step, our dense and point-sampled losses vs transformers'
(dense), and the optional torch.compile forward. Each configuration runs in a fresh process
(`python -m benchmarks.training <spec>`), so one allocator's cache never serves the next."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from benchmarks.common import TRAIN_IMPLS, Settings, bench_environment, median_times, training_batch
from modeling_maskformer.modeling_maskformer import MaskFormerForInstanceSegmentation

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_in_subprocess(spec: dict, timeout: float, module: str = __name__) -> dict:
    """Runs `module` (this one by default) as a worker with `spec` in a fresh process; its last stdout line is the
    JSON result."""
    command = [sys.executable, "-m", module, json.dumps(spec)]
    try:
        # NOTE: benchmarks/ is not installed: the worker finds it from the checkout's root, whatever the cwd.
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_training(folders: dict[str, str], settings: Settings, threads: int, deep_supervision: bool) -> dict:
    result = {
        "batch": [2, 3, settings.image_size, settings.image_size],
        "objects_per_image": settings.train_objects,
        "deep_supervision": deep_supervision,
    }
    for impl in TRAIN_IMPLS:
        spec = {
            "task": "train",
            "impl": impl,
            "folders": folders,
            "settings": asdict(settings),
            "threads": threads,
            "deep_supervision": deep_supervision,
        }
        result[impl] = run_in_subprocess(spec, timeout=900)
    return result


def bench_compile(folders: dict[str, str], settings: Settings, threads: int, timeout: float) -> dict:
    spec = {"task": "compile", "folders": folders, "settings": asdict(settings), "threads": threads}
    return run_in_subprocess(spec, timeout=timeout)


def memory_kb() -> dict[str, int]:
    """Current and peak resident set of this process (kB), from /proc/self/status."""
    status = dict(re.findall(r"(\w+):\s+(\d+) kB", Path("/proc/self/status").read_text()))
    return {"rss": int(status["VmRSS"]), "peak": int(status["VmHWM"])}


def reset_peak_memory() -> bool:
    """Sets VmHWM to the current resident set (Linux >= 4.0); False where not allowed (the peak then counts
    from the process start, which overstates the step's memory by what loading the model took)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def settings_from(spec: dict) -> Settings:
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()})


def train_worker(spec: dict) -> dict:
    settings = settings_from(spec)
    impl, folders, deep = spec["impl"], spec["folders"], spec["deep_supervision"]
    if impl == "transformers":  # NOTE: its auxiliary loss fails without output_hidden_states=True
        model = transformers.MaskFormerForInstanceSegmentation.from_pretrained(
            folders["transformers"], use_auxiliary_loss=deep
        )
        extra = {"output_hidden_states": True} if deep else {}
    else:
        mode = impl.removeprefix("ours-")
        model = MaskFormerForInstanceSegmentation.from_pretrained(
            folders["ours"], mask_loss_mode=mode, use_auxiliary_loss=deep
        )
        extra = {}
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    pixel_values, mask_labels, class_labels = training_batch(2, settings.image_size, settings.train_objects, seed=5)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels, **extra).loss
        loss.backward()
        optimizer.step()
        return loss.item()

    peak_was_reset = reset_peak_memory()
    baseline = memory_kb()["rss"]
    times, losses = [], []
    for i in range(settings.warmup + settings.train_steps):
        start = time.perf_counter()
        losses.append(step())
        if i >= settings.warmup:
            times.append(time.perf_counter() - start)
    peak = memory_kb()["peak"]
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "step_seconds": statistics.median(times),
        "peak_memory_mb": (peak - baseline) / 1024,
        "baseline_rss_mb": baseline / 1024,
        "of_which_gradients_and_adamw_state_mb": 3 * parameter_bytes / 2**20,
        "peak_was_reset": peak_was_reset,
        "losses": losses,
    }


def compile_worker(spec: dict) -> dict:
    settings = settings_from(spec)
    model = MaskFormerForInstanceSegmentation.from_pretrained(spec["folders"]["ours"]).eval()
    pixel_values = torch.randn(
        1, 3, settings.image_size, settings.image_size, generator=torch.Generator().manual_seed(0)
    )
    compiled = torch.compile(model)
    with torch.no_grad():
        start = time.perf_counter()
        compiled(pixel_values)
        compile_seconds = time.perf_counter() - start
        seconds = median_times({"ours_compiled": lambda: compiled(pixel_values)}, settings.repeats, settings.warmup)
    return {"compile_seconds": compile_seconds, "seconds": seconds["ours_compiled"]}


def run_worker(spec: dict) -> None:
    with bench_environment(spec["threads"]):
        result = {"train": train_worker, "compile": compile_worker}[spec["task"]](spec)
    print(json.dumps(result))


if __name__ == "__main__":
    run_worker(json.loads(sys.argv[1]))
