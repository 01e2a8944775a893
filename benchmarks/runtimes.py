"""Section "runtime": one forward pass (batch 1, 512x512, ADE20K shapes) of Swin-T and R50 in each runtime —
transformers eager fp32, ours eager fp32, ours' fast path, onnxruntime fp32/int8, OpenVINO fp32/int8 — each
against this CPU's FLOP floor; and, on a trained model (the demo's), what int8 does to mIoU/PQ and speed.

The FLOP floor (docs/benchmarks.md, the runtime section): FLOPs of the forward pass (torch's FlopCounterMode on our model: 2 per
multiply-add of convolutions and matrix products) divided by the CPU's peak: cores x clock x FLOPs per cycle
and core (fp32: 32 with AVX-512 on two 256-bit FMA pipes (AMD Zen 4) or one 512-bit FMA unit (most Intel
Xeons; 64 with two)); bf16 (AVX512_BF16 dot products) and int8 (AVX512_VNNI) twice and four times that).
A measured large fp32 matrix product (`torch.mm`) shows how much of that peak is reachable.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Settings, bf16_supported, load_pair, median_times, scene_image

FLOPS_PER_CYCLE_FP32 = 32  # per core: AVX-512 FMA, 16 fp32 lanes x 2 FLOPs, one 512-bit op per cycle
PRECISION_FACTOR = {"fp32": 1, "bf16": 2, "int8": 4}


def cpu_peak() -> dict:
    """Peak FLOP/s of the usable cores by precision, from the clock in /proc/cpuinfo, and the flags that matter."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    clocks = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)]
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ghz = (max(clocks) / 1000) if clocks else None
    fp32 = cores * ghz * 1e9 * FLOPS_PER_CYCLE_FP32 if ghz else None
    return {
        "cores": cores,
        "clock_ghz": ghz,
        "flops_per_cycle_per_core_fp32": FLOPS_PER_CYCLE_FP32,
        "peak_flops": {p: fp32 * f if fp32 else None for p, f in PRECISION_FACTOR.items()},
        "flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma", "avx_vnni"))),
    }


