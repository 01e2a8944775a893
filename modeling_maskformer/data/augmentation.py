"""The paper's training augmentation and the training set that applies it deterministically per item."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .dataset import to_instance_targets


class Augmentation:
    """The paper's training augmentation (torchvision.transforms.v2 moves masks with the image): short side
    resized to a random 0.5-2.0x the crop size, random crop (retried so that no class covers more than
    `single_category_max_area` of it), horizontal flip, photometric distortion. Padding to the crop size
    happens in the image processor (masks padded with 0, i.e. no target)."""

    def __init__(self, crop_size: int, min_scale: float, max_scale: float, single_category_max_area: float):
        self.crop_size = crop_size
        self.single_category_max_area = single_category_max_area
        self.resize = v2.RandomResize(int(min_scale * crop_size), int(max_scale * crop_size) + 1, antialias=True)
        self.flip_and_colour = v2.Compose([
            v2.RandomHorizontalFlip(),
            # brightness +-32/255, contrast and saturation 0.5-1.5, hue +-18 (OpenCV units: 0.1 turn)
            v2.RandomPhotometricDistort(brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                                        hue=(-0.1, 0.1), p=0.5),
        ])  # fmt: skip

    def crop_box(self, semantic: torch.Tensor, ignore_index: int) -> tuple[int, int, int, int]:
        height, width = semantic.shape
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)
        for _ in range(10):
            top = int(torch.randint(0, height - crop_h + 1, ()))
            left = int(torch.randint(0, width - crop_w + 1, ()))
            if self.single_category_max_area >= 1.0:
                break
            counts = torch.bincount(semantic[top : top + crop_h, left : left + crop_w].flatten().long())
            counts = counts[:ignore_index] if ignore_index < len(counts) else counts
            if len(counts) > 1 and counts.max() < self.single_category_max_area * counts.sum():
                break
        return top, left, crop_h, crop_w

    def __call__(self, image: torch.Tensor, instance_map: torch.Tensor, instance_to_class: dict[int, int],
                 ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        image, mask = self.resize(tv_tensors.Image(image), tv_tensors.Mask(instance_map))
        lookup = torch.full((int(mask.max()) + 1,), ignore_index, dtype=torch.int64)
        for instance, label in instance_to_class.items():
            if instance < len(lookup):
                lookup[instance] = label
        box = self.crop_box(lookup[mask.long()], ignore_index)
        image, mask = TF.crop(image, *box), TF.crop(mask, *box)
        image, mask = self.flip_and_colour(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class TrainingSet(torch.utils.data.Dataset):
    """Augmented items as (image uint8 (3, H, W), instance map (H, W), instance -> class). The augmentation
    of item i in epoch e depends only on (seed, e, i), so a resumed run sees exactly the same data."""

    def __init__(self, dataset, augmentation: Augmentation, seed: int):
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        instance_map, instance_to_class = to_instance_targets(item, self.dataset.ignore_index)
        image = torch.from_numpy(np.array(item["image"].convert("RGB"))).permute(2, 0, 1).contiguous()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            image, instance_map = self.augmentation(
                image, torch.from_numpy(instance_map.astype(np.int64)), instance_to_class, self.dataset.ignore_index
            )
        return image, instance_map, instance_to_class
