"""Datasets in one item format (ADE20K-style, COCO panoptic and VOC-layout folders (Pascal VOC, CVAT's
"Segmentation mask" export), COCO instance JSON as COCO, CVAT, Roboflow and Label Studio export it, Hugging Face
`datasets`, built-in synthetic shapes), the paper's training augmentation, the batch collator, and the data check
before training (`checks.check_dataset`).

    from modeling_maskformer.data import build_dataset, MaskFormerCollator

    dataset = build_dataset("synthetic", "train", num_images=100)  # or a folder, a COCO JSON, a datasets name/object

The real datasets (ADE20K-150, COCO panoptic, Cityscapes) are downloaded, verified and laid out by
`modeling_maskformer.data.prepare.prepare` (`scripts/prepare_data.py`); `build_dataset("ade20k")` then reads them.
"""

from .augmentation import Augmentation, TrainingSet
from .coco_instances import load_coco_instances, load_coco_instances_file, load_coco_instances_folder
from .collator import MaskFormerCollator
from .dataset import SegmentationDataset, SegmentationItem, to_instance_targets
from .loaders import (
    build_dataset,
    detect_folder_layout,
    load_ade_folder,
    load_coco_panoptic_folder,
    load_hf_dataset,
    load_synthetic,
)
from .palette import Palette, read_palette
from .synthetic import SyntheticShapes, SyntheticShapesConfig, id_to_rgb, rgb_to_id
from .voc import load_voc_folder

__all__ = [
    "Augmentation",
    "MaskFormerCollator",
    "Palette",
    "SegmentationDataset",
    "SegmentationItem",
    "SyntheticShapes",
    "SyntheticShapesConfig",
    "TrainingSet",
    "build_dataset",
    "detect_folder_layout",
    "id_to_rgb",
    "load_ade_folder",
    "load_coco_instances",
    "load_coco_instances_file",
    "load_coco_instances_folder",
    "load_coco_panoptic_folder",
    "load_hf_dataset",
    "load_synthetic",
    "load_voc_folder",
    "read_palette",
    "rgb_to_id",
    "to_instance_targets",
]
