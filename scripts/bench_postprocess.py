"""Time our post-processing against transformers 5.23's and check it against the literal algorithm.

ADE20K shapes: one image, Q=100 queries, K=150 classes, 128x128 mask logits from a 512x512 input,
resized to a 512x683 original. Two kinds of synthetic model output:
- "confident": 15 queries with a confident class own the cells of a random partition (sharp, smooth
  mask logits), the other queries say "no object" with smooth low masks (what a trained model gives);
- "noisy": 15 confident blobs on i.i.d. per-pixel mask noise (a stress case: the uncovered background
  has near-ties between many classes).
Prints milliseconds (best of --repeats), the speed-up over transformers and the share of pixels
identical to the `_reference_*` implementations (and to transformers where it runs the same algorithm).

    python scripts/bench_postprocess.py [--repeats 10] [--threads 2]

NOTE: with 2 threads on a machine whose other core is busy, every multi-threaded torch operation
can stall for a scheduler slice, and both implementations slow down erratically (ours more: it runs
more, smaller operations). Compare with --threads 1 when the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_maskformer.image_processing import post_processing as pp  # noqa: E402

PADDED, TARGET = (512, 512), (512, 683)


def _smooth_noise(shape: tuple[int, ...], cell: int, generator: torch.Generator) -> torch.Tensor:
    """Unit-variance-ish noise varying over `cell` pixels: coarse Gaussian noise upsampled bilinearly."""
    *lead, h, w = shape
    coarse = torch.randn(*lead, h // cell + 2, w // cell + 2, generator=generator)
    return F.interpolate(coarse.flatten(0, -3)[:, None], size=(h, w), mode="bilinear")[:, 0].view(shape)


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
    """Synthetic (class_logits (B, Q, K+1), mask_logits (B, Q, h, w)) of a confident model."""
    g = torch.Generator().manual_seed(seed)
    (h, w), K = mask_size, num_classes
    class_logits = torch.randn(batch_size, num_queries, K + 1, generator=g)
    class_logits[..., K] += 6.0  # "no object" by default
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    if kind == "confident":
        mask_logits = _smooth_noise((batch_size, num_queries, h, w), 16, g) * 2 - 3
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
            logits = 0.5 * (nearest_other - distance) + _smooth_noise((num_objects, h, w), 8, g) * 0.5
        else:  # blobs on i.i.d. noise
            radius = (torch.rand(num_objects, 1, 1, generator=g) * 0.2 + 0.05) * h
            logits = 0.4 * (radius - distance) + torch.randn(num_objects, h, w, generator=g) * 0.3
        mask_logits[b, objects] = logits
    return class_logits, mask_logits


def _best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def _agreement(ours: torch.Tensor, other: torch.Tensor) -> float:
    return (ours.to(torch.int64) == other.to(torch.int64)).double().mean().item()


def _tasks(processor, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> dict:
    """Per task: (transformers, ours, literal reference), each a no-argument call returning a map."""
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
    kw = {"padded_size": PADDED, "target_sizes": [TARGET]}
    return {
        "semantic": (
            lambda: processor.post_process_semantic_segmentation(outputs, target_sizes=[TARGET]),
            lambda: pp.semantic_segmentation(class_logits, mask_logits, **kw)[0],
            lambda: pp._reference_semantic(class_logits, mask_logits, **kw)[0],
        ),
        "instance": (
            lambda: processor.post_process_instance_segmentation(outputs, target_sizes=[TARGET]),
            lambda: pp.instance_segmentation(class_logits, mask_logits, **kw)[0]["segmentation"],
            lambda: pp._reference_instance(class_logits, mask_logits, **kw)[0]["segmentation"],
        ),
        "panoptic": (
            lambda: processor.post_process_panoptic_segmentation(
                outputs, target_sizes=[TARGET], label_ids_to_fuse=set()
            ),
            lambda: pp.panoptic_segmentation(class_logits, mask_logits, **kw)[0]["segmentation"],
            lambda: pp._reference_panoptic(class_logits, mask_logits, **kw)[0]["segmentation"],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if args.threads > 1 and load > 0.5:
        print(f"warning: load average {load:.1f}, timings with {args.threads} threads are unreliable")

    import transformers
    from transformers import MaskFormerImageProcessor

    transformers.logging.set_verbosity_error()
    processor = MaskFormerImageProcessor()
    print(
        f"{'input':<10} {'task':<9} {'transformers ms':>15} {'ours ms':>8} {'speed-up':>9} {'= reference':>12}"
    )
    for kind in ("confident", "noisy"):
        class_logits, mask_logits = random_outputs(kind)
        outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
        tasks = _tasks(processor, class_logits, mask_logits)
        for task, (theirs, ours, reference) in tasks.items():
            theirs_ms, ours_ms = _best_ms(theirs, args.repeats), _best_ms(ours, args.repeats)
            same = _agreement(ours(), reference())
            print(
                f"{kind:<10} {task:<9} {theirs_ms:>15.1f} {ours_ms:>8.1f} {theirs_ms / ours_ms:>8.1f}x {same:>12.6f}"
            )
        # Without padding and without a final resize, transformers' semantic map is the same algorithm.
        theirs = processor.post_process_semantic_segmentation(outputs, target_sizes=[PADDED])[0]
        ours = pp.semantic_segmentation(class_logits, mask_logits, padded_size=PADDED)[0]
        print(
            f"{kind:<10} semantic at the input size: {_agreement(ours, theirs):.6f} identical to transformers"
        )


if __name__ == "__main__":
    main()
