"""transformers' MaskFormerImageProcessor helpers that code written for it calls directly (`pad`, `resize`,
`rescale_and_normalize`, `reduce_label`, `convert_to_rgb`), and its RLE functions, with the same arguments and
results (transformers 5.24, `models/maskformer/image_processing_maskformer.py`). `preprocess` does not go
through them: it has its own fused path (`image_processing_maskformer.py`).

Shapes: B batch, C channels, N segments, (h, w) one image, (H, W) padded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as tvF
from transformers.image_utils import (
    ChannelDimension,
    get_image_size_for_max_height_width,
    pil_torch_interpolation_mapping,
)

from .validation import normalize_resample


def binary_mask_to_rle(mask: torch.Tensor | np.ndarray) -> list[int]:
    """COCO's uncompressed run-length encoding of a binary (h, w) mask, row-major as transformers' (pairs of
    start (1-based) and run length of the ones)."""
    pixels = torch.as_tensor(mask).flatten()
    zero = torch.zeros(1, dtype=pixels.dtype, device=pixels.device)
    pixels = torch.cat([zero, pixels, zero])
    runs = torch.where(pixels[1:] != pixels[:-1])[0] + 1  # positions where the value changes
    runs[1::2] -= runs[::2]
    return runs.tolist()


def convert_segmentation_to_rle(segmentation: torch.Tensor) -> list[list[int]]:
    """One RLE per segment id of an (h, w) id map, in increasing id order (transformers' layout: each id's
    `binary_mask_to_rle`).

    NOTE: in one pass over the map (its runs of equal ids, grouped by id), not one binary mask per id as
    transformers: a 12-MP map with 100 segments takes one pass instead of 100.
    """
    values = torch.as_tensor(segmentation).flatten()
    if not len(values):
        return []
    starts = torch.cat([values.new_zeros(1, dtype=torch.long), (values[1:] != values[:-1]).nonzero().squeeze(1) + 1])
    lengths = torch.diff(starts, append=starts.new_tensor([len(values)]))
    ids = values.index_select(0, starts)
    order = torch.argsort(ids, stable=True)  # runs grouped by id, in map order within an id
    _, counts = torch.unique_consecutive(ids.index_select(0, order), return_counts=True)
    pairs = torch.stack([starts.index_select(0, order) + 1, lengths.index_select(0, order)], 1)  # (runs, 2)
    return [group.flatten().tolist() for group in torch.split(pairs, counts.tolist())]


def check_transformers_kwargs(**given: Any) -> None:
    """transformers' `ImagesKwargs` that this processor has no use for: a value that would change the result
    raises (a documented difference), the harmless ones pass."""
    harmless = {
        "data_format": (None, "channels_first", ChannelDimension.FIRST),
        "do_convert_rgb": (None, True),  # images are always converted to 3 channels
        "default_to_square": (None, False),  # an int size is the shortest edge
        "do_center_crop": (None, False),  # MaskFormer does not crop (transformers' ignores it too)
        "crop_size": (None,),
        "image_seq_length": (None,),
    }
    for name, value in given.items():
        if value not in harmless[name]:
            raise ValueError(
                f"{name}={value!r} is not supported by this processor (allowed: {harmless[name]}); see the README's "
                "drop-in section"
            )


def channels_first(image: Any, input_data_format: Any) -> Any:
    """An array/tensor image given channels last (input_data_format="channels_last") as (C, h, w)."""
    layout = getattr(input_data_format, "value", input_data_format)
    if layout not in (None, "channels_first", "channels_last", "none"):
        raise ValueError(f"input_data_format={input_data_format!r}: must be 'channels_first' or 'channels_last'")
    if layout == "channels_last" and isinstance(image, np.ndarray | torch.Tensor) and image.ndim == 3:
        return np.moveaxis(image, -1, 0) if isinstance(image, np.ndarray) else image.movedim(-1, 0)
    return image


def _size_entries(size: Any) -> dict[str, int | None]:
    names = ("shortest_edge", "longest_edge", "height", "width", "max_height", "max_width")
    if isinstance(size, Mapping):
        return {name: size.get(name) for name in names}
    return {name: getattr(size, name, None) for name in names}


class TransformersProcessorMethods:
    """The methods of transformers' processor, as a mixin of ours (which provides `get_resize_output_size`)."""

    def pad(
        self,
        images: torch.Tensor,
        padded_size: tuple[int, int],
        segmentation_maps: Sequence[torch.Tensor] | None = None,
        fill: int = 0,
        ignore_index: int = 255,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """images (B, C, h, w) padded bottom/right to `padded_size` with `fill`, the maps with `ignore_index`;
        returns (images (B, C, H, W), pixel_mask (B, H, W) int64, maps)."""
        height, width = images.shape[-2:]
        bottom, right = padded_size[0] - height, padded_size[1] - width
        if bottom < 0 or right < 0:
            raise ValueError(f"pad: padded_size {tuple(padded_size)} is smaller than the images ({height}, {width})")
        if bottom or right:
            images = F.pad(images, (0, right, 0, bottom), value=fill)
            if segmentation_maps is not None:
                segmentation_maps = [F.pad(m, (0, right, 0, bottom), value=ignore_index) for m in segmentation_maps]
        pixel_mask = torch.zeros((images.shape[0], *padded_size), dtype=torch.int64, device=images.device)
        pixel_mask[:, :height, :width] = 1
        return images, pixel_mask, None if segmentation_maps is None else list(segmentation_maps)

    def resize(
        self,
        image: torch.Tensor,
        size: Any,
        size_divisor: int = 0,
        resample: Any = None,
        antialias: bool = True,
    ) -> torch.Tensor:
        """image (..., h, w) resized as transformers does: `size` a dict (or SizeDict) with shortest_edge +
        longest_edge (aspect ratio kept), max_height + max_width, or height + width; with `size_divisor` > 0
        both sides are then rounded UP to a multiple of it (stretching, as transformers; `preprocess` pads
        instead)."""
        entries = _size_entries(size)
        height, width = image.shape[-2:]
        if entries["shortest_edge"] and entries["longest_edge"]:
            from .image_processing_maskformer import get_resize_output_size

            new_size = get_resize_output_size(
                height,
                width,
                {"shortest_edge": entries["shortest_edge"], "longest_edge": entries["longest_edge"]},
            )
        elif entries["max_height"] and entries["max_width"]:
            new_size = get_image_size_for_max_height_width(
                (height, width), entries["max_height"], entries["max_width"]
            )
        elif entries["height"] and entries["width"]:
            new_size = (entries["height"], entries["width"])
        else:
            raise ValueError(
                f"resize: size needs 'shortest_edge' and 'longest_edge', 'max_height' and 'max_width', or 'height' "
                f"and 'width', got {size}"
            )
        if size_divisor > 0:
            new_size = tuple(int(math.ceil(side / size_divisor) * size_divisor) for side in new_size)
        if isinstance(resample, tvF.InterpolationMode):
            interpolation = resample
        else:
            interpolation = pil_torch_interpolation_mapping[
                normalize_resample(self.resample if resample is None else resample)
            ]
        return tvF.resize(image, list(new_size), interpolation=interpolation, antialias=antialias)

    def rescale_and_normalize(
        self,
        images: torch.Tensor,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | Sequence[float],
        image_std: float | Sequence[float],
    ) -> torch.Tensor:
        """(images * rescale_factor - mean) / std on the channel axis (-3), float32 (transformers' fused step)."""
        images = images.to(torch.float32)
        if do_rescale:
            images = images * rescale_factor
        if do_normalize:
            channels = images.shape[-3]
            mean = torch.as_tensor(image_mean, dtype=torch.float32, device=images.device).expand(channels)
            std = torch.as_tensor(image_std, dtype=torch.float32, device=images.device).expand(channels)
            images = (images - mean[:, None, None]) / std[:, None, None]
        return images

    def reduce_label(self, labels: list[torch.Tensor]) -> None:
        """In place, as transformers: 0 becomes 255, every other id drops by one (255 stays 255)."""
        for index, label in enumerate(labels):
            label = torch.where(label == 0, torch.tensor(255, dtype=label.dtype), label) - 1
            labels[index] = torch.where(label == 254, torch.tensor(255, dtype=label.dtype), label)

    def convert_to_rgb(self, image: torch.Tensor, input_data_format: Any = None) -> torch.Tensor:
        """A grayscale (h, w) / (1, h, w) image to 3 channels; RGBA composited on white (transformers' rule);
        channels first unless `input_data_format="channels_last"`."""
        last = str(getattr(input_data_format, "value", input_data_format)) == "channels_last"
        if image.ndim == 2:
            image = image[None]
            last = False
        channel_axis = -1 if last else -3
        channels = image.shape[channel_axis]
        if channels == 1:
            return image.expand(*[3 if d == image.ndim + channel_axis else -1 for d in range(image.ndim)])
        if channels == 4:
            if image.is_floating_point() and (image.min() < 0.0 or image.max() > 1.0):
                raise ValueError(
                    f"convert_to_rgb: an RGBA float image must be in [0, 1], got [{image.min().item()}, {image.max().item()}]"
                )
            moved = image.movedim(channel_axis, -1)
            dtype = moved.dtype
            rgba = tvF.to_dtype(moved, torch.float32, scale=True)
            rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
            return tvF.to_dtype(rgb, dtype, scale=True).movedim(-1, channel_axis)
        return image
