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
import time
from types import SimpleNamespace

import torch

from modeling_maskformer.benchmarks.common import agreement, random_outputs
from modeling_maskformer.cli import run_cli
from modeling_maskformer.image_processing import post_processing as pp

PADDED, TARGET = (512, 512), (512, 683)


def _best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


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
            same = agreement(ours(), reference())
            print(
                f"{kind:<10} {task:<9} {theirs_ms:>15.1f} {ours_ms:>8.1f} {theirs_ms / ours_ms:>8.1f}x {same:>12.6f}"
            )
        # Without padding and without a final resize, transformers' semantic map is the same algorithm.
        theirs = processor.post_process_semantic_segmentation(outputs, target_sizes=[PADDED])[0]
        ours = pp.semantic_segmentation(class_logits, mask_logits, padded_size=PADDED)[0]
        print(
            f"{kind:<10} semantic at the input size: {agreement(ours, theirs):.6f} identical to transformers"
        )


if __name__ == "__main__":
    run_cli(main)
