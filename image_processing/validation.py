"""The image processor's input checks: each raw input (PIL, numpy, torch) becomes a tensor or is refused in one
line naming it (`images[2]`) and the fix, before it can fail inside torch; the settings are checked here too."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict, pil_torch_interpolation_mapping
from transformers.utils import TensorType

from ..errors import InvalidInputError

_VALID_SIZE_KEYS = ({"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"height", "width"})
_RESAMPLE = {int(r): r.name for r in PILImageResampling if r.name in ("NEAREST", "BILINEAR", "BICUBIC", "LANCZOS")}
# The scalar settings: what each must be.
_RULES = {
    "rescale_factor": (lambda v: isinstance(v, int | float) and v > 0, "a positive number"),
    "ignore_index": (lambda v: v is None or (isinstance(v, int) and v >= 0), "None or an int >= 0"),
    "num_labels": (lambda v: v is None or (isinstance(v, int) and v > 0), "None or a positive int"),
    "size_divisor": (lambda v: isinstance(v, int) and v >= 0, "an int >= 0 (0 or 1: no rounding)"),
}
_CHANNEL_COUNTS = (1, 3, 4)  # grayscale, RGB, RGBA (alpha dropped)
_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_PIL_MAP_MODES = ("1", "L", "P", "I", "F", *_PIL_16BIT_MODES)
# transformers' `ImagesKwargs` that this processor has no use for, and the values that change nothing here.
_HARMLESS = {
    "data_format": (None, "channels_first", ChannelDimension.FIRST),
    "do_convert_rgb": (None, True),  # images are always converted to 3 channels
    "default_to_square": (None, False),  # an int size is the shortest edge
    "do_center_crop": (None, False),  # MaskFormer does not crop (transformers' ignores it too)
    "crop_size": (None,),
    "image_seq_length": (None,),
}


def _describe(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _refuse_path(obj: Any, where: str) -> None:
    if isinstance(obj, str | os.PathLike):
        raise TypeError(f"{where} is a path ({str(obj)!r}), not an image. Open it first, e.g. `PIL.Image.open(path)`.")


def _as_tensor(obj: Any, where: str, kinds: str, expected: str) -> torch.Tensor:
    """A numpy array (dtype kind in `kinds`) or a torch tensor as a CPU tensor; anything else is refused."""
    _refuse_path(obj, where)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in kinds:
            raise TypeError(f"{where} has numpy dtype {obj.dtype}: expected {expected}.")
        return _to_torch(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, list | tuple):
        raise TypeError(f"{where} is a {type(obj).__name__}: pass a flat list, not nested lists.")
    raise TypeError(
        f"{where} has unsupported type {_describe(obj)}: expected a PIL.Image.Image, numpy.ndarray or torch.Tensor."
    )


def as_list(inputs: Any, name: str, *, num_images: int | None = None) -> list[Any]:
    """One input, a list/tuple or a batch (4-D images; 3-D maps when B == `num_images` and not (H, W, 1)) → a
    non-empty list."""
    _refuse_path(inputs, name)
    is_array = isinstance(inputs, np.ndarray | torch.Tensor)
    map_batch = is_array and num_images is not None and inputs.ndim == 3 and inputs.shape[0] == num_images
    if isinstance(inputs, list | tuple):
        items = list(inputs)
    elif is_array and (inputs.ndim == 4 or (map_batch and inputs.shape[-1] != 1)):
        items = list(inputs)  # a (B, ...) batch
    else:
        items = [inputs]
    if not items:
        raise InvalidInputError(f"`{name}` is empty: pass at least one image.")
    return items


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """numpy → torch without surprises from byte order or negative strides."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # NOTE: PIL's arrays are read-only; the tensors made here are only ever read, never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _pil_image_to_array(image: Image.Image) -> tuple[np.ndarray, bool]:
    """Returns (array, is_16bit). Palette/RGBA/CMYK/... become RGB; L stays one channel."""
    if image.mode in _PIL_16BIT_MODES:
        return np.asarray(image).astype(np.uint16), True
    if image.mode == "I":  # NOTE: Pillow opens some 16-bit PNGs as 32-bit "I"; values must then fit 16 bits.
        return np.asarray(image), True
    if image.mode in ("L", "RGB", "F"):
        return np.asarray(image), False
    return np.asarray(image.convert("RGB")), False


