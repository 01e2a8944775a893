"""The paper's training augmentation and the training set that applies it deterministically per item."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .dataset import instance_masks, to_instance_targets


@dataclass(frozen=True)
class PhotometricParams:
    """One draw of `PhotometricDistortion`: None = that step is skipped."""

    brightness: float | None  # added to every value
    contrast: float | None  # every value multiplied by it
    saturation: float | None  # HSV saturation multiplied by it
    hue: int | None  # added to OpenCV's 8-bit hue (0..179, half degrees), modulo 180
    contrast_first: bool  # contrast before saturation and hue, else after


class PhotometricDistortion:
    """The authors' photometric distortion (detectron2's `ColorAugSSDTransform`) on uint8 RGB (H, W, 3), each step with
    p=0.5, truncated to uint8 as the original. NOTE: not torchvision's `RandomPhotometricDistort`, which adds a channel
    permutation the recipe lacks; value-wise steps are composed 256-entry tables, HSV uses OpenCV as the original."""

    # The recipe's ranges (detectron2's defaults); hue in OpenCV's 8-bit units (half degrees).
    brightness_delta, contrast, saturation, hue_delta = 32, (0.5, 1.5), (0.5, 1.5), 18

    @staticmethod
    def _coin() -> bool:
        return bool(torch.rand(()) < 0.5)

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), dtype=torch.float64))

    def sample(self) -> PhotometricParams:
        brightness = self._uniform(-self.brightness_delta, self.brightness_delta) if self._coin() else None
        contrast_first = self._coin()
        contrast = self._uniform(*self.contrast) if self._coin() else None
        saturation = self._uniform(*self.saturation) if self._coin() else None
        hue = int(torch.randint(-self.hue_delta, self.hue_delta + 1, ())) if self._coin() else None
        return PhotometricParams(brightness, contrast, saturation, hue, contrast_first)

    @staticmethod
    def _table(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        # the original's convert(): float32 x alpha + beta, clipped, truncated to uint8
        return np.clip(np.arange(256, dtype=np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def apply(self, image: np.ndarray, params: PhotometricParams) -> np.ndarray:
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            raise ValueError(
                "PhotometricDistortion.apply takes a uint8 (H, W, 3) RGB numpy array, got "
                f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
            )
        tables = []  # value-wise steps waiting to be applied, composed into one table
        if params.brightness is not None:
            tables.append(self._table(beta=params.brightness))
        contrast = [self._table(alpha=params.contrast)] if params.contrast is not None else []
        if params.contrast_first:
            tables += contrast

        def flush(img: np.ndarray) -> np.ndarray:
            if not tables:
                return img
            table = tables[0]
            for later in tables[1:]:
                table = later[table]
            tables.clear()
            return cv2.LUT(img, table)

        saturation = None if params.saturation is None else self._table(alpha=params.saturation)
        hue = None if params.hue is None else ((np.arange(256) + params.hue) % 180).astype(np.uint8)
        for channel, table in ((1, saturation), (0, hue)):
            if table is None:
                continue
            image = flush(image)
            hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
            tables3 = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
            tables3[:, channel] = table
            image = cv2.cvtColor(cv2.LUT(hsv, tables3[:, None, :]), cv2.COLOR_HSV2RGB)
        if not params.contrast_first:
            tables += contrast
        return flush(image)


class Augmentation:
    """The paper's training augmentation: short side resized to 0.5-2.0x the crop size, random crop (retried so that no
    class covers more than `single_category_max_area`), horizontal flip, `PhotometricDistortion`."""

    def __init__(self, crop_size: int, min_scale: float, max_scale: float, single_category_max_area: float):
        self.crop_size = crop_size
        self.single_category_max_area = single_category_max_area
        self.resize = v2.RandomResize(int(min_scale * crop_size), int(max_scale * crop_size) + 1, antialias=True)
        self.flip = v2.RandomHorizontalFlip()
        self.photometric = PhotometricDistortion()

    def crop_box(self, mask: torch.Tensor, lookup: torch.Tensor, ignore_index: int) -> tuple[int, int, int, int]:
        height, width = mask.shape
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)
        for _ in range(10):
            top = int(torch.randint(0, height - crop_h + 1, ()))
            left = int(torch.randint(0, width - crop_w + 1, ()))
            if self.single_category_max_area >= 1.0:
                break
            window = lookup[mask[top : top + crop_h, left : left + crop_w].long()]
            counts = torch.bincount(window.flatten())
            counts = counts[:ignore_index] if ignore_index < len(counts) else counts
            if len(counts) > 1 and counts.max() < self.single_category_max_area * counts.sum():
                break
        return top, left, crop_h, crop_w

    def __call__(
        self, image: torch.Tensor, instance_map: torch.Tensor, instance_to_class: dict[int, int], ignore_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`image` uint8 (3, H, W) (channels-last memory is fastest), `instance_map` (H, W) -> both augmented."""
        # NOTE: uint8 masks resize natively (nearest), other dtypes go through float32 in torchvision.
        image, mask = self.resize(tv_tensors.Image(image), tv_tensors.Mask(instance_map))
        lookup = torch.full((int(mask.max()) + 1,), ignore_index, dtype=torch.int64)
        for instance, label in instance_to_class.items():
            if instance < len(lookup):
                lookup[instance] = label
        box = self.crop_box(mask, lookup, ignore_index)
        image, mask = self.flip(TF.crop(image, *box), TF.crop(mask, *box))
        return self._distort(image), mask.as_subclass(torch.Tensor).clone(memory_format=torch.contiguous_format)

    def _distort(self, image: tv_tensors.Image) -> torch.Tensor:
        pixels = np.ascontiguousarray(image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())  # (h, w, 3)
        distorted = self.photometric.apply(pixels, self.photometric.sample())
        distorted = distorted.copy() if distorted is pixels else distorted  # never a view into the resized image
        return torch.from_numpy(distorted).permute(2, 0, 1)

    def instances(
        self, image: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, ignore_index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`__call__`'s draws, in its order, for objects that may overlap: `masks` uint8 (N, H, W), `classes` (N,) ->
        (image, masks bool (n, h, w), classes (n,)) without the objects the crop leaves no pixel of."""
        image, mask = self.resize(tv_tensors.Image(image), tv_tensors.Mask(masks))  # (N, h, w) nearest, uint8
        mask = mask.as_subclass(torch.Tensor)
        # NOTE: the area rule reads a class map (where objects overlap, the later one's class counts); without the
        # rule `crop_box` reads only the size of the map it is given.
        class_map = torch.full(mask.shape[1:], ignore_index, dtype=torch.int64)
        if self.single_category_max_area < 1.0:
            for object_mask, label in zip(mask.bool(), classes.tolist()):
                class_map[object_mask] = label
        identity = torch.arange(max([ignore_index, *classes.tolist()]) + 1)
        box = self.crop_box(class_map, identity, ignore_index)
        image, mask = self.flip(TF.crop(image, *box), tv_tensors.Mask(TF.crop(mask, *box)))
        image, mask = self._distort(image), mask.as_subclass(torch.Tensor).bool()  # (N, h, w)
        kept = mask.flatten(1).any(1)
        return image, mask[kept].contiguous(), classes[kept]


class TrainingSet(torch.utils.data.Dataset):
    """Augmented items: (image uint8 (3, H, W), instance map (H, W) uint8 or int64, instance -> class), or for
    instance data (image, masks bool (N, H, W), classes (N,)). Item i of epoch e depends only on (seed, e, i), so a
    resumed run sees the same data."""

    def __init__(self, dataset, augmentation: Augmentation, seed: int):
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        ignore_index = self.dataset.ignore_index
        rgb = item["image"] if item["image"].mode == "RGB" else item["image"].convert("RGB")
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # (3, H, W), channels-last memory: no copy
        seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if item.get("instances") is not None:
                masks, classes = instance_masks(item)
                masks, classes = torch.from_numpy(masks.view(np.uint8)), torch.from_numpy(classes)
                return self.augmentation.instances(image, masks, classes, ignore_index)
            instance_map, instance_to_class = to_instance_targets(item, ignore_index, compact=True)
            instance_map = torch.from_numpy(
                instance_map if instance_map.dtype == np.uint8 else instance_map.astype(np.int64)
            )
            image, instance_map = self.augmentation(image, instance_map, instance_to_class, ignore_index)
        return image, instance_map, instance_to_class
