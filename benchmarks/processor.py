"""Image processor section: two images with semantic maps through each processor."""

from __future__ import annotations

import transformers

from benchmarks.common import Settings, median_times, processor_settings, scene_image, semantic_map
from modeling_maskformer.image_processing import MaskFormerImageProcessor


def bench_image_processor(settings: Settings) -> dict:
    images = [scene_image(*settings.original, seed=10 + i) for i in range(2)]
    maps = [semantic_map(*settings.original, settings.num_segments, seed=20 + i) for i in range(2)]
    processors = {
        "transformers": transformers.MaskFormerImageProcessor(**processor_settings(settings)),
        "ours": MaskFormerImageProcessor(**processor_settings(settings)),
    }
    functions = {
        name: (lambda p=p: p(images, segmentation_maps=maps, return_tensors="pt")) for name, p in processors.items()
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