def _channels_first(tensor: torch.Tensor, where: str, channels_last: bool) -> torch.Tensor:
    """(H, W), (H, W, C) or (C, H, W) → (C, H, W) with C in {1, 3, 4}; (H, W, C) is tried first unless told."""
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim != 3:
        raise InvalidInputError(
            f"{where} has shape {tuple(tensor.shape)}: expected (H, W), (H, W, C) or (C, H, W) with C in "
            f"{_CHANNEL_COUNTS}."
        )
    if tensor.shape[-1] in _CHANNEL_COUNTS or channels_last:
        tensor = tensor.permute(2, 0, 1)
    if tensor.shape[0] in _CHANNEL_COUNTS:
        return tensor
    raise InvalidInputError(
        f"{where} has shape {tuple(tensor.shape)}: wrong number of channels; expected 1 (grayscale), 3 (RGB) or "
        "4 (RGBA) channels, in (H, W, C) or (C, H, W) layout."
    )


def check_image_size(height: int, width: int, where: str, *, min_side: int, max_side: int, max_pixels: int):
    if min(height, width) < min_side:
        raise InvalidInputError(f"{where} is {height}x{width} pixels (HxW): each side must be at least {min_side}.")
    if max(height, width) > max_side or height * width > max_pixels:
        raise InvalidInputError(
            f"{where} is {height}x{width} pixels (HxW): larger than the limit of {max_side} pixels a side and "
            f"{max_pixels:,} pixels in all. Downscale it first."
        )


def image_to_tensor(
    image: Any, where: str, *, min_side: int, max_side: int, max_pixels: int, channels_last: bool = False
) -> tuple[torch.Tensor, bool]:
    """One image as a (C, h, w) uint8 or float32 tensor, C in {1, 3}, and whether it is already in [0, 1] (uint16
    scaled by 1/65535, or float with max <= 1: not rescaled again). `channels_last`: a 3-D array is (H, W, C)."""
    limits = {"min_side": min_side, "max_side": max_side, "max_pixels": max_pixels}
    is_16bit = False
    if isinstance(image, Image.Image):
        check_image_size(image.size[1], image.size[0], where, **limits)  # before decoding a huge image
        image, is_16bit = _pil_image_to_array(image)
    tensor = _as_tensor(image, where, "uif", "an unsigned/signed int or float dtype")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{where} has dtype {tensor.dtype}: expected an integer or float image.")

    tensor = _channels_first(tensor, where, channels_last)
    if tensor.shape[0] == 4:
        tensor = tensor[:3]  # NOTE: alpha is dropped, not composited (as PIL's convert("RGB") does)
    check_image_size(*tensor.shape[-2:], where, **limits)

    if tensor.dtype == torch.uint8:
        return tensor, False
    if tensor.dtype == torch.uint16 or is_16bit:
        tensor = tensor.to(torch.int32)  # torch has few kernels for uint16
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high > 65535:
            raise InvalidInputError(f"{where}: 16-bit pixel values must lie in [0, 65535], got [{low}, {high}].")
        return tensor.to(torch.float32) / 65535.0, True
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
        if not torch.isfinite(tensor).all():
            raise InvalidInputError(f"{where} contains NaN or infinite pixel values.")
        return tensor, bool(tensor.max() <= 1.0)
    low, high = int(tensor.min()), int(tensor.max())  # other integer dtypes: accepted when they hold 8-bit values
    if low < 0 or high > 255:
        raise InvalidInputError(
            f"{where} has dtype {tensor.dtype} with values in [{low}, {high}]: integer images must hold values in "
            "[0, 255] (use uint16 for 16-bit images)."
        )
    return tensor.to(torch.uint8), False


