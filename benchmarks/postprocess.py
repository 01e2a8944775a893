"""Post-processing section: ours vs transformers' `post_process_*` on identical model outputs, in several regimes,
with the share of pixels equal to the authors' algorithm.

Regimes (each a batch of model outputs with the geometry a processor gives them):
- "random-init": the randomly initialised ADE20K-shaped model of the forward section on a 512x683 scene
  (512x704 padded input): near-uniform class probabilities, what fine-tuning starts from;
- "trained-128", "trained-384", "trained-mixed": outputs of the `make demo` model on held-out synthetic scenes,
  recorded in `recorded.py` (4 scenes at 128 px, 1 at 384 px, and 3 of different sizes in one padded batch);
- "crafted": a confident ADE20K-like model crafted from a label map (20 segments, 512x683 in 512x704);
- "trained-mixed, loaded": the mixed batch again while another process keeps one core busy.

The original algorithm is tests/reference_inference.py, a literal transcription of the authors' inference; it
is loaded from the repository when the benchmark runs from a checkout (agreement figures are omitted otherwise).
transformers gets the same outputs without a pixel mask (its processor has no notion of padding) and the same
target sizes; its maps are compared with the original too, for information. Ours is timed with the default
`method="auto"` ("ours") and with each evaluation forced ("ours_dense", "ours_bounded").
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers

from benchmarks.common import Settings, agreement, crafted_outputs, label_map, median_times, processor_settings
from benchmarks.recorded import load_recorded
from modeling_maskformer.image_processing import MaskFormerImageProcessor

TASKS = {
    "semantic": ("post_process_semantic_segmentation", {}),
    "instance": ("post_process_instance_segmentation", {}),
    "panoptic": ("post_process_panoptic_segmentation", {"label_ids_to_fuse": set()}),
}


def original_algorithm():
    """tests/reference_inference.py of this checkout (benchmarks/ lies beside tests/), or None."""
    path = Path(__file__).resolve().parents[1] / "tests" / "reference_inference.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("reference_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def maps_of(results: list) -> list[torch.Tensor]:
    return [r if isinstance(r, torch.Tensor) else r["segmentation"] for r in results]


def geometry_of(pixel_mask: torch.Tensor, target_sizes) -> dict:
    real = pixel_mask.bool()
    return {
        "padded_size": tuple(real.shape[-2:]),
        "valid_sizes": torch.stack([real.any(2).sum(1), real.any(1).sum(1)], 1).tolist(),
        "target_sizes": [tuple(size) for size in target_sizes],
    }


def crafted_regime(settings: Settings) -> dict:
    """Crafted confident outputs at the realistic geometry: original -> resized valid content, padded input."""
    processor = MaskFormerImageProcessor(**processor_settings(settings))
    valid = processor.get_resize_output_size(*settings.original)
    divisor = processor.size_divisor
    padded = (math.ceil(valid[0] / divisor) * divisor, math.ceil(valid[1] / divisor) * divisor)
    segments, classes = label_map(*settings.original, settings.num_segments, seed=1)
    class_logits, mask_logits = crafted_outputs(segments, classes, valid, padded, seed=2)
    pixel_mask = torch.zeros(1, *padded, dtype=torch.long)
    pixel_mask[:, : valid[0], : valid[1]] = 1
    return {
        "class_queries_logits": class_logits,
        "masks_queries_logits": mask_logits,
        "pixel_mask": pixel_mask,
        "target_sizes": [settings.original],
    }


def regimes(settings: Settings, random_init: dict | None) -> dict[str, dict]:
    out = {}
    if random_init is not None:
        out["random-init"] = random_init
    for name in ("trained-128", "trained-384", "trained-mixed"):
        recorded = load_recorded("demo_" + name.split("-")[1])
        recorded["target_sizes"] = [tuple(size) for size in recorded["target_sizes"].tolist()]
        out[name] = recorded
    out["crafted"] = crafted_regime(settings)
    return out


@contextlib.contextmanager
def busy_core():
    """Another process spinning on a core while the block runs (the benchmark machine under load)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def bench_regime(outputs: dict, settings: Settings, original) -> dict:
    ours_in = SimpleNamespace(
        **{k: outputs[k] for k in ("class_queries_logits", "masks_queries_logits", "pixel_mask")}
    )
    theirs_in = SimpleNamespace(
        class_queries_logits=outputs["class_queries_logits"],
        masks_queries_logits=outputs["masks_queries_logits"],
    )
    targets = outputs["target_sizes"]
    processors = {"transformers": transformers.MaskFormerImageProcessor(), "ours": MaskFormerImageProcessor()}
    inputs = {"transformers": theirs_in, "ours": ours_in}
    geometry = geometry_of(outputs["pixel_mask"], targets)
    result = {"images": len(targets), "target_sizes": [list(t) for t in targets]}
    for task, (method, extra) in TASKS.items():
        calls = {
            name: functools.partial(getattr(processor, method), inputs[name], target_sizes=targets, **extra)
            for name, processor in processors.items()
        }
        for forced in ("dense", "bounded"):  # ours with each evaluation forced ("ours" is method="auto")
            calls[f"ours_{forced}"] = functools.partial(calls["ours"], method=forced)
        entry = {"seconds": median_times(calls, settings.post_repeats, settings.warmup)}
        if original is not None:
            expected = maps_of(
                getattr(original, task)(
                    outputs["class_queries_logits"], outputs["masks_queries_logits"], **geometry, **extra
                )
            )
            for name, call in calls.items():
                entry[f"{name}_agreement_with_original"] = min(
                    agreement(a, b) for a, b in zip(maps_of(call()), expected)
                )
        result[task] = entry
    return result


def bench_post_processing(settings: Settings, random_init: dict | None = None) -> dict:
    """Every regime; `random_init`: outputs of a randomly initialised model (with pixel_mask, target_sizes)."""
    original = original_algorithm()
    results = {"original_algorithm_available": original is not None}
    all_regimes = regimes(settings, random_init)
    for name, outputs in all_regimes.items():
        results[name] = bench_regime(outputs, settings, original)
    with busy_core():
        results["trained-mixed, loaded"] = bench_regime(all_regimes["trained-mixed"], settings, None)
    return results


def random_init_outputs(model, image, processor) -> dict:
    """A model's outputs on one image through its processor, as a regime (model in eval mode)."""
    inputs = processor(image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return {
        "class_queries_logits": outputs.class_queries_logits,
        "masks_queries_logits": outputs.masks_queries_logits,
        "pixel_mask": inputs["pixel_mask"],
        "target_sizes": [(image.height, image.width)],
    }
