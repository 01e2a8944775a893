"""Procedural "shapes on landscapes" scenes, a dataset that needs no download: 2-3 textured stuff bands (sky, grass,
sand) under 1-6 thing shapes (with ``num_thing_classes``, thing c is shape c mod 6 in fill pattern c div 6). Item i is
a pure function of (seed, split, i); annotations equal the painted pixels, in COCO panoptic's formats."""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
from PIL import Image

from ..errors import InvalidInputError

Split = Literal["train", "validation"]

THING_CLASSES = ("circle", "square", "triangle", "star", "ellipse", "hexagon")
STUFF_CLASSES = ("sky", "grass", "sand")

# Things first, then stuff, like COCO panoptic; segment ids derive from category colours as in panopticapi.
_COLOURS = [[220, 20, 60], [119, 11, 32], [0, 0, 142], [250, 170, 30], [106, 0, 228], [0, 130, 120], [70, 130, 180]]
_COLOURS += [[107, 142, 35], [190, 153, 153]]
CATEGORIES: list[dict] = [
    {"id": i, "name": name, "isthing": int(i < len(THING_CLASSES)), "color": color}
    for i, (name, color) in enumerate(zip(THING_CLASSES + STUFF_CLASSES, _COLOURS))
]
# Fill patterns of the many-class scenes: (kind, period in px at image_size 128, angle in degrees); 0 = plain.
PATTERNS: tuple[tuple[str, float, float], ...] = (
    ("solid", 0, 0),
    *(("stripes", period, angle) for period in (4, 7, 12) for angle in (0, 45, 90, 135)),
    *(("checker", period, 0) for period in (4, 8, 12)),
    ("dots", 6, 0),
    ("dots", 10, 0),
    ("rings", 5, 0),
    ("rings", 9, 0),
    ("grid", 8, 0),
)
MAX_THING_CLASSES = len(THING_CLASSES) * len(PATTERNS)


def pattern_name(index: int) -> str:
    kind, period, angle = PATTERNS[index]
    return kind if kind == "solid" else f"{kind}{period:g}" + (f"-{angle:g}deg" if kind == "stripes" else "")


def make_categories(num_thing_classes: int | None) -> list[dict]:
    if num_thing_classes is None:
        return CATEGORIES
    palette = np.random.default_rng(_STREAM_TAG).integers(0, 256, (num_thing_classes, 3)).tolist()
    things = [
        {
            "id": c,
            "name": f"{THING_CLASSES[c % len(THING_CLASSES)]}-{pattern_name(c // len(THING_CLASSES))}",
            "isthing": 1,
            "color": palette[c],
        }
        for c in range(num_thing_classes)
    ]
    stuff = [{**category, "id": num_thing_classes + i} for i, category in enumerate(CATEGORIES[len(THING_CLASSES) :])]
    return things + stuff


_SPLIT_CODE = {"train": 0, "validation": 1}
_STREAM_TAG = 0x5EED


@dataclass
class SyntheticShapesConfig:
    """Generator settings; lengths are for ``image_size`` 128 and scale with it."""

    image_size: int = 128
    num_train: int = 1000
    num_val: int = 100
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 6
    min_radius: float = 14.0
    max_radius: float = 40.0
    min_visible_fraction: float = 0.5  # of an earlier shape's in-canvas area, when later ones cover it
    min_in_canvas_fraction: float = 0.6  # of a shape's full area
    noise_std: float = 6.0
    # "by_class" (the CPU demo): each thing class has its own hue band, so colour is a cue too.
    thing_colours: Literal["random", "by_class"] = "random"
    # None: the 6 shapes in plain fills; 1..126: that many (shape, fill pattern) thing classes.
    num_thing_classes: int | None = None

    def __post_init__(self):
        checks = {  # field: whether its value is in range
            "image_size": self.image_size >= 32,
            "num_train": self.num_train >= 0,
            "num_val": self.num_val >= 0,
            "min_objects": 0 <= self.min_objects <= self.max_objects,
            "max_objects": 0 <= self.max_objects <= 20,
            "min_radius": 2 <= self.min_radius <= self.max_radius,
            "max_radius": self.max_radius <= self.image_size,
            "min_visible_fraction": 0.0 < self.min_visible_fraction <= 1.0,
            "min_in_canvas_fraction": 0.0 < self.min_in_canvas_fraction <= 1.0,
            "noise_std": self.noise_std >= 0,
            "thing_colours": self.thing_colours in ("random", "by_class"),
            "num_thing_classes": self.num_thing_classes is None
            or (isinstance(self.num_thing_classes, int) and 1 <= self.num_thing_classes <= MAX_THING_CLASSES),
        }
        for name, ok in checks.items():
            if not ok:
                hint = f" (1..{MAX_THING_CLASSES} or None)" if name == "num_thing_classes" else ""
                raise InvalidInputError(f"SyntheticShapesConfig.{name}={getattr(self, name)!r} is out of range{hint}")


