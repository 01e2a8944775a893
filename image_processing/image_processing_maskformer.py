"""MaskFormer image processor: transformers' `MaskFormerImageProcessor` with its own `preprocess` (padded,
normalised `pixel_values`, `pixel_mask`, per-segment `mask_labels`, `class_labels`), input checks and
post-processing (`post_processing.py`). Shapes: B batch, N segments, (h, w) resized image, (H, W) padded batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvF
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
    pil_torch_interpolation_mapping,
)
from transformers.models.maskformer import image_processing_maskformer as transformers_maskformer
from transformers.processing_utils import Unpack
from transformers.utils import TensorType, logging

from ..configuration.remote_code import HubFolderMixin
from ..errors import InvalidInputError
from .per_pixel_post_processing import (
    check_not_per_pixel,
    output_field,
    per_pixel_logits,
    per_pixel_semantic_scores,
)
from .post_processing import (
    Method,
    instance_segmentation,
    panoptic_segmentation,
    semantic_scores,
    semantic_segmentation,
)
from .validation import (
    as_instance_mappings,
    as_list,
    check_call_options,
    checked_settings,
    image_to_tensor,
    normalize_size,
    segmentation_map_to_tensor,
)

logger = logging.get_logger(__name__)

# Keys of saved configs that are no option: dropped silently (any other unknown key is dropped with a warning).
_CONFIG_KEYS = {"image_processor_type", "auto_map", "processor_class", "feature_extractor_type", "_processor_class"}


class MaskFormerImageProcessorKwargs(transformers_maskformer.MaskFormerImageProcessorKwargs, total=False):
    """transformers' options, and `mask_dtype` for `preprocess`: torch.float32 or torch.bool (a quarter of the
    memory)."""

    mask_dtype: torch.dtype


def get_resize_output_size(height: int, width: int, size: Mapping[str, int]) -> tuple[int, int]:
    """(h, w) after resizing to `size`, as transformers' `get_size_with_aspect_ratio`.

    NOTE: at least 1 px a side, where transformers rounds an extreme aspect ratio down to an empty image.
    """
    if "height" in size:
        return size["height"], size["width"]
    new_size = get_size_with_aspect_ratio((height, width), size["shortest_edge"], size.get("longest_edge"))
    return max(1, new_size[0]), max(1, new_size[1])


def _resize_nearest(label_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """NOTE: torch's "nearest-exact" sampling (PIL's NEAREST, as the original pipeline), by indexing so that int64 ids
    of any size stay exact (interpolate would need a float copy, exact only below 2**24)."""
    indices = []
    for in_size, out_size in zip(label_map.shape, size):
        scale = torch.tensor(in_size, dtype=torch.float32) / out_size
        index = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale).floor().long()
        indices.append(index.clamp_(max=in_size - 1))
    return label_map[indices[0][:, None], indices[1][None, :]]


def _segments(
    label_map: torch.Tensor,
    instance_id_to_semantic_id: Mapping[int, int] | None,
    *,
    ignore_index: int | None,
    do_reduce_labels: bool,
    num_labels: int | None,
    where: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted ids that get a mask in a checked (h, w) map, and their classes: (N,), (N,)."""
    if label_map.numel() and int(label_map.max()) < 1 << 20:
        # NOTE: bincount is ~10x faster than torch.unique (a sort) on CPU; its (max id + 1) counts stay small.
        ids = torch.bincount(label_map.reshape(-1)).nonzero().squeeze(1)
    else:
        ids = torch.unique(label_map)
    dropped = ([] if ignore_index is None else [ignore_index]) + ([0] if do_reduce_labels else [])  # 0: background
    ids = ids[~torch.isin(ids, torch.tensor(dropped, dtype=ids.dtype))]
    if instance_id_to_semantic_id is None:
        classes = ids - 1 if do_reduce_labels else ids.clone()
    else:
        missing = [i for i in ids.tolist() if i not in instance_id_to_semantic_id]
        if missing:
            raise InvalidInputError(
                f"{where}: instance ids {missing[:10]} appear in the map but not in `instance_id_to_semantic_id`."
            )
        classes = torch.tensor([instance_id_to_semantic_id[i] for i in ids.tolist()], dtype=torch.long)
        if do_reduce_labels:  # class ids reduce like semantic ids: 0 (background) has no mask, c → c - 1
            keep = classes != 0
            ids, classes = ids[keep], classes[keep] - 1
    if ignore_index is not None:  # NOTE: a segment whose (reduced) class is the ignore value carries no target.
        keep = classes != ignore_index
        ids, classes = ids[keep], classes[keep]
    if num_labels is not None and (classes >= num_labels).any():
        bad = torch.unique(classes[classes >= num_labels])[:10].tolist()
        reduced = " (after do_reduce_labels)" if do_reduce_labels else ""
        raise InvalidInputError(
            f"{where}: class ids {bad}{reduced} are >= num_labels={num_labels} and are not the ignore value "
            f"{ignore_index}."
        )
    return ids, classes


