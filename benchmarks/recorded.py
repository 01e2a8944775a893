"""Recorded outputs of a model trained by this project, for post-processing benchmarks and tests.

`make demo` trains a small MaskFormer on the built-in synthetic shapes (9 classes, 20 queries). Its class and
mask logits on held-out synthetic scenes are stored in `tests/fixtures/demo_outputs.safetensors` (float16, ~0.8 MB), so
that post-processing is measured and checked on what a trained model really outputs, not only on crafted or
random logits. Three sets:

- "demo_128": 4 scenes at 128 px, the training resolution (no padding);
- "demo_384": 1 scene at 384 px;
- "demo_mixed": 3 scenes of different sizes in one padded batch (a `pixel_mask` marks the padding).

Each set holds `class_queries_logits` (B, Q, K + 1), `masks_queries_logits` (B, Q, H/4, W/4), `pixel_mask`
(B, H, W; stored as the valid sizes) and `target_sizes` (B, 2), the scenes' sizes. `record_demo_outputs(model_dir)` re-creates the file from a demo folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RECORDED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "demo_outputs.safetensors"
SETS = ("demo_128", "demo_384", "demo_mixed")
_MIXED_SIZES = ((160, 160), (128, 192), (192, 96))


def load_recorded(name: str, path: str | Path = RECORDED) -> dict[str, torch.Tensor]:
    """One recorded set as float32 logits, the pixel mask and the target sizes."""
    if name not in SETS:
        raise ValueError(f"unknown recorded set {name!r}: one of {SETS}")
    tensors = load_file(str(path))
    mask_logits = tensors[f"{name}.masks_queries_logits"].float()
    pixel_mask = torch.zeros(len(mask_logits), 4 * mask_logits.shape[-2], 4 * mask_logits.shape[-1], dtype=torch.long)
    for image, (height, width) in zip(pixel_mask, tensors[f"{name}.valid_sizes"].tolist()):
        image[:height, :width] = 1
    return {
        "class_queries_logits": tensors[f"{name}.class_queries_logits"].float(),
        "masks_queries_logits": mask_logits,
        "pixel_mask": pixel_mask,
        "target_sizes": tensors[f"{name}.target_sizes"].long(),
    }


def record_demo_outputs(model_dir: str | Path, path: str | Path = RECORDED) -> Path:
    """Run the model in `model_dir` (a `make demo` folder) on held-out synthetic scenes and store the sets."""
    from modeling_maskformer.data import SyntheticShapesConfig, build_dataset
    from modeling_maskformer.image_processing import MaskFormerImageProcessor
    from modeling_maskformer.modeling_maskformer import MaskFormerForInstanceSegmentation

    model = MaskFormerForInstanceSegmentation.from_pretrained(model_dir).eval()
    processor = MaskFormerImageProcessor.from_pretrained(model_dir)
    config = SyntheticShapesConfig(thing_colours="by_class")
    tensors = {}
    for name, size, count in (("demo_128", 128, 4), ("demo_384", 384, 1), ("demo_mixed", 192, 3)):
        dataset = build_dataset("synthetic", "validation", num_images=count, image_size=size, config=config)
        images = [dataset[i]["image"] for i in range(count)]
        if name == "demo_mixed":  # crops of different sizes of larger scenes
            images = [image.crop((0, 0, w, h)) for image, (h, w) in zip(images, _MIXED_SIZES)]
        inputs = processor(images, do_resize=False, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        tensors[f"{name}.class_queries_logits"] = outputs.class_queries_logits.half().contiguous()
        tensors[f"{name}.masks_queries_logits"] = outputs.masks_queries_logits.half().contiguous()
        real = inputs["pixel_mask"].bool()
        tensors[f"{name}.valid_sizes"] = torch.stack([real.any(2).sum(1), real.any(1).sum(1)], 1)
        tensors[f"{name}.target_sizes"] = torch.tensor([[im.height, im.width] for im in images])
    metadata = {"model": str(model_dir), "num_labels": str(model.config.num_labels)}
    history = Path(model_dir) / "demo_eval.json"
    if history.is_file():
        results = json.loads(history.read_text())
        metadata["held_out_mean_iou"] = str(results.get("semantic", {}).get("mean_iou"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
