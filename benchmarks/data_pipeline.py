"""Section "data": the training data path per image at the paper's settings, ours against two comparisons doing the
same work, and how many DataLoader workers feed a GPU.

The work (REFERENCE.md, "Training recipe"): decode an ADE-sized JPEG and class-index PNG (512x683, 10-30 classes
in wobbly blobs, some "other"), short side resized to a random 0.5-2.0x the 512 crop, random 512 crop, flip,
photometric distortion (brightness, contrast, saturation, hue, each with p=0.5), one binary mask per class present,
normalise and pad into a batch. The pipelines:

- ours: `load_ade_folder` -> `TrainingSet(Augmentation)` -> `MaskFormerCollator(mask_dtype=torch.bool)` (what
  `training/loop.py` runs: bool masks, which the model turns into float on its device; the comparisons give
  float32 masks, the only kind transformers' processor makes);
- albumentations: transformers' fine-tuning example (examples/pytorch/instance-segmentation): PIL decode, numpy,
  an `A.Compose` (here with the paper's resize, crop, flip and photometric ranges instead of the example's fixed
  resize), then transformers' `MaskFormerImageProcessor` per item and a stacking collate, as the example does;
- torchvision: a plain torchvision-v2 pipeline: PIL decode, `tv_tensors.Image`/`Mask`, `v2.RandomResize`,
  `RandomCrop(pad_if_needed)`, `RandomHorizontalFlip`, `RandomPhotometricDistort`, and transformers'
  `MaskFormerImageProcessor` on the batch in the collate.

Images/s per core: one thread (torch and OpenCV), `num_workers=0`, the pipelines' passes interleaved so that load
from other processes hits all alike; then every pipeline with `num_workers` 0, 1, 2 (4 passes over the files, the
first batch of each worker untimed), and the workers needed for 16 and 64 images/s at the lower of the per-core
and the one-worker rate (a worker also pays for moving its batch through shared memory). Per-stage times come
from timing each pipeline's steps one by one on the same files (`ours_stages`, `comparison_stages`).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from benchmarks.common import segment_map, smooth_noise
from modeling_maskformer.data import Augmentation, MaskFormerCollator, TrainingSet, load_ade_folder
from modeling_maskformer.image_processing import MaskFormerImageProcessor

NUM_CLASSES, IGNORE = 150, 255
FEED_TARGETS = (16, 64)  # images/s to feed
TARGET_RATIO = 1.5  # ours per core against each comparison (issue 15)


@dataclass(frozen=True)
class DataSettings:
    image_size: tuple[int, int] = (512, 683)  # (H, W) of the files; every other file is portrait
    crop_size: int = 512
    min_scale: float = 0.5
    max_scale: float = 2.0
    num_images: int = 16
    batch_size: int = 8
    repeats: int = 5
    worker_counts: tuple[int, ...] = (0, 1, 2)
    worker_passes: int = 4  # passes over the files per num_workers measurement (the first batch per worker untimed)


FULL_DATA = DataSettings()
QUICK_DATA = DataSettings(num_images=8, batch_size=4, repeats=2, worker_passes=2)
TINY_DATA = DataSettings(
    image_size=(64, 85),
    crop_size=64,
    min_scale=1.0,
    num_images=4,
    batch_size=2,
    repeats=1,
    worker_counts=(0, 1),
    worker_passes=2,
)


def scene(height: int, width: int, seed: int) -> tuple[Image.Image, Image.Image]:
    """(photo-like RGB image, ADE-style "L" class map: 0 = "other", classes 1..150) of one random scene: 10-30
    classes in wobbly Voronoi blobs; each blob a colour lit by a gradient, with texture at three scales and grain
    (so that JPEG sizes and decode times are those of photos, ~100 kB at 512x683, not of flat colour)."""
    generator = torch.Generator().manual_seed(seed)
    count = int(torch.randint(10, 31, (), generator=generator))
    segments = segment_map(height, width, count, generator)
    labels = (torch.randperm(NUM_CLASSES, generator=generator)[:count] + 1)[segments]
    labels[smooth_noise((height, width), 48, generator) > 1.6] = 0  # patches of "other"
    pixels = (torch.rand(count, 3, generator=generator) * 200 + 20)[segments].permute(2, 0, 1)  # (3, H, W)
    ys, xs = torch.linspace(-1, 1, height)[:, None], torch.linspace(-1, 1, width)[None]
    pixels = pixels * (
        1 + 0.25 * (ys * torch.randn((), generator=generator) + xs * torch.randn((), generator=generator))
    )
    for cell, amplitude in ((64, 25), (16, 15), (4, 10)):
        pixels = pixels + smooth_noise((3, height, width), cell, generator) * amplitude
    pixels = pixels + torch.randn(3, height, width, generator=generator) * 4
    image = Image.fromarray(pixels.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return image, Image.fromarray(labels.to(torch.uint8).numpy(), mode="L")


def write_ade_folder(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """An ADEChallengeData2016-style training split of `count` scenes (JPEG quality 90, PNG), half portrait."""
    for sub in ("images", "annotations"):
        (root / sub / "training").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        height, width = size if i % 2 == 0 else size[::-1]
        image, labels = scene(height, width, seed + i)
        image.save(root / "images" / "training" / f"ADE_train_{i:08d}.jpg", quality=90)
        labels.save(root / "annotations" / "training" / f"ADE_train_{i:08d}.png")
    return root


# ----- the pipelines: each a DataLoader factory over the same folder -----


def _loader(dataset, s: DataSettings, num_workers: int, collate, passes: int) -> torch.utils.data.DataLoader:
    """In file order, `passes` times over the files (enough batches for workers to reach their steady rate)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=s.batch_size,
        sampler=list(range(len(dataset))) * passes,
        collate_fn=collate,
        num_workers=num_workers,
    )