def binary_masks(
    label_map: torch.Tensor, ids: torch.Tensor, size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(N, H, W) masks of `dtype`: 1 where the (h, w) `label_map` equals `ids[n]`, 0 elsewhere and in the padding
    to `size` (bottom and right).

    NOTE: the map is padded with -1 (never an id) and compared straight into the output (~10x faster), in int16 for
    bool masks and float32 for float ones (exact below 2**24; larger map values stay larger than any id).
    """
    h, w = label_map.shape
    size = size or (h, w)
    top = int(ids.max()) if len(ids) else 0
    narrow = label_map.dtype == torch.uint8 or (label_map.numel() and int(label_map.max()) < 1 << 15)
    if dtype == torch.bool and narrow:  # int16 holds every value of the map exactly: no false match
        compared = torch.int16
    else:
        compared = torch.float32 if top < 1 << 24 else torch.int64
    if (h, w) == tuple(size):
        padded = label_map.to(compared)
    else:
        padded = torch.full(size, -1, dtype=compared)
        padded[:h, :w] = label_map
    masks = torch.empty(len(ids), *size, dtype=dtype)
    torch.eq(padded.unsqueeze(0), ids.to(compared)[:, None, None], out=masks)  # (N, H, W)
    return masks


def convert_segmentation_map_to_binary_masks(
    segmentation_map: Any,
    instance_id_to_semantic_id: Mapping[int, int] | None = None,
    ignore_index: int | None = 255,
    do_reduce_labels: bool = False,
    num_labels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' function on a PIL, numpy or torch map: float (N, h, w) masks and long (N,) classes."""
    if do_reduce_labels and ignore_index is None:
        raise InvalidInputError("`do_reduce_labels=True` needs an `ignore_index` for the background (id 0).")
    label_map = segmentation_map_to_tensor(segmentation_map, "segmentation_map")
    mapping = as_instance_mappings(instance_id_to_semantic_id, 1)[0]
    checks = {"ignore_index": ignore_index, "do_reduce_labels": do_reduce_labels, "num_labels": num_labels}
    ids, classes = _segments(label_map, mapping, **checks, where="segmentation_map")
    return binary_masks(label_map, ids), classes  # (N, h, w), (N,)


def convert_segmentation_to_rle(segmentation: torch.Tensor) -> list[list[int]]:
    """transformers' `convert_segmentation_to_rle` (one COCO RLE per id, increasing).

    NOTE: one pass over the map's runs, grouped by id, not one binary mask per id: 100 segments, one pass.
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


class MaskFormerHFImageProcessor(HubFolderMixin, transformers_maskformer.MaskFormerImageProcessor):
    r"""Pre- and post-processing for MaskFormer; imported as `MaskFormerImageProcessor`.

    NOTE: named `MaskFormerHFImageProcessor` because transformers resolves a registered image processor by class
    name before its own: under transformers' name, importing this package would hand this processor to every
    transformers MaskFormer checkpoint. preprocessor_config.json does not name it (`remote_code.py`); config.json does.

    Options as transformers', defaults the class attributes. NOTE: images are padded bottom/right to the batch's
    largest size rounded up to `size_divisor` (transformers resizes to that multiple, distorting the image); uint16
    images are scaled by 1/65535 and float ones in [0, 1] kept; with `num_labels`, class ids must be below it.
    """

    valid_kwargs = MaskFormerImageProcessorKwargs
    # The settings: stored, saved in preprocessor_config.json, overridable per `preprocess` call (see `SETTINGS`).
    do_resize = True
    size = {"shortest_edge": 800, "longest_edge": 1333}
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    ignore_index = 255
    do_reduce_labels = False
    num_labels = None
    size_divisor = 32
    do_pad = True

    # NOTE: any size is accepted, as transformers does: the batch is padded up to a multiple of `size_divisor`
    # (32), which is what the backbone needs; the model itself refuses inputs under 32 px.
    MIN_IMAGE_SIDE = 1
    MAX_IMAGE_SIDE = 16384
    MAX_IMAGE_PIXELS = 100_000_000

    def __init__(self, **kwargs: Unpack[MaskFormerImageProcessorKwargs]) -> None:
        # Legacy keys of older transformers configs: `max_size`, `reduce_labels`, `size_divisibility`.
        max_size = kwargs.pop("max_size", kwargs.pop("_max_size", None))
        if kwargs.pop("reduce_labels", None):
            kwargs["do_reduce_labels"] = True
        if (divisor := kwargs.pop("size_divisibility", None)) is not None:
            kwargs["size_divisor"] = divisor
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__) - _CONFIG_KEYS)
        if unknown:
            logger.warning(f"{type(self).__name__}: ignoring settings it has no use for: {unknown}.")
        settings = {name: kwargs[name] for name in SETTINGS if name in kwargs}
        # NOTE: our check of `size` before transformers' (whose `get_size_dict` names no fix).
        settings["size"] = normalize_size(self.size if kwargs.get("size") is None else kwargs["size"], max_size)
        super().__init__(**settings)

    def _set_attributes(self, **kwargs: Any) -> None:
        """NOTE: only the settings, checked, are stored (transformers stores every `ImagesKwargs` key), so that a
        saved config holds nothing unused. `ignore_index=None` means no ignore value."""
        given = {k: v for k, v in kwargs.items() if k in SETTINGS and (v is not None or k == "ignore_index")}
        for name, value in checked_settings({name: getattr(type(self), name) for name in SETTINGS} | given).items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Without `image_processor_type` and `auto_map`: config.json names the class (`remote_code.py`)."""
        return {k: v for k, v in super().to_dict().items() if k not in ("image_processor_type", "auto_map")}

    def _segments(
        self, label_map: torch.Tensor, mapping: dict[int, int] | None, where: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        checks = {"ignore_index": self.ignore_index, "do_reduce_labels": self.do_reduce_labels}
        return _segments(label_map, mapping, **checks, num_labels=self.num_labels, where=where)

    def get_resize_output_size(self, height: int, width: int) -> tuple[int, int]:
        return get_resize_output_size(height, width, self.size) if self.do_resize else (height, width)

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: Mapping[int, int] | Sequence[Mapping[int, int]] | None = None,
        **kwargs: Unpack[MaskFormerImageProcessorKwargs],
    ) -> BatchFeature:
        """Images (PIL, arrays or tensors: (H, W), (H, W, C) or (C, H, W), C in {1, 3, 4}; uint8, uint16 or float)
        and optional maps of class ids (or instance ids with `instance_id_to_semantic_id`) as transformers'. Also
        `return_tensors=None` (one array per image) and `mask_dtype`; transformers' `data_format`, `do_convert_rgb`,
        `default_to_square`, `do_center_crop`, `crop_size`, `image_seq_length` only where they change nothing.

        Returns `pixel_values` (B, 3, H, W) float32, `pixel_mask` (B, H, W) int64, and with maps `mask_labels` (B of
        (N_i, H, W), 0 in the padding) and `class_labels` (B of (N_i,) int64).
        """
        tensor_type, mask_dtype, channels_last = check_call_options(kwargs, self.valid_kwargs)
        overrides = {k: v for k, v in kwargs.items() if k in SETTINGS and (v is not None or k == "ignore_index")}
        # NOTE: call-time settings go through the constructor, so they are checked exactly like saved ones.
        cfg = type(self)(**{name: getattr(self, name) for name in SETTINGS} | overrides) if overrides else self

        limits = dict(min_side=self.MIN_IMAGE_SIDE, max_side=self.MAX_IMAGE_SIDE, max_pixels=self.MAX_IMAGE_PIXELS)
        prepared = [
            image_to_tensor(image, f"images[{i}]", **limits, channels_last=channels_last)
            for i, image in enumerate(as_list(images, "images"))
        ]  # (C, h, w) with C 1 (grayscale, broadcast to 3 below) or 3, and whether in [0, 1]
        mappings = as_instance_mappings(instance_id_to_semantic_id, len(prepared))
        label_maps = cfg._prepare_maps(segmentation_maps, [image for image, _ in prepared], mappings)

        interpolation = pil_torch_interpolation_mapping[cfg.resample]
        resized = []
        for image, in_unit_range in prepared:
            new_size = cfg.get_resize_output_size(*image.shape[-2:])
            if tuple(image.shape[-2:]) != new_size:
                image = tvF.resize(image, list(new_size), interpolation=interpolation, antialias=True)
            resized.append((image, in_unit_range))
        sizes = [tuple(image.shape[-2:]) for image, _ in resized]
        padded = cfg._padded_size(sizes, kwargs.get("pad_size"), tensor_type)

        # NOTE: rescale and normalise fused into one multiply-add per channel, x * scale - shift, written straight
        # into the padded batch (transformers' `rescale_and_normalize` then `pad` make two more copies).
        mean_t, std_t = torch.tensor(cfg.image_mean).view(3, 1, 1), torch.tensor(cfg.image_std).view(3, 1, 1)
        if not cfg.do_normalize:
            mean_t, std_t = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
        if padded is not None or len(set(sizes)) == 1:
            height, width = padded or sizes[0]
            pixel_values = torch.empty(len(sizes), 3, height, width)  # (B, 3, H, W); the padding is zeroed below
            pixel_mask = torch.zeros(len(sizes), height, width, dtype=torch.long)  # (B, H, W)
        else:
            pixel_values = [torch.empty(3, h, w) for h, w in sizes]
            pixel_mask = [torch.zeros(h, w, dtype=torch.long) for h, w in sizes]
        for i, ((image, in_unit_range), (h, w)) in enumerate(zip(resized, sizes)):
            factor = cfg.rescale_factor if cfg.do_rescale and not in_unit_range else 1.0
            pixel_values[i][:, h:].zero_()
            pixel_values[i][:, :h, w:].zero_()
            content = pixel_values[i][:, :h, :w]
            torch.mul(image.expand(3, h, w), factor / std_t, out=content)  # uint8 -> float in the same pass
            content.sub_(mean_t / std_t)
            pixel_mask[i][:h, :w] = 1

        data: dict[str, Any] = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        if label_maps is not None:
            data["mask_labels"], data["class_labels"] = [], []
            for i, ((label_map, segments), mapping, (h, w)) in enumerate(zip(label_maps, mappings, sizes)):
                if tuple(label_map.shape) != (h, w):  # resized: small segments may have vanished
                    label_map = _resize_nearest(label_map, (h, w))
                    segments = cfg._segments(label_map, mapping, f"segmentation_maps[{i}]")
                data["mask_labels"].append(binary_masks(label_map, segments[0], padded or (h, w), mask_dtype))
                data["class_labels"].append(segments[1])  # (N,); the masks (N, H, W), 0 in the padding
        if tensor_type != TensorType.PYTORCH:  # None: one array per image; "np": a batch is one array
            data = {
                k: v.numpy() if tensor_type and torch.is_tensor(v) else [t.numpy() for t in v] for k, v in data.items()
            }
        elif kwargs.get("device") is not None:
            device = kwargs["device"]
            data = {k: [t.to(device) for t in v] if isinstance(v, list) else v.to(device) for k, v in data.items()}
        return BatchFeature(data=data)

    def _padded_size(
        self, sizes: list[tuple[int, int]], pad_size: Mapping[str, int] | None, tensor_type: TensorType | None
    ) -> tuple[int, int] | None:
        """The (H, W) the batch is padded to, or None: each image keeps its size."""
        if pad_size is not None:
            padded = (int(pad_size["height"]), int(pad_size["width"]))
            too_big = [s for s in sizes if s[0] > padded[0] or s[1] > padded[1]]
            if too_big:
                raise InvalidInputError(f"pad_size {dict(pad_size)} is smaller than resized images {too_big}.")
            return padded
        if self.do_pad:
            divisor = max(self.size_divisor, 1)
            return tuple(math.ceil(max(s[d] for s in sizes) / divisor) * divisor for d in (0, 1))
        if len(set(sizes)) > 1 and tensor_type is not None:
            raise InvalidInputError(
                "With do_pad=False all images must be resized to the same size to be batched, got "
                f"{sorted(set(sizes))}; use do_pad=True or return_tensors=None."
            )
        return None

    def _prepare_maps(
        self, segmentation_maps: Any, images: list[torch.Tensor], mappings: list[dict[int, int] | None]
    ) -> list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] | None:
        """Per image, the checked map and its segments (ids, classes). NOTE: checked at full resolution, so that an
        error never depends on whether resizing drops a small segment."""
        if segmentation_maps is None:
            if any(mapping is not None for mapping in mappings):
                raise InvalidInputError("`instance_id_to_semantic_id` was given without `segmentation_maps`.")
            return None
        raw_maps = as_list(segmentation_maps, "segmentation_maps", num_images=len(images))
        if len(raw_maps) != len(images):
            raise InvalidInputError(
                f"Got {len(raw_maps)} segmentation maps for {len(images)} images: pass one per image."
            )
        maps = []
        for i, (raw_map, image) in enumerate(zip(raw_maps, images)):
            label_map = segmentation_map_to_tensor(raw_map, f"segmentation_maps[{i}]")
            if label_map.shape != image.shape[-2:]:
                raise InvalidInputError(
                    f"segmentation_maps[{i}] is {tuple(label_map.shape)} (HxW) but images[{i}] is "
                    f"{tuple(image.shape[-2:])}: a map must have the size of its image."
                )
            maps.append((label_map, self._segments(label_map, mappings[i], f"segmentation_maps[{i}]")))
        return maps

    # ----- post-processing: thin wrappers around post_processing.py -----

    def post_processing_inputs(
        self, outputs: Any, target_sizes: Any
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """`(class_logits, mask_logits, geometry)` for post_processing.py's functions (`_geometry`)."""
        class_logits = output_field(outputs, "class_queries_logits")  # (B, Q, K + 1)
        mask_logits = output_field(outputs, "masks_queries_logits")  # (B, Q, H / 4, W / 4)
        if not isinstance(class_logits, torch.Tensor) or not isinstance(mask_logits, torch.Tensor):
            raise TypeError(
                "`outputs` must provide `class_queries_logits` and `masks_queries_logits` tensors (a "
                f"MaskFormerForInstanceSegmentationOutput or a dict), got {type(outputs).__name__}."
            )
        if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
            raise InvalidInputError(
                "Expected class_queries_logits (B, Q, K + 1) and masks_queries_logits (B, Q, h, w), got "
                f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
            )
        return class_logits, mask_logits, self._geometry(outputs, mask_logits.shape, target_sizes)

    def _geometry(self, outputs: Any, logits_shape: Sequence[int], target_sizes: Any) -> dict[str, Any]:
        """`padded_size`, `valid_sizes` (from `pixel_mask`) and the checked `target_sizes` for (B, M, h, w) logits."""
        batch_size, low_size = logits_shape[0], tuple(logits_shape[-2:])
        pixel_mask = output_field(outputs, "pixel_mask")  # (B, H, W) or None
        if isinstance(target_sizes, torch.Tensor | np.ndarray):
            target_sizes = target_sizes.tolist()
        if target_sizes is not None and len(target_sizes) != batch_size:
            raise InvalidInputError(
                f"Got {len(target_sizes)} target sizes for a batch of {batch_size}: pass one (height, width) per image."
            )
        for i, target in enumerate(target_sizes or []):
            pair = tuple(target) if isinstance(target, Sequence) else ()
            if len(pair) != 2 or not all(
                isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in pair
            ):
                raise InvalidInputError(
                    f"target_sizes[{i}] must be a (height, width) pair of positive ints, got {target!r}."
                )
        if pixel_mask is not None:
            if pixel_mask.ndim != 3 or pixel_mask.shape[0] != batch_size:
                raise InvalidInputError(f"`pixel_mask` must be (B={batch_size}, H, W), got {tuple(pixel_mask.shape)}.")
            padded_size = tuple(pixel_mask.shape[-2:])
            # NOTE: the padding is bottom/right, so the first column and row hold the content's height and width.
            rows, cols = (pixel_mask[:, :, 0] != 0).sum(-1), (pixel_mask[:, 0, :] != 0).sum(-1)  # (B,), (B,)
            valid_sizes = list(zip(rows.tolist(), cols.tolist()))
            if min(min(s) for s in valid_sizes) == 0:
                raise InvalidInputError("`pixel_mask` has an image without any real pixel (all zeros).")
        else:
            # NOTE: without a pixel_mask (outputs built by the user's own code), the whole padded input, 4x the
            # stride-4 logits, is taken as valid, as transformers does.
            padded_size, valid_sizes = (4 * low_size[0], 4 * low_size[1]), None
        # as transformers: the maps at the stride-4 logits' resolution by default
        target_sizes = [low_size] * batch_size if target_sizes is None else [(int(h), int(w)) for h, w in target_sizes]
        return {"padded_size": padded_size, "valid_sizes": valid_sizes, "target_sizes": target_sizes}

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: list[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        method: Method = "auto",
        band_rows: int | None = None,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """As transformers' (long (H_t, W_t) maps); `return_segmentation_scores` adds the (K, H_t, W_t) scores;
        `method` and `band_rows` as in post_processing.py. Also takes a per-pixel classifier's `logits`."""
        logits = per_pixel_logits(outputs)  # a per-pixel classifier's (B, K, H / 4, W / 4), else None
        if logits is not None:
            geometry = self._geometry(outputs, logits.shape, target_sizes)
            resampled = per_pixel_semantic_scores(logits, **geometry, softmax=False)  # (K, H_t, W_t) each
            maps = [r.max(0).indices for r in resampled]  # NOTE: the softmax does not change the argmax
            scores = [r.softmax(0) for r in resampled] if return_segmentation_scores else None
        else:
            class_logits, mask_logits, geometry = self.post_processing_inputs(outputs, target_sizes)
            maps = semantic_segmentation(class_logits, mask_logits, method=method, band_rows=band_rows, **geometry)
            scores = semantic_scores(class_logits, mask_logits, **geometry) if return_segmentation_scores else None
        if scores is None:
            return maps
        return [
            SemanticSegmentationPostProcessorOutput(data={"segmentation": m, "segmentation_scores": s})
            for m, s in zip(maps, scores)
        ]

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: list[tuple[int, int]] | None = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        method: Method = "auto",
        band_rows: int | None = None,
    ) -> list[dict[str, Any]]:
        """As transformers' (see post_processing.py); COCO RLEs per id (`-1` first) with `return_coco_annotation`."""
        check_not_per_pixel(outputs, "instance")
        if return_coco_annotation and return_binary_maps:
            raise InvalidInputError(
                "return_coco_annotation and return_binary_maps: choose one form of the segmentation"
            )
        class_logits, mask_logits, geometry = self.post_processing_inputs(outputs, target_sizes)
        options = dict(threshold=threshold, mask_threshold=mask_threshold, method=method, band_rows=band_rows)
        options |= dict(overlap_mask_area_threshold=overlap_mask_area_threshold, return_binary_maps=return_binary_maps)
        results = instance_segmentation(class_logits, mask_logits, **options, **geometry)
        if return_coco_annotation:
            for result in results:
                result["segmentation"] = convert_segmentation_to_rle(result["segmentation"])
        return results

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: set[int] | None = None,
        target_sizes: list[tuple[int, int]] | None = None,
        method: Method = "auto",
        band_rows: int | None = None,
    ) -> list[dict[str, Any]]:
        """Per image, `{"segmentation", "segments_info"}` as in transformers (see post_processing.py)."""
        check_not_per_pixel(outputs, "panoptic")
        class_logits, mask_logits, geometry = self.post_processing_inputs(outputs, target_sizes)
        options = dict(threshold=threshold, mask_threshold=mask_threshold, method=method, band_rows=band_rows)
        options |= dict(overlap_mask_area_threshold=overlap_mask_area_threshold, label_ids_to_fuse=label_ids_to_fuse)
        return panoptic_segmentation(class_logits, mask_logits, **options, **geometry)


MaskFormerImageProcessor = MaskFormerHFImageProcessor


# The settings: the options the class gives a default (stored, saved, overridable per call).
SETTINGS = tuple(k for k in MaskFormerImageProcessorKwargs.__annotations__ if k in vars(MaskFormerHFImageProcessor))
