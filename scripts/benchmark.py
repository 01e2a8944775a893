"""Side-by-side benchmark: this package vs transformers 5.23's MaskFormer, same weights, same inputs.

    python scripts/benchmark.py                  # full run (~5-10 min on 2 cores): `make bench`
    python scripts/benchmark.py --quick          # 128 px inputs, one repeat: a smoke run of the real shapes
    python scripts/benchmark.py --compile --train-backbones r50 swin-t --output outputs/benchmark.json

Models: a randomly initialised `transformers.MaskFormerForInstanceSegmentation` at the ADE20K shapes (150
classes, 100 queries, d=256, 6 decoder layers, FPN/mask 256) with a Swin-T and a ResNet-50 backbone, saved,
then converted to ours with `convert_from_transformers`, so both hold identical weights (the forward section
records the largest logit difference as a check). `--tiny` shrinks the model too (the test suite).

Timings are medians of --repeats calls after --warmup untimed ones; ours and transformers' calls alternate,
so that load drifting on a shared machine hits both alike. torch uses --threads threads (default: torch's).
- forward: eval, no_grad, batch 1 at 512x512. Ours also with the opt-in fast path: channels_last weights and
  input, alone and with bf16 autocast (the faster of the two is the "fast path" row); with --compile,
  `torch.compile(ours)` in a separate process (compile time reported; skipped with a note on failure or
  after --compile-timeout).
- post-processing: the three `post_process_*` of each processor, fed identical outputs of a confident model
  crafted from a synthetic ADE-like label map (20 segments with distinct classes, 512x683 original, 512x704
  padded input; one query per segment with a confident class and mask logits +8 inside the segment at 1/4
  resolution, -8 outside, 5x5 blur, unit noise; the other 80 queries "no object"). Agreement: share of our
  pixels equal to the literal `_reference_*` implementations in `image_processing/post_processing.py` at the
  same padded geometry; for semantic also vs transformers without padding and at the input size (where its
  algorithm is the same, so exact); panoptic vs transformers there is informational (its overlap test differs).
- pipeline: `pipeline("image-segmentation")(image, subtask="semantic")` on a 512x683 PIL image, each side with
  its own model and processor; timed with the model's own (random-weight, near-uniform) logits and with the
  logits swapped, after the full forward, for the crafted confident ones (the realistic case).
- image processor: 2 PIL images 512x683 with semantic maps (150 classes, 20 present), shortest_edge 512,
  longest_edge 2048, size_divisor 32, ignore_index 255 on both sides.
- training (R50 by default; --train-backbones): batch of two 512x512 images with 20 instance masks each,
  forward + backward + AdamW step, our dense and point-sampled losses vs transformers' (dense); dropout 0 in
  all (transformers' default). --supervision: "deep" = a loss on every decoder layer (the paper; transformers
  needs output_hidden_states=True for it), "last" = the final layer only (transformers' default), "both".
  Each configuration runs in a fresh process (this script with --worker), so one allocator's cache never
  serves the next. Peak memory = peak resident set (VmHWM in /proc/self/status, reset with
  /proc/self/clear_refs once model, optimizer and batch exist) minus the resident set at that moment: what the
  steps add (activations, gradients, AdamW state; the last two are reported separately as an estimate).

Prints the medians and a table of ratios (time: transformers / ours, >1 = ours faster; memory: ours /
transformers, <1 = ours smaller) with PASS/MISS against the targets, and writes everything with machine
information (CPU, cores, threads, bf16 support, load average) to --output as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import operator
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from modeling_maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor  # noqa: E402
from modeling_maskformer.benchmarks.common import agreement, smooth_noise  # noqa: E402
from modeling_maskformer.conversion import convert_from_transformers  # noqa: E402
from modeling_maskformer.image_processing import post_processing  # noqa: E402

NUM_CLASSES, NUM_QUERIES = 150, 100
STAGES = ["stage1", "stage2", "stage3", "stage4"]
TRAIN_IMPLS = ("transformers", "ours-dense", "ours-point")


@dataclass(frozen=True)
class Settings:
    image_size: int  # forward and training input side
    original: tuple[int, int]  # (H, W) of the original image for post-processing, pipeline, processor
    num_segments: int
    train_objects: int
    repeats: int
    warmup: int
    post_repeats: int
    train_steps: int
    tiny_model: bool = False  # backbone and decoder a few channels wide (the test suite), not ADE20K's


FULL = Settings(512, (512, 683), 20, 20, repeats=5, warmup=1, post_repeats=10, train_steps=3)
QUICK = Settings(128, (128, 171), 20, 20, repeats=1, warmup=1, post_repeats=2, train_steps=1)
TINY = Settings(64, (64, 85), 20, 5, repeats=1, warmup=0, post_repeats=1, train_steps=1, tiny_model=True)


def processor_settings(settings: Settings) -> dict:
    """The same for both processors; the short side of the original is kept (no resize at full size)."""
    shortest = min(settings.original)
    return {
        "size": {"shortest_edge": shortest, "longest_edge": 4 * shortest},
        "size_divisor": 32,
        "ignore_index": 255,
        "do_reduce_labels": False,
    }


# ----------------------------------------------------------------------------------------------------
# Machine and timing
# ----------------------------------------------------------------------------------------------------
def bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    flags = re.search(r"flags\s*:\s*(.*)", cpuinfo)
    flags = set(flags.group(1).split()) if flags else set()
    return {
        "cpu_model": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags": sorted(f for f in flags if "bf16" in f),
        "mkldnn_bf16_supported": bf16_supported(),
        "load_average_at_start": os.getloadavg(),
    }


@contextlib.contextmanager
def bench_environment(threads: int):
    """torch threads set, transformers' warnings and progress bars off; all restored afterwards (main() also
    runs inside the test suite)."""
    previous_threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def median_times(functions: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function; calls alternate between the functions."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ----------------------------------------------------------------------------------------------------
# Models: one transformers checkpoint per backbone, converted to ours
# ----------------------------------------------------------------------------------------------------
def backbone_config(name: str, tiny: bool):
    """Swin-T or ResNet-50 as in the ADE20K checkpoints (`tiny`: the same kinds, a few channels wide)."""
    if name == "swin-t":
        shape = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7}
        if tiny:
            shape = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}
        return transformers.MaskFormerSwinConfig(**shape, out_features=STAGES)
    if name == "r50":
        shape = {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3]}
        if tiny:
            shape = {"embedding_size": 8, "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
        return transformers.ResNetConfig(**shape, layer_type="bottleneck", out_features=STAGES)
    raise ValueError(f"unknown backbone {name!r}: swin-t or r50")


def build_checkpoints(backbone: str, folder: Path, settings: Settings) -> dict[str, str]:
    """Random transformers MaskFormer (ADE20K shapes) saved with its processor, and our conversion of it."""
    torch.manual_seed(0)
    width, layers, ffn = (32, 2, 64) if settings.tiny_model else (256, 6, 2048)
    config = transformers.MaskFormerConfig(
        backbone_config=backbone_config(backbone, settings.tiny_model),
        decoder_config={
            "d_model": width,
            "decoder_layers": layers,
            "decoder_attention_heads": 8,
            "decoder_ffn_dim": ffn,
            "num_queries": NUM_QUERIES,
        },
        fpn_feature_size=width,
        mask_feature_size=width,
        id2label={i: f"class_{i}" for i in range(NUM_CLASSES)},
    )
    theirs = transformers.MaskFormerForInstanceSegmentation(config)
    theirs.save_pretrained(folder / "transformers")
    transformers.MaskFormerImageProcessor(**processor_settings(settings)).save_pretrained(
        folder / "transformers"
    )
    convert_from_transformers(folder / "transformers", folder / "ours")
    return {"transformers": str(folder / "transformers"), "ours": str(folder / "ours")}


def load_pair(folders: dict[str, str]):
    """(their model, their processor, our model, our processor), models in eval mode."""
    theirs = transformers.MaskFormerForInstanceSegmentation.from_pretrained(folders["transformers"]).eval()
    their_processor = transformers.MaskFormerImageProcessor.from_pretrained(folders["transformers"])
    ours = MaskFormerForInstanceSegmentation.from_pretrained(folders["ours"]).eval()
    return theirs, their_processor, ours, MaskFormerImageProcessor.from_pretrained(folders["ours"])


# ----------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------
def segment_map(height: int, width: int, num_segments: int, generator: torch.Generator) -> torch.Tensor:
    """(H, W) segment ids 0..n-1: a Voronoi partition with wobbly boundaries."""
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    seeds = torch.rand(num_segments, 2, generator=generator) * torch.tensor([height, width])
    distance = ((ys - seeds[:, :1, None]) ** 2 + (xs - seeds[:, 1:, None]) ** 2).sqrt()  # (n, H, W)
    distance += smooth_noise((num_segments, height, width), 32, generator) * 0.05 * max(height, width)
    return distance.argmin(0)


def label_map(height: int, width: int, num_segments: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment ids (H, W), class of each segment (n,)): distinct classes out of NUM_CLASSES."""
    generator = torch.Generator().manual_seed(seed)
    segments = segment_map(height, width, num_segments, generator)
    return segments, torch.randperm(NUM_CLASSES, generator=generator)[:num_segments]