def measured_gemm_flops(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large fp32 matrix product with torch's current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def count_flops(model, pixel_values: torch.Tensor) -> int:
    # NOTE: on a frozen copy: FlopCounterMode's module tracker trips over parameters that require grad.
    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        frozen(pixel_values)
    return int(counter.get_total_flops())


def _exports(model, processor, workdir: Path, size: int, calibration: list, threads: int) -> tuple[dict, dict]:
    """{runtime name: MaskFormerRuntimeModel} for onnxruntime and OpenVINO, fp32 and int8, and export facts."""
    from modeling_maskformer.export import MaskFormerRuntimeModel, export_folder

    runtimes, facts = {}, {}
    for fmt, name in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        start = time.perf_counter()
        folder = export_folder(
            model,
            workdir / fmt,
            processor=processor,
            format=fmt,
            height=size,
            width=size,
            int8=True,
            calibration_images=calibration,
        )
        info = json.loads((folder / "export.json").read_text())
        facts[name] = {
            "export_seconds": time.perf_counter() - start,
            "parity": info["parity_max_abs_difference"],
        }
        for precision in ("fp32", "int8"):
            runtimes[f"{name}_{precision}"] = MaskFormerRuntimeModel.from_pretrained(
                folder, precision=precision, num_threads=threads
            )
    return runtimes, facts


def bench_runtimes(
    folders: dict[str, str], settings: Settings, workdir: Path, *, threads: int, calibration_count: int = 8
) -> dict:
    """Median seconds of one forward pass per runtime, the FLOPs and the floors, for one backbone."""
    theirs, _, ours, processor = load_pair(folders)
    size = settings.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    flops = count_flops(ours, pixel_values)
    fast = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    fast_input = pixel_values.contiguous(memory_format=torch.channels_last)
    use_bf16 = bf16_supported()

    def run_fast():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            return fast(fast_input)

    calibration = [scene_image(size, size, seed) for seed in range(calibration_count)]
    runtimes, facts = _exports(ours, processor, workdir, size, calibration, threads)
    functions = {
        "transformers_eager_fp32": lambda: theirs(pixel_values),
        "ours_eager_fp32": lambda: ours(pixel_values),
        f"ours_fast_path_{'channels_last_bf16' if use_bf16 else 'channels_last'}": run_fast,
        **{name: (lambda runtime=runtime: runtime(pixel_values)) for name, runtime in runtimes.items()},
    }
    with torch.no_grad():
        seconds = median_times(functions, settings.repeats, settings.warmup)
    return {
        "input": [1, 3, size, size],
        "flops": flops,
        "seconds": seconds,
        "exports": facts,
        "fast_path_bf16": use_bf16,
    }


def _precision_of(name: str) -> str:
    return "int8" if name.endswith("int8") else "bf16" if name.endswith("bf16") else "fp32"


def runtime_rows(section: dict) -> list[dict]:
    """Per backbone and runtime: seconds, speed-up over transformers, and time / FLOP floor."""
    rows = []
    peak = section["cpu"]["peak_flops"]
    for backbone, result in section["forward"].items():
        theirs = result["seconds"]["transformers_eager_fp32"]
        for name, seconds in result["seconds"].items():
            precision = _precision_of(name)
            floor = result["flops"] / peak[precision] if peak[precision] else None
            rows.append(
                {
                    "backbone": backbone,
                    "runtime": name,
                    "seconds": seconds,
                    "speedup_vs_transformers": theirs / seconds,
                    "floor_seconds": floor,
                    "times_floor": seconds / floor if floor else None,
                    "floor_precision": precision,
                }
            )
    return rows


def print_runtime(section: dict) -> None:
    cpu = section["cpu"]
    print(f"\nruntime section: {cpu['cores']} cores at {cpu['clock_ghz']} GHz, flags {' '.join(cpu['flags'])}")
    print(
        "  peak GFLOP/s: "
        + ", ".join(f"{p} {v / 1e9:.0f}" for p, v in cpu["peak_flops"].items() if v)
        + f"; measured fp32 GEMM {section['gemm_flops'] / 1e9:.0f}"
    )
    for backbone, result in section["forward"].items():
        print(
            f"  {backbone}: {result['flops'] / 1e9:.1f} GFLOPs per forward; export parity "
            + ", ".join(f"{k} {v}" for k, v in result["exports"].items())
        )
    print(f"\n{'backbone':<8} {'runtime':<40} {'seconds':>8} {'x transformers':>15} {'floor s':>8} {'x floor':>8}")
    for row in runtime_rows(section):
        floor = f"{row['floor_seconds']:.3f}" if row["floor_seconds"] else "n/a"
        times = f"{row['times_floor']:.2f}" if row["times_floor"] else "n/a"
        print(
            f"{row['backbone']:<8} {row['runtime']:<40} {row['seconds']:>8.3f} {row['speedup_vs_transformers']:>15.2f} "
            f"{floor:>8} {times:>8}"
        )
    accuracy = section.get("int8_accuracy")
    if accuracy:
        print(
            f"\nint8 on the trained model {accuracy['model']} ({accuracy['num_images']} held-out synthetic scenes, "
            f"{accuracy['image_size']} px, batch 1):"
        )
        print(f"  {'runtime':<20} {'mIoU':>7} {'PQ':>7} {'PQ th':>7} {'PQ st':>7} {'seconds':>8}")
        for name, r in accuracy["runtimes"].items():
            print(
                f"  {name:<20} {r['mean_iou']:>7.4f} {r['pq']:>7.4f} {r['pq_things']:>7.4f} {r['pq_stuff']:>7.4f} {r['seconds']:>8.4f}"
            )


def int8_accuracy(
    model_dir: str | Path,
    workdir: Path,
    *,
    threads: int,
    num_images: int = 200,
    calibration_count: int = 64,
    image_size: int = 128,
    repeats: int = 20,
) -> dict:
    """mIoU/PQ and forward time of a trained model (the `make demo` folder) in PyTorch and each exported
    runtime, fp32 and int8, on the held-out synthetic split (as `make demo` evaluates it)."""
    from modeling_maskformer.data import SyntheticShapesConfig, build_dataset
    from modeling_maskformer.evaluation import Evaluator
    from modeling_maskformer.image_processing import MaskFormerImageProcessor
    from modeling_maskformer.modeling_maskformer import MaskFormerForInstanceSegmentation

    model = MaskFormerForInstanceSegmentation.from_pretrained(model_dir).eval()
    processor = MaskFormerImageProcessor.from_pretrained(model_dir)
    config = SyntheticShapesConfig(thing_colours="by_class")
    dataset = build_dataset("synthetic", "validation", num_images=num_images, image_size=image_size, config=config)
    train = build_dataset("synthetic", "train", num_images=calibration_count, image_size=image_size, config=config)
    calibration = [train[i]["image"].convert("RGB") for i in range(len(train))]
    runtimes, facts = _exports(model, processor, workdir, image_size, calibration, threads)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    results = {}
    probe = processor(dataset[0]["image"], return_tensors="pt")
    for name, runner in {"pytorch_fp32": model, **runtimes}.items():
        evaluator = Evaluator.for_dataset(dataset, id2label)
        with torch.no_grad():
            for start in range(0, len(dataset), 8):
                items = [dataset[i] for i in range(start, min(start + 8, len(dataset)))]
                evaluator.update(
                    processor,
                    runner(**processor([item["image"] for item in items], return_tensors="pt")),
                    items,
                )
            seconds = median_times({"f": lambda runner=runner: runner(**probe)}, repeats, 2)["f"]
        metrics = evaluator.compute()
        results[name] = {
            "mean_iou": metrics["semantic"]["mean_iou"],
            **{key: metrics["panoptic"][key] for key in ("pq", "pq_things", "pq_stuff")},
            "seconds": seconds,
        }
    return {
        "model": str(model_dir),
        "num_images": num_images,
        "image_size": image_size,
        "calibration": f"{calibration_count} synthetic training scenes",
        "exports": facts,
        "runtimes": results,
    }


def run_runtime_section(
    settings: Settings, *, backbones: list[str], threads: int, demo_model: str | None, workdir: Path
) -> dict:
    """The whole section: forward per backbone and runtime, and int8 accuracy when `demo_model` exists."""
    from benchmarks.common import build_checkpoints

    section = {"cpu": cpu_peak(), "gemm_flops": measured_gemm_flops(), "threads": threads, "forward": {}}
    for backbone in backbones:
        print(f"runtime section: exporting and timing {backbone} ...", flush=True)
        folders = build_checkpoints(backbone, workdir / backbone, settings)
        section["forward"][backbone] = bench_runtimes(
            folders, settings, workdir / backbone / "exports", threads=threads
        )
    if demo_model and Path(demo_model).is_dir():
        print(f"runtime section: int8 accuracy on {demo_model} ...", flush=True)
        section["int8_accuracy"] = int8_accuracy(demo_model, workdir / "demo", threads=threads)
    section["rows"] = runtime_rows(section)
    return section