# Geometry: boolean masks of shapes over the pixel grid (pixel centres at +0.5). NOTE: by hand, not PIL's ImageDraw,
# so that the demo's recorded scenes (and results) stay the same.


def _polygon_mask(vertices: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of every pixel; vertices (V, 2) as (x, y)."""
    inside = np.zeros(xx.shape, dtype=bool)
    for (xi, yi), (xj, yj) in zip(vertices, np.roll(vertices, -1, axis=0)):
        if yi == yj:  # a horizontal edge never crosses a horizontal ray
            continue
        crosses = (yi > yy) != (yj > yy)
        x_at_y = (xj - xi) * (yy - yi) / (yj - yi) + xi
        inside ^= crosses & (xx < x_at_y)
    return inside


def _shape_mask(name: str, cx, cy, r, rotation, aspect, xx, yy) -> tuple[np.ndarray, float]:
    if name in ("circle", "ellipse"):
        b = r * (aspect if name == "ellipse" else 1.0)
        cos, sin = math.cos(rotation), math.sin(rotation)
        u = (xx - cx) * cos + (yy - cy) * sin
        v = -(xx - cx) * sin + (yy - cy) * cos
        return (u / r) ** 2 + (v / b) ** 2 <= 1.0, math.pi * r * b
    radii = {
        "square": np.full(4, r),
        "triangle": np.full(3, r * 1.15),
        "hexagon": np.full(6, r),
        "star": np.tile([r * 1.1, r * 0.5], 5),
    }[name]
    angles = rotation + 2 * np.pi * np.arange(len(radii)) / len(radii)
    x, y = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    shoelace = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return _polygon_mask(np.stack([x, y], axis=1), xx, yy), shoelace


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR))


def _stuff_texture(name: str, rng: np.random.Generator, xx, yy, size: int) -> np.ndarray:
    if name == "sky":  # blue, vertical gradient towards white, soft clouds
        base = np.array([80, 140, 225]) + rng.normal(0, 12, 3)
        gradient = rng.uniform(0.2, 0.5) * (yy / size)[..., None]
        clouds = np.clip(_smooth_noise(rng, size, rng.integers(3, 7)), 0, 1)[..., None] * rng.uniform(20, 50)
        return base * (1 - gradient) + 255 * gradient + clouds
    if name == "grass":  # green, blotches and vertical blades
        base = np.array([60, 145, 50]) + rng.normal(0, 12, 3)
        blotches = _smooth_noise(rng, size, rng.integers(6, 14))[..., None] * rng.uniform(15, 30)
        blades = np.sin(2 * np.pi * xx / rng.uniform(2.5, 6) + rng.uniform(0, 6.3))[..., None] * rng.uniform(5, 15)
        return base + blotches + blades * np.array([0.4, 1.0, 0.3])
    if name == "sand":  # tan, oblique ripples and speckle
        base = np.array([205, 175, 120]) + rng.normal(0, 12, 3)
        angle = rng.uniform(0, np.pi)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / rng.uniform(4, 10)
        ripples = np.sin(2 * np.pi * phase)[..., None] * rng.uniform(8, 20)
        speckle = rng.normal(0, 10, xx.shape)[..., None]
        return base + ripples + speckle
    raise ValueError(f"unknown stuff class {name!r}")


def _thing_colour(rng: np.random.Generator, background: np.ndarray, class_id: int, mode: str, num_things: int):
    """A colour ~80 (RGB distance) away from `background`, within 20 tries."""

    def draw() -> np.ndarray:
        if mode == "random":
            return rng.uniform(0, 255, 3)
        hue = (class_id / num_things + rng.uniform(-0.03, 0.03)) % 1.0  # the class's hue band
        saturation, value = rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0)
        return np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255

    colour = draw()
    for _ in range(20):
        if np.linalg.norm(colour - background) >= 80:
            break
        colour = draw()
    return colour


def _pattern(index: int, rng: np.random.Generator, xx, yy, cx: float, cy: float, scale: float) -> np.ndarray:
    kind, period, angle = PATTERNS[index]
    period *= scale
    phase_x, phase_y = rng.uniform(0, period, 2)
    u, v = xx + phase_x, yy + phase_y
    if kind == "stripes":
        theta = math.radians(angle)
        return ((u * math.cos(theta) + v * math.sin(theta)) % period) < period / 2
    if kind == "checker":
        return ((u // (period / 2)) + (v // (period / 2))) % 2 == 1
    if kind == "dots":
        return ((u % period - period / 2) ** 2 + (v % period - period / 2) ** 2) <= (0.3 * period) ** 2
    if kind == "rings":
        return (np.hypot(xx - cx, yy - cy) % period) < period / 2
    if kind == "grid":
        return ((u % period) < 0.3 * period) | ((v % period) < 0.3 * period)
    raise ValueError(f"unknown pattern {kind!r}")


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic PNG array -> (H, W) int32 segment ids (R + 256 G + 256^2 B)."""
    rgb = np.asarray(rgb).astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 COCO panoptic PNG array."""
    ids = np.asarray(ids).astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _new_segment_id(rng: np.random.Generator, color, used: set[int], jitter: int) -> int:
    """A segment id from a category colour, jittered until unique (like panopticapi)."""
    color = np.asarray(color)
    for _ in range(1000):
        rgb = np.clip(color + (rng.integers(-jitter, jitter + 1, 3) if jitter else 0), 0, 255)
        segment_id = int(rgb[0] + 256 * rgb[1] + 65536 * rgb[2])
        if segment_id != 0 and segment_id not in used:
            used.add(segment_id)
            return segment_id
        jitter = max(jitter, 8)
    raise RuntimeError("could not draw a unique segment id")  # unreachable with <= 30 segments


def segments_from_ids(ids: np.ndarray, segment_category: dict[int, int]) -> list[dict]:
    segments = []
    for segment_id, category_id in segment_category.items():
        mask = ids == segment_id
        area = int(mask.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        bbox = [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]
        segments.append({"id": segment_id, "category_id": category_id, "iscrowd": 0, "area": area, "bbox": bbox})
    return segments


def generate_scene(rng: np.random.Generator, config: SyntheticShapesConfig):
    """One scene -> (image uint8 (H, W, 3), semantic uint8 (H, W), ids int32 (H, W), segments_info)."""
    size = config.image_size
    scale = size / 128
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    categories = make_categories(config.num_thing_classes)
    num_things = len(THING_CLASSES) if config.num_thing_classes is None else config.num_thing_classes
    used_ids: set[int] = set()

    # Stuff: 2-3 bands of distinct classes separated by smooth wavy boundaries y = b_k(x).
    num_regions = int(rng.integers(2, 4))
    region_classes = rng.permutation(len(STUFF_CLASSES))[:num_regions]
    x = np.arange(size) + 0.5
    boundaries = []
    min_gap = 0.15 * size
    for k in range(1, num_regions):
        base = size * k / num_regions + rng.uniform(-0.08, 0.08) * size
        wave = sum(
            rng.uniform(0, 0.06) * size * np.sin(2 * np.pi * rng.uniform(0.5, 2.5) * x / size + rng.uniform(0, 6.3))
            for _ in range(2)
        )
        tilt = rng.uniform(-0.15, 0.15) * (x - size / 2)
        boundary = np.clip(base + wave + tilt, min_gap * k, size - min_gap * (num_regions - k))
        if boundaries:
            boundary = np.maximum(boundary, boundaries[-1] + min_gap)
        boundaries.append(boundary)
    region = sum((ys >= b[None, :]).astype(np.int64) for b in boundaries) if boundaries else np.zeros_like(ys)

    image = np.zeros((size, size, 3), dtype=np.float32)
    ids = np.zeros((size, size), dtype=np.int32)
    segment_category: dict[int, int] = {}
    for k, stuff_index in enumerate(region_classes):
        mask = region == k
        category = categories[num_things + stuff_index]
        image[mask] = _stuff_texture(STUFF_CLASSES[stuff_index], rng, xs, ys, size)[mask]
        segment_id = _new_segment_id(rng, category["color"], used_ids, jitter=0)
        ids[mask] = segment_id
        segment_category[segment_id] = category["id"]

    # Things: rejection-sample shapes so that every earlier shape stays mostly visible.
    target = int(rng.integers(config.min_objects, config.max_objects + 1))
    visible: list[np.ndarray] = []
    in_canvas_areas: list[int] = []
    for attempt in range(8 * target + 200):
        # Give up on the target count after 8 tries per shape, but keep going until min_objects.
        if len(visible) == target or (attempt >= 8 * target and len(visible) >= config.min_objects):
            break
        class_id = int(rng.integers(num_things))
        r = rng.uniform(config.min_radius, config.max_radius) * scale
        cx, cy = rng.uniform(0, size, 2)
        shape = THING_CLASSES[class_id % len(THING_CLASSES)]
        mask, full_area = _shape_mask(shape, cx, cy, r, rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.6), xs, ys)
        area = int(mask.sum())
        if area < config.min_in_canvas_fraction * full_area or area < 4:
            continue
        kept = [v & ~mask for v in visible]
        if any(k.sum() < config.min_visible_fraction * a for k, a in zip(kept, in_canvas_areas)):
            continue
        visible = kept + [mask]
        in_canvas_areas.append(area)

        background = image[mask].mean(axis=0)
        colour = _thing_colour(rng, background, class_id, config.thing_colours, num_things)
        # A gentle linear shading across the shape, so things are not flat fills.
        angle = rng.uniform(0, 2 * np.pi)
        shade = ((xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)) / r * rng.uniform(0, 25)
        image[mask] = colour + shade[mask][:, None]
        pattern = class_id // len(THING_CLASSES)
        if pattern:  # the second colour, away from the first, where the pattern says
            second = _thing_colour(rng, colour, class_id, "random", num_things)
            painted = mask & _pattern(pattern, rng, xs, ys, cx, cy, scale)
            image[painted] = second + shade[painted][:, None]
        segment_id = _new_segment_id(rng, categories[class_id]["color"], used_ids, jitter=30)
        ids[mask] = segment_id
        segment_category[segment_id] = class_id

    image += rng.normal(0, config.noise_std, image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    segments_info = segments_from_ids(ids, segment_category)
    semantic = np.full((size, size), 255, dtype=np.uint8)
    for segment in segments_info:
        semantic[ids == segment["id"]] = segment["category_id"]
    return image, semantic, ids, segments_info


class SyntheticShapes:
    """Map-style dataset of scenes; ``image_size`` and ``seed`` override the config's."""

    categories = CATEGORIES
    id2label = {c["id"]: c["name"] for c in CATEGORIES}
    thing_ids = [c["id"] for c in CATEGORIES if c["isthing"]]
    ignore_index = 255

    def __init__(
        self,
        split: Split = "train",
        num_images: int | None = None,
        image_size: int | None = None,
        seed: int | None = None,
        *,
        config: SyntheticShapesConfig | None = None,
    ):
        if split not in _SPLIT_CODE:
            raise InvalidInputError(f"split must be one of {list(_SPLIT_CODE)}, got {split!r}")
        overrides = {k: v for k, v in {"image_size": image_size, "seed": seed}.items() if v is not None}
        self.config = config = SyntheticShapesConfig(**{**vars(config or SyntheticShapesConfig()), **overrides})
        self.split = split
        if config.num_thing_classes is not None:  # otherwise the class attributes (the 6 shapes)
            self.categories = make_categories(config.num_thing_classes)
            self.id2label = {c["id"]: c["name"] for c in self.categories}
            self.thing_ids = [c["id"] for c in self.categories if c["isthing"]]
        default = config.num_train if split == "train" else config.num_val
        self.num_images = default if num_images is None else num_images
        if self.num_images < 0:
            raise InvalidInputError(f"num_images must be >= 0, got {self.num_images}")

    def __len__(self) -> int:
        return self.num_images

    def rng(self, index: int) -> np.random.Generator:
        spawn_key = (_STREAM_TAG, _SPLIT_CODE[self.split], index)
        return np.random.default_rng(np.random.SeedSequence(self.config.seed, spawn_key=spawn_key))

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        image, semantic, ids, segments_info = generate_scene(self.rng(index), self.config)
        return {
            "image": Image.fromarray(image),
            "semantic": semantic,
            "panoptic": id_to_rgb(ids),
            "segments_info": segments_info,
            "image_id": f"{self.split}_{index:06d}",
        }

    def to_hf_dataset(self, kind: Literal["semantic", "panoptic"] = "semantic"):
        """A ``datasets.Dataset`` with the Hub's usual columns: scene_parse_150's (ADE's convention) or COCO panoptic's."""
        if kind not in ("semantic", "panoptic"):
            raise InvalidInputError(f"kind must be 'semantic' or 'panoptic', got {kind!r}")
        items = [self[i] for i in range(len(self))]
        columns = {"image": [item["image"] for item in items]}
        features = {"image": datasets.Image()}
        if kind == "semantic":
            columns["annotation"] = [Image.fromarray(_to_ade_annotation(item["semantic"])) for item in items]
            features["annotation"] = datasets.Image()
        else:
            columns["label"] = [Image.fromarray(item["panoptic"]) for item in items]
            columns["segments_info"] = [item["segments_info"] for item in items]
            columns["image_id"] = [item["image_id"] for item in items]
            integer = datasets.Value("int64")
            names = [c["name"] for c in self.categories]
            segment = {"id": integer, "category_id": datasets.ClassLabel(names=names), "iscrowd": integer}
            segment.update(area=integer, bbox=datasets.List(integer))
            features.update(
                label=datasets.Image(), segments_info=datasets.List(segment), image_id=datasets.Value("string")
            )
        return datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    def export_ade_folder(self, root: str | Path) -> Path:
        """This split as an ADE folder (ADE's convention: class id + 1, 0 = other) with ``root/id2label.json``."""
        root = Path(root)
        folder = {"train": "training", "validation": "validation"}[self.split]
        image_dir, annotation_dir = root / "images" / folder, root / "annotations" / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        annotation_dir.mkdir(parents=True, exist_ok=True)
        for item in map(self.__getitem__, range(len(self))):
            item["image"].save(image_dir / f"{item['image_id']}.jpg", quality=95)
            Image.fromarray(_to_ade_annotation(item["semantic"])).save(annotation_dir / f"{item['image_id']}.png")
        (root / "id2label.json").write_text(json.dumps({str(k): v for k, v in self.id2label.items()}, indent=1))
        return root

    def export_coco_panoptic_folder(self, root: str | Path) -> Path:
        """This split as a COCO panoptic folder (``{train,val}2017/``, ``annotations/panoptic_{train,val}2017*``)."""
        root = Path(root)
        coco_split = {"train": "train2017", "validation": "val2017"}[self.split]
        image_dir, png_dir = root / coco_split, root / "annotations" / f"panoptic_{coco_split}"
        image_dir.mkdir(parents=True, exist_ok=True)
        png_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i, item in enumerate(map(self.__getitem__, range(len(self)))):
            stem = item["image_id"]
            item["image"].save(image_dir / f"{stem}.jpg", quality=95)
            Image.fromarray(item["panoptic"]).save(png_dir / f"{stem}.png")
            images.append(
                {"id": i, "file_name": f"{stem}.jpg", "height": item["image"].height, "width": item["image"].width}
            )
            annotations.append({"image_id": i, "file_name": f"{stem}.png", "segments_info": item["segments_info"]})
        payload = {"images": images, "annotations": annotations, "categories": self.categories}
        (root / "annotations" / f"panoptic_{coco_split}.json").write_text(json.dumps(payload))
        return root


def _to_ade_annotation(semantic: np.ndarray) -> np.ndarray:
    return np.where(semantic == 255, 0, semantic.astype(np.int32) + 1).astype(np.uint8)