def crafted_outputs(segments, classes, valid: tuple[int, int], padded: tuple[int, int], seed: int):
    """(class logits (1, Q, K+1), mask logits (1, Q, H/4, W/4)) of a confident model that found `segments`.

    One query per segment: its class confident, its mask logit +8 inside the segment (resized to the valid
    content at 1/4 of the padded input), -8 outside, blurred over 5x5, plus unit noise. The other queries
    say "no object" with smooth, low masks.
    """
    generator = torch.Generator().manual_seed(seed)
    n, (h, w) = len(classes), (padded[0] // 4, padded[1] // 4)
    low = (math.ceil(valid[0] / 4), math.ceil(valid[1] / 4))
    small = F.interpolate(segments[None, None].float(), size=low, mode="nearest")[0, 0].long()
    inside = torch.zeros(n, h, w)
    inside[:, : low[0], : low[1]] = (small[None] == torch.arange(n)[:, None, None]).float()
    object_logits = F.avg_pool2d((inside * 16 - 8)[:, None], 5, stride=1, padding=2, count_include_pad=False)[
        :, 0
    ]
    object_logits += torch.randn(n, h, w, generator=generator)

    mask_logits = smooth_noise((NUM_QUERIES, h, w), 8, generator) * 2 - 6
    class_logits = torch.randn(NUM_QUERIES, NUM_CLASSES + 1, generator=generator)
    class_logits[:, NUM_CLASSES] += 8.0  # "no object"
    queries = torch.randperm(NUM_QUERIES, generator=generator)[:n]
    mask_logits[queries] = object_logits
    class_logits[queries, NUM_CLASSES] -= 8.0
    class_logits[queries, classes] += 10.0
    return class_logits[None], mask_logits[None]


def scene_image(height: int, width: int, seed: int) -> Image.Image:
    """An RGB image whose colours follow a segment map (random per segment, with texture)."""
    generator = torch.Generator().manual_seed(seed)
    segments = segment_map(height, width, 20, generator)
    colours = torch.randint(0, 256, (20, 3), generator=generator).float()
    pixels = colours[segments] + torch.randn(height, width, 3, generator=generator) * 12
    return Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy())