def ours_loader(root: Path, s: DataSettings, num_workers: int, passes: int = 1) -> torch.utils.data.DataLoader:
    dataset = load_ade_folder(root, "train[:100%]", reduce_labels=True, num_labels=NUM_CLASSES)  # every item
    training_set = TrainingSet(dataset, Augmentation(s.crop_size, s.min_scale, s.max_scale, 1.0), seed=0)
    processor = MaskFormerImageProcessor(ignore_index=IGNORE, num_labels=NUM_CLASSES, do_reduce_labels=False)
    collate = MaskFormerCollator(processor, mask_dtype=torch.bool)  # as training/loop.py
    return _loader(training_set, s, num_workers, collate, passes)


class _Files(torch.utils.data.Dataset):
    """(RGB image, class map with ADE's 0 -> 255, k -> k - 1) as numpy arrays, decoded with PIL."""

    def __init__(self, root: Path, transform):
        self.images = sorted((root / "images" / "training").glob("*.jpg"))
        self.transform = transform
        self.reduce = np.array([IGNORE] + list(range(NUM_CLASSES)) + [IGNORE] * (255 - NUM_CLASSES), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path = self.images[index]
        image = np.array(Image.open(path).convert("RGB"))
        labels = self.reduce[
            np.array(Image.open(path.parent.parent.parent / "annotations" / "training" / f"{path.stem}.png"))
        ]
        return self.transform(image, labels)


def _their_processor() -> transformers.MaskFormerImageProcessor:
    return transformers.MaskFormerImageProcessor(do_resize=False, ignore_index=IGNORE, do_reduce_labels=False)


def albumentations_loader(
    root: Path, s: DataSettings, num_workers: int, passes: int = 1
) -> torch.utils.data.DataLoader:
    import albumentations as A

    compose = A.Compose(
        [
            A.SmallestMaxSize(
                max_size=list(range(int(s.min_scale * s.crop_size), int(s.max_scale * s.crop_size) + 1))
            ),
            A.RandomCrop(
                s.crop_size, s.crop_size, pad_if_needed=True, pad_position="top_left", fill=0, fill_mask=IGNORE
            ),
            A.HorizontalFlip(p=0.5),
            # brightness +-32 (additive), contrast 0.5-1.5; hue +-18 (OpenCV units), saturation shift
            A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.5, p=0.5),
            A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=30, val_shift_limit=0, p=0.5),
        ]
    )
    processor = _their_processor()

    def transform(image, labels):  # the example's augment_and_transform_batch, one item
        out = compose(image=image, mask=labels)
        inputs = processor(images=[out["image"]], segmentation_maps=[out["mask"]], return_tensors="pt")
        return {
            "pixel_values": inputs["pixel_values"][0],
            "pixel_mask": inputs["pixel_mask"][0],
            "mask_labels": inputs["mask_labels"][0],
            "class_labels": inputs["class_labels"][0],
        }

    def collate(examples):  # the example's collate_fn
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "pixel_mask": torch.stack([e["pixel_mask"] for e in examples]),
            "mask_labels": [e["mask_labels"] for e in examples],
            "class_labels": [e["class_labels"] for e in examples],
        }

    return _loader(_Files(root, transform), s, num_workers, collate, passes)


