"""Segment images and write overlays (with legends) and a JSON of the segments.

    python scripts/predict.py photo1.jpg photo2.png --model outputs/demo --task panoptic --out predictions/
    python scripts/predict.py scene.jpg --model exported/demo-onnx --task semantic --out predictions/   # exported

Per image: `<name>_<task>.png` (overlay + legend) and one `predictions.json` with, per image, its segments
(id, label, score, area in pixels and as a fraction).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from modeling_maskformer.app import TASKS, load_model
from modeling_maskformer.cli import run_cli
from modeling_maskformer.visualization import draw


def segments_of(result, task: str, id2label: dict[int, str]) -> list[dict]:
    if task == "semantic":
        ids, counts = torch.unique(result, return_counts=True)
        pairs = [(int(i), None, int(c)) for i, c in zip(ids, counts)]
        total = result.numel()
    else:
        segmentation = result["segmentation"]
        total = segmentation.numel()
        pairs = [
            (s["label_id"], float(s["score"]), int((segmentation == s["id"]).sum()))
            for s in result["segments_info"]
        ]
    return [
        {"id": index, "label_id": label, "label": id2label.get(label, str(label)), "score": score, "area": area,
         "area_fraction": area / total}
        for index, (label, score, area) in enumerate(pairs)
    ]  # fmt: skip


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", required=True, help="our model folder / Hub id, or an exported folder")
    parser.add_argument("--task", choices=TASKS, default="panoptic")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold (instance, panoptic)")
    parser.add_argument("--mask_threshold", type=float, default=0.5)
    parser.add_argument("--overlap_threshold", type=float, default=0.8)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="for exported folders")
    args = parser.parse_args(argv)
    model, processor = load_model(args.model, precision=args.precision)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for path in map(Path, args.images):
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, ValueError) as error:
            raise SystemExit(f"{path}: cannot read it as an image ({error})") from None
        size = [(image.height, image.width)]
        outputs = model(**processor(image, return_tensors="pt"))
        if args.task == "semantic":
            result = processor.post_process_semantic_segmentation(outputs, target_sizes=size)[0]
        else:
            post = getattr(processor, f"post_process_{args.task}_segmentation")
            result = post(outputs, threshold=args.threshold, mask_threshold=args.mask_threshold,
                          overlap_mask_area_threshold=args.overlap_threshold, target_sizes=size)[0]  # fmt: skip
        picture = out / f"{path.stem}_{args.task}.png"
        draw(image, result, id2label, task=args.task).save(picture)
        report[str(path)] = {
            "overlay": str(picture),
            "task": args.task,
            "segments": segments_of(result, args.task, id2label),
        }
        print(f"{path} -> {picture} ({len(report[str(path)]['segments'])} segments)")
    (out / "predictions.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run_cli(main)