def semantic_map(height: int, width: int, num_segments: int, seed: int) -> Image.Image:
    """An ADE-style "L" map of class ids (~num_segments of NUM_CLASSES present)."""
    segments, classes = label_map(height, width, num_segments, seed)
    return Image.fromarray(classes[segments].to(torch.uint8).numpy())


def training_batch(batch_size: int, size: int, num_objects: int, seed: int):
    """pixel_values (B, 3, S, S), and per image mask_labels (N, S, S) float and class_labels (N,)."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    mask_labels, class_labels = [], []
    for b in range(batch_size):
        segments, classes = label_map(size, size, num_objects, seed + 1 + b)
        mask_labels.append((segments[None] == torch.arange(num_objects)[:, None, None]).float())
        class_labels.append(classes)
    return pixel_values, mask_labels, class_labels


# ----------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------
def bench_forward(theirs, ours, settings: Settings) -> dict:
    pixel_values = torch.randn(
        1, 3, settings.image_size, settings.image_size, generator=torch.Generator().manual_seed(0)
    )
    fast = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    fast_input = pixel_values.contiguous(memory_format=torch.channels_last)

    def run_fast(bf16: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return fast(fast_input)

    with torch.no_grad():
        expected, got = theirs(pixel_values), ours(pixel_values)
    result = {
        "input": list(pixel_values.shape),
        "max_abs_logit_difference": max(
            (expected.class_queries_logits - got.class_queries_logits).abs().max().item(),
            (expected.masks_queries_logits - got.masks_queries_logits).abs().max().item(),
        ),
    }
    functions = {
        "transformers": lambda: theirs(pixel_values),
        "ours": lambda: ours(pixel_values),
        "ours_channels_last": lambda: run_fast(False),
    }
    try:
        bf16 = run_fast(True)
        result["bf16_semantic_agreement"] = agreement(semantic_map_of(bf16), semantic_map_of(got))
        functions["ours_channels_last_bf16"] = lambda: run_fast(True)
    except RuntimeError as error:  # an op without a bf16 CPU kernel
        result["bf16_error"] = f"{type(error).__name__}: {error}"
    with torch.no_grad():
        result["seconds"] = median_times(functions, settings.repeats, settings.warmup)
    return result


def semantic_map_of(outputs) -> torch.Tensor:
    """Our semantic map of model outputs, at the input size."""
    class_logits, mask_logits = outputs.class_queries_logits.float(), outputs.masks_queries_logits.float()
    size = [4 * side for side in mask_logits.shape[-2:]]
    return post_processing.semantic_segmentation(class_logits, mask_logits, padded_size=size)[0]


def first_map(results: list) -> torch.Tensor:
    """The first image's map from a post-processing result (a tensor, or a dict with "segmentation")."""
    return results[0] if isinstance(results[0], torch.Tensor) else results[0]["segmentation"]


