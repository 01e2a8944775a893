"""Pictures of predictions: the segmentation blended over the photo, segment outlines and a legend.

    from modeling_maskformer.inference.visualization import draw
    semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    draw(image, semantic, model.config.id2label, task="semantic").save("overlay.png")
    panoptic = processor.post_process_panoptic_segmentation(outputs, target_sizes=[size])[0]
    draw(image, panoptic, model.config.id2label, task="panoptic")

Semantic: one colour per class. Instance/panoptic: one colour per segment, a shade of its class's colour,
with its label and score in the legend. A class always gets the same colour (`class_colour`), in every
picture and every run.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

Task = Literal["semantic", "instance", "panoptic"]
GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def class_colour(class_id: int, shade: int = 0) -> tuple[int, int, int]:
    """A stable RGB colour for a class: hues spread by the golden ratio, so neighbouring ids differ;
    `shade` > 0 gives lighter/darker variants for several segments of one class."""
    hue = (int(class_id) * GOLDEN_RATIO_CONJUGATE + 0.11) % 1.0
    value = (0.95, 0.75, 0.55, 0.85, 0.65)[shade % 5]
    saturation = (0.75, 0.9, 0.6, 0.55, 1.0)[(shade // 5) % 5]
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))


@dataclass
class LegendEntry:
    colour: tuple[int, int, int]
    text: str
    area: float  # fraction of the image


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _label(id2label: Mapping | None, class_id: int) -> str:
    if id2label is None:
        return str(class_id)
    return str(id2label.get(class_id, id2label.get(str(class_id), class_id)))


def _regions(result: Any, id2label: Mapping | None, task: Task | None, ignore_index: int) -> tuple[np.ndarray, list]:
    """(H, W) int map of region indices (-1 = nothing) and, per region, (colour, legend text)."""
    if task is None:
        task = "panoptic" if isinstance(result, Mapping) else "semantic"
    if task == "semantic":
        labels = _to_numpy(result.get("segmentation") if isinstance(result, Mapping) else result).astype(np.int64)
        if labels.ndim != 2:
            raise ValueError(f"draw(task='semantic'): expected an (H, W) map of class ids, got shape {labels.shape}")
        present = [int(c) for c in np.unique(labels) if c >= 0 and c != ignore_index]
        region_map = np.full(labels.shape, -1, dtype=np.int64)
        regions = []
        for index, class_id in enumerate(present):
            region_map[labels == class_id] = index
            regions.append((class_colour(class_id), _label(id2label, class_id)))
        return region_map, regions
    if task not in ("instance", "panoptic"):
        raise ValueError(f"draw: task must be 'semantic', 'instance' or 'panoptic', got {task!r}")
    if not isinstance(result, Mapping) or "segmentation" not in result or "segments_info" not in result:
        raise ValueError(
            f"draw(task={task!r}): expected a dict with 'segmentation' and 'segments_info' (post_process_{task}_segmentation)"
        )
    segmentation = _to_numpy(result["segmentation"])
    segments = list(result["segments_info"])
    binary = segmentation.ndim == 3  # instance with return_binary_maps: (N, H, W)
    region_map = np.full(segmentation.shape[-2:], -1, dtype=np.int64)
    regions, shades = [], {}
    for index, segment in enumerate(segments):
        class_id = int(segment["label_id"])
        shade = shades[class_id] = shades.get(class_id, -1) + 1
        mask = segmentation[index].astype(bool) if binary else segmentation == segment["id"]
        region_map[mask & (region_map < 0)] = index
        score = segment.get("score")
        text = _label(id2label, class_id) + (f" {score:.2f}" if score is not None else "")
        regions.append((class_colour(class_id, shade), text))
    return region_map, regions


def _outline(region_map: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour in another region (or in none): both sides of every boundary."""
    edge = np.zeros(region_map.shape, dtype=bool)
    horizontal = region_map[:, 1:] != region_map[:, :-1]
    vertical = region_map[1:, :] != region_map[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _legend(entries: Sequence[LegendEntry], height: int, font_size: int, max_entries: int) -> Image.Image:
    font = _font(font_size)
    row = font_size + 8
    shown = list(entries[:max_entries])
    lines = [f"{e.text}  {100 * e.area:.1f}%" for e in shown]
    if len(entries) > max_entries:
        lines.append(f"+{len(entries) - max_entries} more")
    if not shown:
        lines = ["no segments"]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(probe.textlength(line, font=font) for line in lines)
    width = int(text_width) + font_size + 24
    panel = Image.new("RGB", (width, max(height, row * len(lines) + 8)), (255, 255, 255))
    canvas = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        top = 6 + i * row
        if i < len(shown):
            canvas.rectangle([6, top, 6 + font_size, top + font_size], fill=shown[i].colour, outline=(0, 0, 0))
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
    """The prediction `result` drawn over `image` (PIL or (H, W, 3) uint8), with a legend on the right.

    `result`: a semantic (H, W) class-id map (tensor or array), or an instance/panoptic dict from the
    processor's post-processing (`segmentation` + `segments_info`). `task`: how to read it (default:
    dict -> panoptic, map -> semantic). Pictures smaller than `min_size` are enlarged (nearest) for legibility.
    Legend rows: label (and score for segments) with the area as a percentage of the image, largest first.
    """
    image = image if isinstance(image, Image.Image) else Image.fromarray(_to_numpy(image).astype(np.uint8))
    image = image.convert("RGB")
    region_map, regions = _regions(result, id2label, task, ignore_index)
    if region_map.shape != (image.height, image.width):
        raise ValueError(
            f"draw: the segmentation is {region_map.shape[0]}x{region_map.shape[1]} but the image is "
            f"{image.height}x{image.width}; post-process with target_sizes=[(image.height, image.width)]"
        )
    scale = max(1, -(-min_size // min(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
        region_map = region_map.repeat(scale, 0).repeat(scale, 1)
    pixels = np.asarray(image).astype(np.float32)
    palette = np.array([colour for colour, _ in regions] + [(0, 0, 0)], dtype=np.float32)  # last: no region
    colours = palette[region_map]  # (H, W, 3); -1 picks the last row
    covered = (region_map >= 0)[..., None]
    blended = np.where(covered, (1 - alpha) * pixels + alpha * colours, pixels)
    blended[_outline(region_map)] = outline_colour
    picture = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
    if not legend:
        return picture
    total = region_map.size
    areas = np.bincount(region_map[region_map >= 0].ravel(), minlength=len(regions)) / total
    entries = [LegendEntry(colour, text, float(area)) for (colour, text), area in zip(regions, areas) if area > 0]
    entries.sort(key=lambda entry: -entry.area)
    font_size = max(12, min(24, picture.height // 24))
    panel = _legend(entries, picture.height, font_size, max_legend_entries)
    out = Image.new("RGB", (picture.width + panel.width, max(picture.height, panel.height)), (255, 255, 255))
    out.paste(picture, (0, 0))
    out.paste(panel, (picture.width, 0))
    return out


def grid(pictures: Sequence[Sequence[Image.Image]], titles: Sequence[str] | None = None, gap: int = 4) -> Image.Image:
    """Rows of pictures in a grid (each cell as wide as the widest picture of its column), with column
    titles on top."""
    columns = max(len(row) for row in pictures)
    widths = [max(row[c].width for row in pictures if c < len(row)) for c in range(columns)]
    heights = [max(picture.height for picture in row) for row in pictures]
    font_size = 16
    title_height = font_size + 12 if titles else 0
    out = Image.new(
        "RGB",
        (sum(widths) + gap * (columns - 1), title_height + sum(heights) + gap * (len(pictures) - 1)),
        "white",
    )
    canvas = ImageDraw.Draw(out)
    font = _font(font_size)
    for c, title in enumerate(titles or []):
        canvas.text((sum(widths[:c]) + gap * c + 4, 4), title, fill=(0, 0, 0), font=font)
    top = title_height
    for row, height in zip(pictures, heights):
        for c, picture in enumerate(row):
            out.paste(picture, (sum(widths[:c]) + gap * c, top))
        top += height + gap
    return out
