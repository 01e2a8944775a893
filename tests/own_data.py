"""A small dataset as a user has it: a folder of JPEG photos and PNG label maps whose pixel values are the class
ids (`--label_convention as_is`), with its own classes, made from the synthetic scenes. Used by the journey tests
and by docs/training.md's measured fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Our classes, and the synthetic classes (circle, square, triangle, star, ellipse, hexagon, sky, grass, sand)
# each one gathers.
OWN_CLASSES = {0: "sky", 1: "ground", 2: "round", 3: "angular"}
_FROM_SYNTHETIC = np.array([2, 3, 3, 3, 2, 3, 0, 1, 1] + [255] * 247, dtype=np.uint8)


def write_own_dataset(root: Path, num_train: int = 32, num_val: int = 8, image_size: int = 160, seed: int = 7) -> Path:
    """`root/images/{training,validation}/*.jpg` + `root/annotations/{...}/*.png` (0..3, as they are) + `id2label.json`."""
    from modeling_maskformer.data import SyntheticShapes, SyntheticShapesConfig

    config = SyntheticShapesConfig(thing_colours="by_class")
    for split, folder, count in (("train", "training", num_train), ("validation", "validation", num_val)):
        shapes = SyntheticShapes(split, count, image_size, seed, config=config)
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            item = shapes[index]
            name = f"photo_{split}_{index:03d}"
            item["image"].save(root / "images" / folder / f"{name}.jpg", quality=90)
            Image.fromarray(_FROM_SYNTHETIC[item["semantic"]]).save(root / "annotations" / folder / f"{name}.png")
    (root / "id2label.json").write_text(json.dumps({str(k): v for k, v in OWN_CLASSES.items()}))
    return root