def post_processing_inputs(settings: Settings):
    """Crafted outputs at the realistic geometry: original -> resized valid content, padded input."""
    processor = MaskFormerImageProcessor(**processor_settings(settings))
    valid = processor.get_resize_output_size(*settings.original)
    divisor = processor.size_divisor
    padded = (math.ceil(valid[0] / divisor) * divisor, math.ceil(valid[1] / divisor) * divisor)
    segments, classes = label_map(*settings.original, settings.num_segments, seed=1)
    class_logits, mask_logits = crafted_outputs(segments, classes, valid, padded, seed=2)
    return class_logits, mask_logits, valid, padded, classes[segments]


POST_PROCESSINGS = {  # task: (processor method, our reference implementation)
    "semantic": ("post_process_semantic_segmentation", post_processing._reference_semantic),
    "instance": ("post_process_instance_segmentation", post_processing._reference_instance),
    "panoptic": ("post_process_panoptic_segmentation", post_processing._reference_panoptic),
}


def bench_post_processing(settings: Settings) -> dict:
    class_logits, mask_logits, valid, padded, truth = post_processing_inputs(settings)
    pixel_mask = torch.zeros(1, *padded, dtype=torch.long)
    pixel_mask[:, : valid[0], : valid[1]] = 1
    outputs = SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=mask_logits, pixel_mask=pixel_mask
    )
    same = processor_settings(settings)
    processors = {
        "transformers": transformers.MaskFormerImageProcessor(**same),
        "ours": MaskFormerImageProcessor(**same),
    }
    geometry = {"padded_size": padded, "valid_sizes": [valid], "target_sizes": [settings.original]}
    result = {"original": list(settings.original), "valid": list(valid), "padded": list(padded)}
    for task, (method, reference) in POST_PROCESSINGS.items():
        extra = {"label_ids_to_fuse": set()} if task == "panoptic" else {}  # silences transformers' warning
        calls = {
            name: functools.partial(
                getattr(processor, method), outputs, target_sizes=[settings.original], **extra
            )
            for name, processor in processors.items()
        }
        seconds = median_times(calls, settings.post_repeats, settings.warmup)
        segmentation = first_map(calls["ours"]())
        expected = first_map(reference(class_logits, mask_logits, **geometry))
        result[task] = {"seconds": seconds, "agreement_with_reference": agreement(segmentation, expected)}
        if task == "semantic":  # the crafted outputs are only realistic if they recover the label map
            result[task]["agreement_with_label_map"] = agreement(segmentation, truth)
        else:
            background = -1 if task == "instance" else 0
            result[task]["segments_found"] = len(set(segmentation.unique().tolist()) - {background})
    result.update(no_padding_agreement(class_logits, mask_logits, padded, processors))
    return result