def segmentation_map_to_tensor(seg_map: Any, where: str) -> torch.Tensor:
    """One map of ids as an (h, w) tensor of ids >= 0: uint8 stays uint8 (cheaper), others become long."""
    if isinstance(seg_map, Image.Image):
        if seg_map.mode not in _PIL_MAP_MODES:
            raise InvalidInputError(
                f"{where} is a PIL image in mode {seg_map.mode!r}: a segmentation map must hold one id per pixel "
                "(modes 'P', 'L', 'I', 'I;16', '1' or 'F'). Convert colour-coded maps to ids first."
            )
        seg_map = np.asarray(seg_map)
    tensor = _as_tensor(seg_map, where, "buif", "integer ids")
    if tensor.ndim == 3 and 1 in (tensor.shape[0], tensor.shape[-1]):
        tensor = tensor[..., 0] if tensor.shape[-1] == 1 else tensor[0]
    if tensor.ndim != 2:
        raise InvalidInputError(
            f"{where} has shape {tuple(tensor.shape)}: a segmentation map must be 2-D (H, W) (or (H, W, 1)) holding "
            "one class/instance id per pixel."
        )
    if tensor.is_complex():
        raise TypeError(f"{where} has dtype {tensor.dtype}: expected integer ids.")
    if tensor.is_floating_point():
        if not torch.isfinite(tensor).all():
            raise InvalidInputError(f"{where} contains NaN or infinite values.")
        if not torch.equal(tensor, tensor.round()):
            raise InvalidInputError(f"{where} has non-integer values: segmentation maps must hold integer ids.")
    if tensor.dtype == torch.uint8:
        return tensor
    tensor = tensor.to(torch.int64)
    if tensor.min() < 0:
        negatives = torch.unique(tensor[tensor < 0])[:10].tolist()
        raise InvalidInputError(f"{where} has negative ids {negatives}: ids must be >= 0.")
    return tensor


def as_instance_mappings(mapping: Any, num_images: int) -> list[dict[int, int] | None]:
    """`instance_id_to_semantic_id` (None, one dict for all images, or one dict per image) → one per image."""
    if mapping is None or isinstance(mapping, Mapping):
        mappings = [mapping] * num_images
    elif isinstance(mapping, Sequence) and not isinstance(mapping, str):
        if len(mapping) != num_images:
            raise InvalidInputError(
                f"`instance_id_to_semantic_id` has {len(mapping)} entries for {num_images} images: pass one dict "
                "per image (or a single dict used for all images)."
            )
        mappings = list(mapping)
    else:
        raise TypeError(f"`instance_id_to_semantic_id` must be a dict or a list of dicts, got {_describe(mapping)}.")
    result: list[dict[int, int] | None] = []
    for index, item in enumerate(mappings):
        if item is not None and not isinstance(item, Mapping):
            raise TypeError(f"`instance_id_to_semantic_id[{index}]` must be a dict, got {_describe(item)}.")
        try:
            converted = None if item is None else {int(key): int(value) for key, value in item.items()}
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                f"`instance_id_to_semantic_id[{index}]` must map integer instance ids to integer class ids: {error}"
            ) from None
        if converted and min(converted.values()) < 0:
            raise InvalidInputError(f"`instance_id_to_semantic_id[{index}]` has negative class ids.")
        result.append(converted)
    return result


# ----- processor settings -----


