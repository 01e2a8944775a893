"""Semantic mask exports written the way the labelling tool writes them (for tests/test_data_masks.py and
tests/test_held_out_splits.py).

- `write_cvat_export`: CVAT's "Segmentation mask 1.1" export (Datumaro's voc_segmentation writer), from synthetic
  scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from modeling_maskformer.data.palette import voc_colormap

# CVAT task labels with their colours (CVAT picks arbitrary colours); its export adds "background" (black) and
# sorts the labels by name.
CVAT_COLOURS = {
    "circle": (250, 50, 83),
    "square": (52, 209, 183),
    "triangle": (255, 204, 51),
    "star": (131, 224, 112),
    "ellipse": (61, 61, 245),
    "hexagon": (184, 61, 245),
    "sky": (51, 221, 255),
    "grass": (42, 125, 209),
    "sand": (255, 106, 77),
}


def _instance_colours(item) -> np.ndarray:
    """SegmentationObject as Datumaro writes it: instance k (1..N, in segment order) in VOC's colour k, 0 black."""
    ids = np.zeros(item["semantic"].shape, dtype=np.int64)
    panoptic = item["panoptic"].astype(np.int64)
    panoptic = panoptic[..., 0] + 256 * panoptic[..., 1] + 65536 * panoptic[..., 2]
    for number, segment in enumerate(item["segments_info"], start=1):
        ids[panoptic == segment["id"]] = number
    return voc_colormap(256)[ids]


VOC_FOLDERS = (
    "Annotations",
    "ImageSets/Segmentation",
    "JPEGImages",
    "SegmentationClass",
    "SegmentationObject",
)


def make_voc_folders(root: Path) -> None:
    """The folders of the VOC layout (VOC 2012 and the exports that copy it)."""
    for folder in VOC_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)


def write_cvat_export(root: Path, shapes, subsets: dict[str, str]) -> dict[str, np.ndarray]:
    """A CVAT "Segmentation mask 1.1" export with "Save images" ticked (Datumaro's voc_segmentation writer):
    labelmap.txt, ImageSets/Segmentation/<subset>.txt, JPEGImages/, SegmentationClass/ and SegmentationObject/ as
    RGB PNGs, an empty Annotations/. ``subsets``: CVAT subset name -> the synthetic split to fill it with. The first
    row of every mask is left unannotated (CVAT paints it with background's colour). Returns the class-id maps the
    loader must give, by item id."""
    names = sorted(["background", *CVAT_COLOURS])
    colours = {"background": (0, 0, 0), **CVAT_COLOURS}
    make_voc_folders(root)
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{','.join(map(str, colours[n]))}::" for n in names]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    expected = {}
    for subset, split in subsets.items():
        ids = []
        for item in (shapes[split][i] for i in range(len(shapes[split]))):
            item_id = f"{subset}_{item['image_id']}"
            truth = np.array([names.index(shapes[split].id2label[c]) for c in range(9)])[item["semantic"]]
            truth[0] = 0
            rgb = np.array([colours[n] for n in names], dtype=np.uint8)[truth]
            item["image"].save(root / "JPEGImages" / f"{item_id}.jpg", quality=95)
            Image.fromarray(rgb).save(root / "SegmentationClass" / f"{item_id}.png")
            Image.fromarray(_instance_colours(item)).save(root / "SegmentationObject" / f"{item_id}.png")
            ids.append(item_id)
            expected[item_id] = truth
        (root / "ImageSets" / "Segmentation" / f"{subset}.txt").write_text("\n".join(ids) + "\n")
    return expected