def no_padding_agreement(class_logits, mask_logits, padded, processors) -> dict:
    """Ours vs transformers where transformers' semantic map is exact: no padding, output at the input size.
    (Its panoptic overlap test differs from the paper's, so that figure is for information.)"""
    outputs = SimpleNamespace(
        class_queries_logits=class_logits,
        masks_queries_logits=mask_logits,
        pixel_mask=torch.ones(1, *padded, dtype=torch.long),
    )
    maps = {
        task: [
            first_map(getattr(processor, method)(outputs, target_sizes=[tuple(padded)]))
            for processor in processors.values()
        ]
        for task, (method, _) in POST_PROCESSINGS.items()
        if task != "instance"
    }
    return {
        "semantic_agreement_with_transformers_no_padding": agreement(*maps["semantic"]),
        "panoptic_agreement_with_transformers_no_padding_info": agreement(*maps["panoptic"]),
    }


def swap_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor):
    """A forward hook: the model runs in full, then its logits are replaced by the crafted confident ones."""

    def hook(module, args, output):
        output["class_queries_logits"], output["masks_queries_logits"] = class_logits, mask_logits
        return output

    return hook


def bench_pipeline(theirs, their_processor, ours, our_processor, settings: Settings) -> dict:
    """Timed twice: as is (random weights: near-uniform, unrealistic logits) and with the model's logits
    swapped for the crafted confident ones of the post-processing section (the figure the target is for)."""
    image = scene_image(*settings.original, seed=3)
    segmenters = {
        "transformers": transformers.pipeline(
            "image-segmentation", model=theirs, image_processor=their_processor
        ),
        "ours": transformers.pipeline("image-segmentation", model=ours, image_processor=our_processor),
    }
    functions = {name: (lambda s=s: s(image, subtask="semantic")) for name, s in segmenters.items()}
    result = {"image": [image.height, image.width]}
    result["seconds_random_init_logits"] = median_times(functions, settings.repeats, settings.warmup)
    class_logits, mask_logits = post_processing_inputs(settings)[:2]
    hooks = [model.register_forward_hook(swap_logits(class_logits, mask_logits)) for model in (theirs, ours)]
    try:
        result["seconds"] = median_times(functions, settings.repeats, settings.warmup)
    finally:
        for hook in hooks:
            hook.remove()
    return result


def bench_image_processor(settings: Settings) -> dict:
    images = [scene_image(*settings.original, seed=10 + i) for i in range(2)]
    maps = [semantic_map(*settings.original, settings.num_segments, seed=20 + i) for i in range(2)]
    processors = {
        "transformers": transformers.MaskFormerImageProcessor(**processor_settings(settings)),
        "ours": MaskFormerImageProcessor(**processor_settings(settings)),
    }
    functions = {
        name: (lambda p=p: p(images, segmentation_maps=maps, return_tensors="pt"))
        for name, p in processors.items()
    }
    batches = {name: function() for name, function in functions.items()}
    return {
        "images": [[im.height, im.width] for im in images],
        "pixel_values": {name: list(batch["pixel_values"].shape) for name, batch in batches.items()},
        "same_class_labels": all(
            sorted(a.tolist()) == sorted(b.tolist())
            for a, b in zip(batches["ours"]["class_labels"], batches["transformers"]["class_labels"])
        ),
        "seconds": median_times(functions, settings.post_repeats, settings.warmup),
    }


