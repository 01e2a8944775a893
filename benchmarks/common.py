"""What the benchmark sections share: settings, machine information, timing, the two models with identical
weights (a random transformers MaskFormer at the ADE20K shapes and our conversion of it) and synthetic inputs."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from modeling_maskformer.image_processing import MaskFormerImageProcessor
from modeling_maskformer.interop.transformers_weights import convert_from_transformers
from modeling_maskformer.modeling_maskformer import MaskFormerForInstanceSegmentation
from modeling_maskformer.variants import variant_config

NUM_CLASSES, NUM_QUERIES = 150, 100
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


FULL = Settings(512, (512, 683), 20, 20, repeats=5, warmup=1, post_repeats=40, train_steps=3)
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


def backbone_config(name: str, tiny: bool):
    """Swin-T or ResNet-50 as in the ADE20K checkpoints (`tiny`: the same kinds, a few channels wide), from the
    variants `benchmark-swin-t`, `benchmark-r50` and their `-tiny` versions (`modeling_maskformer.variants`)."""
    if name not in ("swin-t", "r50"):
        raise ValueError(f"unknown backbone {name!r}: swin-t or r50")
    return variant_config(f"benchmark-{name}{'-tiny' if tiny else ''}").backbone_config


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
    transformers.MaskFormerImageProcessor(**processor_settings(settings)).save_pretrained(folder / "transformers")
    convert_from_transformers(folder / "transformers", folder / "ours")
    return {"transformers": str(folder / "transformers"), "ours": str(folder / "ours")}


def load_pair(folders: dict[str, str]):
    """(their model, their processor, our model, our processor), models in eval mode."""
    theirs = transformers.MaskFormerForInstanceSegmentation.from_pretrained(folders["transformers"]).eval()
    their_processor = transformers.MaskFormerImageProcessor.from_pretrained(folders["transformers"])
    ours = MaskFormerForInstanceSegmentation.from_pretrained(folders["ours"]).eval()
    return theirs, their_processor, ours, MaskFormerImageProcessor.from_pretrained(folders["ours"])


def smooth_noise(shape: tuple[int, ...], cell: int, generator: torch.Generator) -> torch.Tensor:
    """Roughly unit-variance noise varying over `cell` pixels (coarse Gaussian noise, upsampled bilinearly)."""
    *lead, h, w = shape
    coarse = torch.randn(math.prod(lead), 1, h // cell + 2, w // cell + 2, generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bilinear").view(shape)


def agreement(ours: torch.Tensor, other: torch.Tensor) -> float:
    """Share of pixels with the same value (0 when the shapes differ)."""
    if ours.shape != other.shape:
        return 0.0
    return (ours.to(torch.int64) == other.to(torch.int64)).double().mean().item()


def random_outputs(
    kind: str = "confident",
    *,
    batch_size: int = 1,
    num_queries: int = 100,
    num_classes: int = 150,
    mask_size: tuple[int, int] = (128, 128),
    num_objects: int = 15,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic (class_logits (B, Q, K+1), mask_logits (B, Q, h, w)) of a model.

    "confident": `num_objects` queries with a confident class own the cells of a random (Voronoi) partition
    with sharp, smooth mask logits; the other queries say "no object" with smooth low masks (what a trained
    model gives). "noisy": confident blobs on i.i.d. per-pixel mask noise (a stress case).
    """
    g = torch.Generator().manual_seed(seed)
    (h, w), K = mask_size, num_classes
    class_logits = torch.randn(batch_size, num_queries, K + 1, generator=g)
    class_logits[..., K] += 6.0  # "no object" by default
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    if kind == "confident":
        mask_logits = smooth_noise((batch_size, num_queries, h, w), 16, g) * 2 - 3
    else:
        mask_logits = torch.randn(batch_size, num_queries, h, w, generator=g) * 0.5 - 4
    for b in range(batch_size):
        objects = torch.randperm(num_queries, generator=g)[:num_objects]
        labels = torch.randint(0, K, (num_objects,), generator=g)
        centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([h, w])
        distance = ((ys - centres[:, :1, None]) ** 2 + (xs - centres[:, 1:, None]) ** 2).sqrt()  # (n, h, w)
        class_logits[b, objects, K] -= 12.0
        class_logits[b, objects, labels] += 10.0
        if kind == "confident":  # Voronoi cells: positive inside, sloping down across the boundary
            far = torch.full((1, h, w), float(h + w))  # so that a lone object still has a boundary
            nearest_other = torch.stack(
                [torch.cat([distance[:i], distance[i + 1 :], far]).amin(0) for i in range(num_objects)]
            )
            logits = 0.5 * (nearest_other - distance) + smooth_noise((num_objects, h, w), 8, g) * 0.5
        else:  # blobs on i.i.d. noise
            radius = (torch.rand(num_objects, 1, 1, generator=g) * 0.2 + 0.05) * h
            logits = 0.4 * (radius - distance) + torch.randn(num_objects, h, w, generator=g) * 0.3
        mask_logits[b, objects] = logits
    return class_logits, mask_logits


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
    object_logits = F.avg_pool2d((inside * 16 - 8)[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
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
