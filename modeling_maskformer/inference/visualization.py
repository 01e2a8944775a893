"""Pictures of predictions: the segmentation blended over the photo, segment outlines and a legend. Semantic: one
colour per class; instance/panoptic: one per segment, a shade of its class's colour (`class_colour`: stable in every
picture and run), with label and score in the legend.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..errors import InvalidInputError

Task = Literal["semantic", "instance", "panoptic"]
GOLDEN_RATIO_CONJUGATE = 0.618033988749895
_CROSS = ndimage.generate_binary_structure(2, 1)  # a pixel and its 4 neighbours


def class_colour(class_id: int, shade: int = 0) -> tuple[int, int, int]:
    """A stable RGB colour for a class (hues spread by the golden ratio); `shade` > 0: variants for its segments."""
    hue = (int(class_id) * GOLDEN_RATIO_CONJUGATE + 0.11) % 1.0
    value = (0.95, 0.75, 0.55, 0.85, 0.65)[shade % 5]
    saturation = (0.75, 0.9, 0.6, 0.55, 1.0)[(shade // 5) % 5]
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def to_numpy(array: Any) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _segments(result: Any, task: Task | None, ignore_index: int) -> tuple[np.ndarray, list[Mapping]]:
    """The segmentation ((H, W) ids, or (N, H, W) binary maps) and its segments (semantic: its classes)."""
    task = task or ("panoptic" if isinstance(result, Mapping) else "semantic")
    if task == "semantic":
        labels = to_numpy(result.get("segmentation") if isinstance(result, Mapping) else result).astype(np.int64)
        if labels.ndim != 2:
            raise InvalidInputError(f"draw(task='semantic'): expected an (H, W) map of class ids, got {labels.shape}")
        return labels, [{"id": c, "label_id": c} for c in np.unique(labels).tolist() if c >= 0 and c != ignore_index]
    if task not in ("instance", "panoptic"):
        raise InvalidInputError(f"draw: task must be 'semantic', 'instance' or 'panoptic', got {task!r}")
    if not isinstance(result, Mapping) or "segmentation" not in result or "segments_info" not in result:
        raise InvalidInputError(
            f"draw(task={task!r}): expected a dict with 'segmentation' and 'segments_info' "
            f"(post_process_{task}_segmentation)"
        )
    return to_numpy(result["segmentation"]), list(result["segments_info"])


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _legend(entries: Sequence[tuple], height: int, font_size: int, max_entries: int) -> Image.Image:
    font, row = _font(font_size), font_size + 8
    shown = entries[:max_entries]
    lines = [f"{text}  {100 * area:.1f}%" for _, text, area in shown] or ["no segments"]
    if len(entries) > max_entries:
        lines.append(f"+{len(entries) - max_entries} more")
    text_width = max(font.getlength(line) for line in lines)
    panel = Image.new("RGB", (int(text_width) + font_size + 24, max(height, row * len(lines) + 8)), "white")
    canvas = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        top = 6 + i * row
        if i < len(shown):
            canvas.rectangle([6, top, 6 + font_size, top + font_size], fill=shown[i][0], outline=(0, 0, 0))
        canvas.text((font_size + 14, top), line, fill=(0, 0, 0), font=font)
    return panel


def draw(
    image: Image.Image | np.ndarray,
    result: Any,
    id2label: Mapping[int, str] | None = None,
    *,
    task: Task | None = None,
    alpha: float = 0.5,
    outline_colour: tuple[int, int, int] = (255, 255, 255),
    legend: bool = True,
    min_size: int = 256,
    max_legend_entries: int = 24,
    ignore_index: int = 255,
) -> Image.Image:
    """The post-processing `result` (a semantic (H, W) map, or an instance/panoptic dict; `task` default: dict ->
    panoptic) drawn over `image` (PIL or (H, W, 3) uint8), enlarged to `min_size`, with a legend on the right: label
    (and score) and area percentage, largest first."""
    image = image if isinstance(image, Image.Image) else Image.fromarray(to_numpy(image).astype(np.uint8))
    image = image.convert("RGB")
    segmentation, segments = _segments(result, task, ignore_index)
    region_map = np.full(segmentation.shape[-2:], -1, dtype=np.int64)  # (H, W) segment positions, -1 = none
    colours, texts, shades = [], [], {}
    for index, segment in enumerate(segments):
        class_id = int(segment["label_id"])
        shade = shades[class_id] = shades.get(class_id, -1) + 1
        mask = segmentation[index].astype(bool) if segmentation.ndim == 3 else segmentation == segment["id"]
        region_map[mask & (region_map < 0)] = index
        label = class_id if id2label is None else id2label.get(class_id, id2label.get(str(class_id), class_id))
        score = segment.get("score")
        colours.append(class_colour(class_id, shade))
        texts.append(str(label) + (f" {score:.2f}" if score is not None else ""))
    if region_map.shape != (image.height, image.width):
        raise InvalidInputError(
            f"draw: the segmentation is {region_map.shape[0]}x{region_map.shape[1]} but the image is "
            f"{image.height}x{image.width}; post-process with target_sizes=[(image.height, image.width)]"
        )
    scale = max(1, -(-min_size // min(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
        region_map = region_map.repeat(scale, 0).repeat(scale, 1)
    pixels = np.asarray(image).astype(np.float32)
    palette = np.array([*colours, (0, 0, 0)], dtype=np.float32)  # the last row: no segment (index -1)
    blended = np.where((region_map >= 0)[..., None], (1 - alpha) * pixels + alpha * palette[region_map], pixels)
    # Outlines: pixels with a 4-neighbour in another region (or in none), both sides of every boundary.
    outline = ndimage.grey_dilation(region_map, footprint=_CROSS) != ndimage.grey_erosion(region_map, footprint=_CROSS)
    blended[outline] = outline_colour
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    if not legend:
        return picture
    areas = np.bincount(region_map[region_map >= 0].ravel(), minlength=len(segments)) / region_map.size
    entries = [(colour, text, float(area)) for colour, text, area in zip(colours, texts, areas) if area > 0]
    entries.sort(key=lambda entry: -entry[2])
    panel = _legend(entries, picture.height, max(12, min(24, picture.height // 24)), max_legend_entries)
    return grid([[picture, panel]], gap=0)


def grid(pictures: Sequence[Sequence[Image.Image]], titles: Sequence[str] | None = None, gap: int = 4) -> Image.Image:
    """Rows of pictures in a grid, column titles on top."""
    columns = max(len(row) for row in pictures)
    widths = [max(row[c].width for row in pictures if c < len(row)) for c in range(columns)]
    lefts = [sum(widths[:c]) + gap * c for c in range(columns)]
    heights = [max(picture.height for picture in row) for row in pictures]
    top = 28 if titles else 0  # a 16-pixel font and its margins
    out = Image.new("RGB", (lefts[-1] + widths[-1], top + sum(heights) + gap * (len(pictures) - 1)), "white")
    for left, title in zip(lefts, titles or []):
        ImageDraw.Draw(out).text((left + 4, 4), title, fill=(0, 0, 0), font=_font(16))
    for row, height in zip(pictures, heights):
        for left, picture in zip(lefts, row):
            out.paste(picture, (left, top))
        top += height + gap
    return out