def normalize_size(size: Any, max_size: int | None = None) -> dict[str, int]:
    """`size` (int, (h, w), dict or SizeDict; legacy `max_size`) → a checked dict."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = {"shortest_edge": size}
    elif isinstance(size, list | tuple) and len(size) == 2:
        size = {"height": size[0], "width": size[1]}
    elif isinstance(size, SizeDict | Mapping):
        size = {key: value for key, value in dict(size).items() if value is not None}  # a SizeDict holds Nones
    else:
        raise TypeError(f"`size` must be an int, a (height, width) pair or a dict, got {size!r}.")
    if max_size is not None and "shortest_edge" in size and "longest_edge" not in size:
        size["longest_edge"] = max_size
    if set(size) not in _VALID_SIZE_KEYS:
        raise InvalidInputError(
            f"`size` must have the keys {{'shortest_edge'[, 'longest_edge']}} or {{'height', 'width'}}, got {size}."
        )
    for key, value in size.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidInputError(f"`size[{key!r}]` must be a positive int, got {value!r}.")
    if size.get("longest_edge", math.inf) < size.get("shortest_edge", 0):
        raise InvalidInputError(f"`size`: longest_edge must be >= shortest_edge, got {size}.")
    return size


def _checked(ok: bool, setting: str, rule: str, value: Any) -> None:
    if not ok:
        raise InvalidInputError(f"`{setting}` must be {rule}, got {value!r}.")


def checked_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The processor's settings, checked and normalised: `size` a dict, `resample` a `PILImageResampling` (or a
    torchvision InterpolationMode), mean/std 3 floats, flags bools."""
    settings = dict(settings, size=normalize_size(settings["size"]))
    resample = settings["resample"]
    if isinstance(resample, tvF.InterpolationMode):
        by_mode = {mode: pil for pil, mode in pil_torch_interpolation_mapping.items()}
        resample = by_mode.get(resample, PILImageResampling.NEAREST if resample.value == "nearest" else resample)
    ok = type(resample) in (int, PILImageResampling) and resample in _RESAMPLE
    _checked(ok, "resample", f"one of {_RESAMPLE}", resample)
    settings["resample"] = PILImageResampling(resample)
    for name, positive in (("image_mean", False), ("image_std", True)):
        value = settings[name]
        values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
        ok = len(values) == 3 and all(math.isfinite(v) and (v > 0 or not positive) for v in values)
        _checked(ok, name, f"a {'positive ' * positive}number or 3 (one per RGB channel)", value)
        settings[name] = values
    for name, (rule, text) in _RULES.items():
        _checked(rule(settings[name]), name, text, settings[name])
    if settings["do_reduce_labels"] and settings["ignore_index"] is None:
        raise InvalidInputError("`do_reduce_labels=True` needs an `ignore_index` for the background (id 0).")
    return settings | {name: bool(settings[name]) for name in settings if name.startswith("do_")}


def check_call_options(options: Mapping[str, Any], valid: Any) -> tuple[TensorType | None, torch.dtype, bool]:
    """`preprocess`'s keywords that are no setting: `(return_tensors, mask_dtype, channels_last)`, checked."""
    unknown = sorted(set(options) - set(valid.__annotations__))
    if unknown:
        raise TypeError(f"preprocess() got unexpected keyword arguments {unknown}")
    for name, allowed in _HARMLESS.items():
        if options.get(name) not in allowed:
            raise InvalidInputError(
                f"{name}={options[name]!r} is not supported by this processor (allowed: {allowed}); see "
                "docs/api.md, drop-in"
            )
    return_tensors = options.get("return_tensors", "pt")
    _checked(return_tensors in (None, "pt", "np"), "return_tensors", "'pt', 'np' or None", return_tensors)
    mask_dtype = options.get("mask_dtype") or torch.float32
    _checked(mask_dtype in (torch.float32, torch.bool), "mask_dtype", "torch.float32 or torch.bool", mask_dtype)
    layout = str(getattr(options.get("input_data_format"), "value", options.get("input_data_format")))
    ok = layout in ("None", "none", "channels_first", "channels_last")
    _checked(ok, "input_data_format", "'channels_first' or 'channels_last'", layout)
    return (TensorType(return_tensors) if return_tensors else None), mask_dtype, layout == "channels_last"