def torchvision_loader(root: Path, s: DataSettings, num_workers: int, passes: int = 1) -> torch.utils.data.DataLoader:
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    compose = v2.Compose(
        [
            v2.RandomResize(int(s.min_scale * s.crop_size), int(s.max_scale * s.crop_size) + 1, antialias=True),
            v2.RandomCrop(s.crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
            v2.RandomHorizontalFlip(),
            v2.RandomPhotometricDistort(
                brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.1, 0.1), p=0.5
            ),
        ]
    )
    processor = _their_processor()

    def transform(image, labels):
        image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        return compose(image, tv_tensors.Mask(torch.from_numpy(labels)))

    def collate(items):
        images, maps = zip(*items)
        return processor(
            images=[i.numpy() for i in images],
            segmentation_maps=[m.numpy() for m in maps],
            input_data_format="channels_first",
            return_tensors="pt",
        )

    return _loader(_Files(root, transform), s, num_workers, collate, passes)


LOADERS = {"ours": ours_loader, "albumentations": albumentations_loader, "torchvision": torchvision_loader}


def available_pipelines() -> dict:
    try:
        import albumentations  # noqa: F401
    except ImportError:
        return {name: f for name, f in LOADERS.items() if name != "albumentations"}
    return dict(LOADERS)


def images_per_second(loader) -> tuple[float, list[tuple[int, ...]]]:
    """(images/s over one pass, pixel_values shapes). With workers the clock starts once each worker has delivered
    its first batch (their start-up is not counted); without, every batch counts."""
    iterator = iter(loader)
    shapes, images, start = [], 0, time.perf_counter()
    for _ in range(loader.num_workers):
        shapes.append(tuple(next(iterator)["pixel_values"].shape))
    start = time.perf_counter()
    for batch in iterator:
        images += batch["pixel_values"].shape[0]
        shapes.append(tuple(batch["pixel_values"].shape))
    return images / (time.perf_counter() - start), shapes


# ----- where the time goes: each pipeline's steps timed one by one on the same files -----


