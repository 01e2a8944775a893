"""`make demo`: train a small MaskFormer on the built-in synthetic shapes on CPU, evaluate it on the held-out
split (mIoU, PQ), write a Hub-ready folder and a PNG grid (image | ground truth | prediction).

No network needed. About 12 minutes on 2 CPU cores; `--minutes` changes the training budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from modeling_maskformer.cli import run_cli
from modeling_maskformer.data import SyntheticShapesConfig, build_dataset
from modeling_maskformer.data.labels import segment
from modeling_maskformer.evaluation import evaluate_model, format_table, summary
from modeling_maskformer.inference.visualization import draw, grid
from modeling_maskformer.training import train

NEXT_STEPS = """
Same script, real data (network and, ideally, GPUs):
  # ADE20K-150 semantic, Swin-T (paper: 46.7 mIoU single-scale), 8 GPUs x 2 images, 160k iterations
  python scripts/prepare_data.py ade20k --root data     # 967 MB download -> data/ADEChallengeData2016
  accelerate launch --num_processes 8 scripts/train_maskformer.py --dataset data/ADEChallengeData2016 \\
      --label_convention ade --model_preset swin-tiny --crop_size 512 --per_device_train_batch_size 2 \\
      --max_train_steps 160000 --mixed_precision bf16 --output_dir outputs/ade-swin-tiny --report_to tensorboard
  # COCO panoptic, R50: annotations + train2017 + val2017 (about 21 GB of archives) -> data/coco
  python scripts/prepare_data.py coco_panoptic --root data
  accelerate launch --num_processes 8 scripts/train_maskformer.py --dataset data/coco --model_preset resnet50 \\
      --crop_size 640 --max_train_steps 554000 --output_dir outputs/coco-r50
  # evaluate any folder (ours or transformers'):
  python scripts/evaluate_maskformer.py --model outputs/ade-swin-tiny --dataset data/ADEChallengeData2016 \\
      --label_convention ade --output_json ade.json
"""


def write_grid(model, processor, dataset, path: Path, count: int = 4) -> None:
    """Rows: validation images; columns: image, ground truth, semantic and panoptic predictions, each with
    its legend (`modeling_maskformer.inference.visualization.draw`)."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    model.eval()
    with torch.no_grad():
        outputs = model(**processor([item["image"] for item in items], return_tensors="pt"))
    sizes = [(item["image"].height, item["image"].width) for item in items]
    semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    panoptic = segment(
        processor, outputs, "panoptic", thing_ids=model.config.thing_ids, target_sizes=sizes
    )  # stuff fused
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    rows = []
    for item, semantic_map, panoptic_result in zip(items, semantic, panoptic):
        image = item["image"].convert("RGB")
        scale = max(1, -(-256 // min(image.size)))  # draw() enlarges small pictures to 256 px the same way
        rows.append(
            [
                image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR),
                draw(
                    image,
                    item["semantic"].astype(np.int64),
                    id2label,
                    task="semantic",
                    ignore_index=dataset.ignore_index,
                ),
                draw(image, semantic_map, id2label, task="semantic"),
                draw(image, panoptic_result, id2label, task="panoptic"),
            ]
        )
    titles = ["image", "ground truth", "prediction (semantic)", "prediction (panoptic, scores)"]
    grid(rows, titles=titles).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--minutes", type=float, default=11.0, help="training time budget")
    parser.add_argument("--max_train_steps", type=int, default=2600, help="the LR schedule's length")
    args = parser.parse_args()
    output_dir = Path(args.output_dir)
    train(
        [
            "--dataset",
            "synthetic",
            "--synthetic_thing_colours",
            "by_class",
            "--model_preset",
            "demo",
            "--output_dir",
            str(output_dir),
            "--num_train_images",
            "4000",
            "--num_eval_images",
            "200",
            "--crop_size",
            "128",
            "--min_scale",
            "0.75",
            "--max_scale",
            "1.5",
            "--per_device_train_batch_size",
            "8",
            # The recipe is the library's choice for a backbone that starts from random weights ('scratch').
            "--max_train_steps",
            str(args.max_train_steps),
            "--max_train_seconds",
            str(args.minutes * 60),
            "--eval_steps",
            "500",
            "--max_eval_items",
            "100",
            "--checkpointing_steps",
            "1000",
            "--logging_steps",
            "50",
        ]
    )

    history = json.loads((output_dir / "training_history.json").read_text())
    print("\nLearning curve on the first 100 validation scenes:\n  step   loss   mIoU     PQ")
    for entry in (e for e in history if "eval" in e):
        print(f"{entry['step']:>6}  {entry['loss']:.3f}  {entry['eval']['mean_iou']:.3f}  {entry['eval']['pq']:.3f}")

    model = MaskFormerForInstanceSegmentation.from_pretrained(output_dir)
    processor = MaskFormerImageProcessor.from_pretrained(output_dir)
    dataset = build_dataset(
        "synthetic",
        "validation",
        num_images=200,
        image_size=128,
        config=SyntheticShapesConfig(thing_colours="by_class"),
    )
    results = evaluate_model(model, processor, dataset, batch_size=8)
    (output_dir / "demo_eval.json").write_text(json.dumps(results, indent=2))
    write_grid(model, processor, dataset, output_dir / "demo_predictions.png")
    print(format_table(results["semantic"]))
    print(format_table(results["panoptic"]))
    headline = summary(results)
    print(
        f"\nHeld-out synthetic validation (200 scenes): mIoU {headline['mean_iou']:.3f}, PQ {headline['pq']:.3f} "
        f"(PQ things {headline['pq_things']:.3f}, stuff {headline['pq_stuff']:.3f}), mask AP {headline['mask_ap']:.3f}"
    )
    print(f"Hub-ready folder: {output_dir}/ (model, processor, README.md model card)")
    print(f"Prediction grid (image | ground truth | semantic | panoptic): {output_dir / 'demo_predictions.png'}")
    print(NEXT_STEPS)


if __name__ == "__main__":
    run_cli(main)
