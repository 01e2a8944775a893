"""Datasets in one item format (ADE-style, COCO panoptic and VOC-layout folders, COCO instance JSON, `datasets`,
synthetic shapes), the paper's training augmentation, the batch collator and the data check before training.

    dataset = build_dataset("synthetic", "train", num_images=100)  # or a folder, a COCO JSON, a datasets name/object
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