def _timed(times: dict, name: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    times[name].append(time.perf_counter() - start)
    return result


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # as TrainingSet


def _crop_and_flip(augmentation: Augmentation, image, mask, box):
    from torchvision.transforms.v2 import functional as TF

    return augmentation.flip(TF.crop(image, *box), TF.crop(mask, *box))


def ours_stages(root: Path, s: DataSettings, repeats: int) -> dict[str, float]:
    """Median ms per image of each step of `TrainingSet` + `MaskFormerCollator`, in their order."""
    from torchvision import tv_tensors

    from modeling_maskformer.data import to_instance_targets

    loader = ours_loader(root, s, 0)
    training_set, collate = loader.dataset, loader.collate_fn
    dataset, augmentation = training_set.dataset, training_set.augmentation
    times = defaultdict(list)
    for repeat in range(repeats):
        items = []
        for index in range(len(dataset)):
            item = _timed(times, "decode JPEG + PNG, label checks", dataset.__getitem__, index)
            instance_map, mapping = _timed(
                times, "class map -> instance map (uint8)", to_instance_targets, item, IGNORE, compact=True
            )
            image = _timed(times, "PIL -> tensor (no copy)", _pil_to_tensor, item["image"])
            torch.manual_seed(repeat * 1000 + index)
            image, mask = _timed(
                times,
                "random resize (image + mask)",
                augmentation.resize,
                tv_tensors.Image(image),
                tv_tensors.Mask(torch.from_numpy(instance_map)),
            )
            box = augmentation.crop_box(mask, torch.arange(256), IGNORE)
            image, mask = _timed(times, "crop + flip", _crop_and_flip, augmentation, image, mask, box)
            pixels = np.ascontiguousarray(image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())
            params = augmentation.photometric.sample()
            pixels = _timed(times, "photometric distortion", augmentation.photometric.apply, pixels, params)
            items.append(
                (
                    torch.from_numpy(pixels).permute(2, 0, 1),
                    mask.as_subclass(torch.Tensor).contiguous(),
                    mapping,
                )
            )
        for start in range(0, len(items), s.batch_size):
            batch = items[start : start + s.batch_size]
            begin = time.perf_counter()
            collate(batch)
            times["masks, normalise, pad: collate"].extend([(time.perf_counter() - begin) / len(batch)] * len(batch))
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def comparison_stages(name: str, root: Path, s: DataSettings, repeats: int) -> dict[str, float]:
    """Median ms per image of decode, augmentation, and targets + normalise + collate of a comparison pipeline."""
    loader = LOADERS[name](root, s, 0)
    files, transform = loader.dataset, loader.dataset.transform
    times = defaultdict(list)
    for _ in range(repeats):
        outputs = []
        for index in range(len(files)):
            files.transform = lambda image, labels: (image, labels)
            image, labels = _timed(times, "decode JPEG + PNG, label reduction", files.__getitem__, index)
            files.transform = transform
            if name == "albumentations":  # augmentation and the processor per item, as the example does
                outputs.append(
                    _timed(times, "augment + masks, normalise (processor, per item)", transform, image, labels)
                )
            else:
                outputs.append(_timed(times, "augment", transform, image, labels))
        for start in range(0, len(outputs), s.batch_size):
            batch = outputs[start : start + s.batch_size]
            begin = time.perf_counter()
            loader.collate_fn(batch)
            label = "stack: collate" if name == "albumentations" else "masks, normalise, pad (processor): collate"
            times[label].extend([(time.perf_counter() - begin) / len(batch)] * len(batch))
    return {stage: 1000 * statistics.median(values) for stage, values in times.items()}


# ----- the section -----


def cpu_flags() -> dict:
    """lscpu's model name and whether the vector/matrix flags that matter here are present."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {
        "model_name": model,
        **{flag: flag in flags for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile")},
    }


def bench_data_pipeline(s: DataSettings = FULL_DATA, root: Path | None = None) -> dict:
    """The section's figures (see the module docstring). One torch and OpenCV thread for the per-core figures;
    the worker counts then use DataLoader's default of one torch thread per worker."""
    import cv2

    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="maskformer-data-") as workdir:
            root = root or write_ade_folder(Path(workdir), s.num_images, s.image_size)
            return _measure(root, s)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)