def run_in_subprocess(spec: dict, timeout: float) -> dict:
    """Runs this script with --worker `spec`; its last stdout line is the JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
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


# ----------------------------------------------------------------------------------------------------
# Workers (fresh processes)
# ----------------------------------------------------------------------------------------------------
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
    pixel_values, mask_labels, class_labels = training_batch(
        2, settings.image_size, settings.train_objects, seed=5
    )

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(
            pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels, **extra
        ).loss
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
        seconds = median_times(
            {"ours_compiled": lambda: compiled(pixel_values)}, settings.repeats, settings.warmup
        )
    return {"compile_seconds": compile_seconds, "seconds": seconds["ours_compiled"]}


def run_worker(spec: dict) -> None:
    with bench_environment(spec["threads"]):
        result = {"train": train_worker, "compile": compile_worker}[spec["task"]](spec)
    print(json.dumps(result))


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------
def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


NO_GOAL = ("", None)


def goal(op: str, bound: float) -> tuple[str, Callable[[float], bool]]:
    """A target as (text, check), e.g. goal(">=", 1.5)."""
    compare = {">=": operator.ge, ">": operator.gt, "<=": operator.le}[op]
    return f"{op} {bound}", lambda value: compare(value, bound)


def summary_rows(results: dict) -> list[dict]:
    """One row per comparison: the ratio, the target and PASS/MISS ("-": no target or no figure)."""
    rows = []

    def add(name, value, target=NO_GOAL, note=""):
        text, check = target
        verdict = "-" if check is None or value is None else ("PASS" if check(value) else "MISS")
        rows.append({"comparison": name, "ratio": value, "target": text, "verdict": verdict, "note": note})

    for backbone, forward in results["forward"].items():
        s, theirs = forward["seconds"], forward["seconds"]["transformers"]
        add(f"forward {backbone} fp32 (time t/o)", ratio(theirs, s["ours"]), goal(">=", 1.0))
        add(f"forward {backbone} channels_last (time t/o)", ratio(theirs, s["ours_channels_last"]))
        bf16 = ratio(theirs, s.get("ours_channels_last_bf16"))
        add(f"forward {backbone} channels_last+bf16 (time t/o)", bf16, note=forward.get("bf16_error", ""))
        fast = min((k for k in s if k.startswith("ours_channels_last")), key=s.get)
        add(
            f"forward {backbone} fast path (time t/o)",
            ratio(theirs, s[fast]),
            goal(">", 1.0),
            f"best: {fast}",
        )
        compiled = results.get("compile", {}).get(backbone)
        if compiled is not None:  # NOTE: timed in its own process, against transformers' time from this one
            note = compiled.get("error", f"compile {compiled.get('compile_seconds', 0):.0f} s")
            add(
                f"forward {backbone} torch.compile (time t/o)",
                ratio(theirs, compiled.get("seconds")),
                note=note,
            )
    post = results["post_processing"]
    for task in ("semantic", "instance", "panoptic"):
        seconds, same = post[task]["seconds"], post[task]["agreement_with_reference"]
        target = (">= 5.0, >= 99.9% = ref", lambda v, same=same: v >= 5.0 and same >= 0.999)
        note = f"{100 * same:.4f}% of pixels = reference"
        add(f"post-process {task} (time t/o)", ratio(seconds["transformers"], seconds["ours"]), target, note)
    same = post["semantic_agreement_with_transformers_no_padding"]
    add("semantic, no padding: share of pixels = transformers", same, goal(">=", 0.999))
    for backbone, pipe in results["pipeline"].items():
        s, r = pipe["seconds"], pipe["seconds_random_init_logits"]
        name = f"pipeline semantic {backbone} (time t/o)"
        add(name, ratio(s["transformers"], s["ours"]), goal(">=", 1.3), "confident logits")
        add(name, ratio(r["transformers"], r["ours"]), note="random-init logits")
    s = results["image_processor"]["seconds"]
    add("image processor with maps (time t/o)", ratio(s["transformers"], s["ours"]))
    for name, training in results["training"].items():
        theirs = training["transformers"]
        for impl in ("ours-dense", "ours-point"):
            ours, point = training[impl], impl == "ours-point"
            note = theirs.get("error") or ours.get("error") or ""
            step_time = ratio(theirs.get("step_seconds"), ours.get("step_seconds"))
            memory = ratio(ours.get("peak_memory_mb"), theirs.get("peak_memory_mb"))
            step_goal, memory_goal = (goal(">=", 1.5), goal("<=", 0.6)) if point else (NO_GOAL, NO_GOAL)
            add(f"train {name} {impl}: step time (t/o)", step_time, step_goal, note)
            add(f"train {name} {impl}: peak memory (o/t)", memory, memory_goal, note)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'comparison':<62} {'ratio':>8}  {'target':<26} {'verdict':<7} note")
    for row in rows:
        value = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(f"{row['comparison']:<62} {value:>8}  {row['target']:<26} {row['verdict']:<7} {row['note']}")


def print_seconds(results: dict) -> None:
    """The raw medians behind the ratios."""
    print("\nmedian seconds")
    for backbone, values in results["forward"].items():
        print(f"  forward {backbone}: " + ", ".join(f"{k} {v:.3f}" for k, v in values["seconds"].items()))
    for backbone, values in results["pipeline"].items():
        for key in ("seconds", "seconds_random_init_logits"):
            print(
                f"  pipeline {backbone} ({key}): " + ", ".join(f"{k} {v:.3f}" for k, v in values[key].items())
            )
    for task in ("semantic", "instance", "panoptic"):
        seconds = results["post_processing"][task]["seconds"]
        print(f"  post-process {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in seconds.items()))
    seconds = results["image_processor"]["seconds"]
    print("  image processor: " + ", ".join(f"{k} {v:.4f}" for k, v in seconds.items()))
    for backbone, training in results["training"].items():
        for impl in TRAIN_IMPLS:
            run = training[impl]
            text = (
                run.get("error") or f"step {run['step_seconds']:.2f} s, peak +{run['peak_memory_mb']:.0f} MB"
            )
            print(f"  train {backbone} {impl}: {text}")


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="outputs/benchmark.json")
    parser.add_argument("--quick", action="store_true", help="128 px inputs, one repeat: a smoke test")
    parser.add_argument("--tiny", action="store_true", help="64 px inputs and a tiny model (the test suite)")
    parser.add_argument(
        "--backbones",
        nargs="*",
        default=["swin-t", "r50"],
        choices=["swin-t", "r50"],
        help="for forward and pipeline",
    )
    parser.add_argument("--train-backbones", nargs="*", default=["r50"], choices=["swin-t", "r50"])
    parser.add_argument(
        "--supervision",
        choices=["deep", "last", "both"],
        default="both",
        help="training losses on every decoder layer (the paper), the last only, or both runs",
    )
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 5, quick 1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile(ours), in a subprocess"
    )
    parser.add_argument("--compile-timeout", type=float, default=300.0, help="seconds, per backbone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, settings: Settings) -> dict:
    results = {
        "machine": machine_info(),
        "settings": {**asdict(settings), "threads": args.threads},
        "forward": {},
        "pipeline": {},
        "training": {},
    }
    with tempfile.TemporaryDirectory(prefix="maskformer-bench-") as workdir:
        folders = {}
        for backbone in dict.fromkeys(args.backbones + args.train_backbones):
            folders[backbone] = build_checkpoints(backbone, Path(workdir) / backbone, settings)
        for backbone in args.backbones:
            print(f"forward and pipeline, {backbone} ...", flush=True)
            theirs, their_processor, ours, our_processor = load_pair(folders[backbone])
            results["forward"][backbone] = bench_forward(theirs, ours, settings)
            results["pipeline"][backbone] = bench_pipeline(
                theirs, their_processor, ours, our_processor, settings
            )
            del theirs, ours
        if args.compile:
            print("torch.compile (one process per backbone) ...", flush=True)
            results["compile"] = {
                backbone: bench_compile(folders[backbone], settings, args.threads, args.compile_timeout)
                for backbone in args.backbones
            }
        print("post-processing and image processor ...", flush=True)
        results["post_processing"] = bench_post_processing(settings)
        results["image_processor"] = bench_image_processor(settings)
        for backbone in args.train_backbones:
            for deep in {"deep": [True], "last": [False], "both": [True, False]}[args.supervision]:
                name = f"{backbone}/{'deep-supervision' if deep else 'last-layer'}"
                print(f"training, {name} (one process per configuration) ...", flush=True)
                results["training"][name] = bench_training(folders[backbone], settings, args.threads, deep)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return None
    settings = TINY if args.tiny else QUICK if args.quick else FULL
    if args.repeats:
        settings = Settings(
            **{**asdict(settings), "repeats": args.repeats, "post_repeats": max(args.repeats, 2)}
        )
    started = time.perf_counter()
    with bench_environment(args.threads):
        results = run_all(args, settings)
    results["total_seconds"] = time.perf_counter() - started
    results["summary"] = summary_rows(results)
    print_seconds(results)
    print_table(results["summary"])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"\n{results['total_seconds']:.0f} s; written to {output}")
    if args.quick or args.tiny:
        print("NOTE: --quick/--tiny runs check the machinery; the targets are for the full run (at 128 px,")
        print("for one, point sampling's 12,544 points outnumber the pixels of a mask).")
    return results


if __name__ == "__main__":
    main()