def _measure(root: Path, s: DataSettings) -> dict:
    pipelines = available_pipelines()
    result = {
        "settings": {**s.__dict__},
        "machine": {**cpu_flags(), "load_average_at_start": os.getloadavg()},
        "pipelines": list(pipelines),
        "missing": sorted(set(LOADERS) - set(pipelines)),
    }
    files = sorted((root / "images" / "training").glob("*.jpg"))
    result["file_kb"] = {
        "jpeg": statistics.mean(p.stat().st_size for p in files) / 1024,
        "png": statistics.mean((root / "annotations" / "training" / f"{p.stem}.png").stat().st_size for p in files)
        / 1024,
    }
    loaders = {name: factory(root, s, 0) for name, factory in pipelines.items()}
    shapes = {}
    for name, loader in loaders.items():  # warm-up pass (imports, caches), and the batch shapes
        shapes[name] = images_per_second(loader)[1]
    rates = {name: [] for name in loaders}
    for _ in range(s.repeats):  # interleaved: load from other processes hits every pipeline alike
        for name, loader in loaders.items():
            rates[name].append(images_per_second(loader)[0])
    per_core = {name: statistics.median(values) for name, values in rates.items()}
    result["per_core_images_per_second"] = per_core
    result["per_core_runs"] = rates
    result["batch_shapes"] = {name: [list(shape) for shape in sorted(set(value))] for name, value in shapes.items()}
    result["ratios"] = {name: per_core["ours"] / per_core[name] for name in per_core if name != "ours"}
    # NOTE: each repeat times the pipelines back to back, so its ratio sees about the same load from other processes
    result["paired_ratios"] = {
        name: sorted(o / t for o, t in zip(rates["ours"], rates[name])) for name in rates if name != "ours"
    }

    workers = {name: {} for name in loaders}
    for count in s.worker_counts:
        for name in loaders:
            loader = pipelines[name](root, s, count, passes=s.worker_passes)
            workers[name][count] = images_per_second(loader)[0]
    result["workers_images_per_second"] = workers
    one_worker = {name: w.get(1, per_core[name]) for name, w in workers.items()}
    result["workers_needed"] = {
        name: {target: math.ceil(target / min(per_core[name], one_worker[name])) for target in FEED_TARGETS}
        for name in loaders
    }
    stage_repeats = max(1, min(s.repeats, 3))
    result["stages_ms"] = {"ours": ours_stages(root, s, stage_repeats)}
    for name in loaders:
        if name != "ours":
            result["stages_ms"][name] = comparison_stages(name, root, s, stage_repeats)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    return result


def print_data_pipeline(section: dict) -> None:
    machine, s = section["machine"], section["settings"]
    flags = ", ".join(f"{k} {'yes' if machine[k] else 'no'}" for k in ("avx2", "avx512f", "avx512_bf16", "amx_tile"))
    print(
        f"\ndata section: {machine['model_name']} ({flags}); load average {machine['load_average_at_start']} -> "
        f"{machine['load_average_at_end']}"
    )
    print(
        f"  {s['num_images']} files {s['image_size'][0]}x{s['image_size'][1]} (JPEG {section['file_kb']['jpeg']:.0f} kB, "
        f"PNG {section['file_kb']['png']:.0f} kB), crop {s['crop_size']}, scale {s['min_scale']}-{s['max_scale']}, "
        f"batch {s['batch_size']}; missing: {', '.join(section['missing']) or 'none'}"
    )
    workers = section["workers_images_per_second"]
    counts = sorted({c for w in workers.values() for c in w})
    print(
        f"\n{'pipeline':<16} {'img/s/core':>10} {'ours x':>7} "
        + " ".join(f"{f'w={c}':>7}" for c in counts)
        + " "
        + " ".join(f"{f'for {t}/s':>9}" for t in FEED_TARGETS)
    )
    for name, rate in section["per_core_images_per_second"].items():
        ratio = section["ratios"].get(name)
        print(
            f"{name:<16} {rate:>10.1f} {'' if ratio is None else f'{ratio:.2f}':>7} "
            + " ".join(f"{workers[name][c]:>7.1f}" for c in counts)
            + " "
            + " ".join(f"{section['workers_needed'][name][t]:>9}" for t in FEED_TARGETS)
        )
    for name, ratio in section["ratios"].items():
        paired = section["paired_ratios"][name]
        print(
            f"  ours / {name} per core: {ratio:.2f} (target >= {TARGET_RATIO}: {'PASS' if ratio >= TARGET_RATIO else 'MISS'}); "
            f"repeat by repeat {paired[0]:.2f}-{paired[-1]:.2f}, median {statistics.median(paired):.2f}"
        )
    for name, stages in section["stages_ms"].items():
        print(f"\n  {name}: ms per image, total {sum(stages.values()):.1f}")
        for stage, ms in stages.items():
            print(f"    {stage:<50} {ms:>6.2f}")
