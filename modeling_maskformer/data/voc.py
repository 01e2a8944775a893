"""VOC-layout folders (``JPEGImages/``, ``SegmentationClass/``, optional ``ImageSets/Segmentation/<subset>.txt`` and
``labelmap.txt``): Pascal VOC, CVAT's "Segmentation mask 1.1" export and others. Masks are read by colour with a
palette or ``labelmap.txt``, else as class indices named by a file or, for Pascal VOC itself, VOC's 21 names."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import InvalidInputError, MissingInputError
from .class_names import check_palette_names, find_id2label, names_for_convention
from .dataset import SegmentationDataset, SegmentationItem
from .decoding import (
    IMAGE_SUFFIXES,
    INDEX_MODES,
    LOSSY_LABEL_SUFFIXES,
    PALETTE_HINT,
    decode_semantic,
    open_image,
    open_rgb,
    refuse_lossy,
    warn_if_binary,
)
from .palette import VOC_CLASSES, Palette, read_labelmap, read_palette, voc_colormap
from .splits import WHOLE, RecordedHoldOut, plan_split

logger = logging.getLogger(__name__)

_VOC_FOLDER = re.compile(r"VOC20(0[7-9]|1[0-2])")


class MaskPairsDataset(SegmentationDataset):
    """(image, semantic mask) file pairs; masks by colour with a ``palette`` (``colour_only``: every mask, else
    colour masks only)."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        ids: list[str] | None = None,
        *,
        palette: Palette | None = None,
        colour_only: bool = True,
        **metadata,
    ):
        super().__init__(records=pairs, **metadata)
        self.palette, self.colour_only = palette, colour_only
        self.ids = ids if ids is not None else [image.stem for image, _ in pairs]
        if palette is not None:  # colour masks: the palette names the classes, no convention applies
            self.convention_from = f"the colours of {palette.source}"

    def _source(self, index: int) -> str:
        return str(self.records[index][1])

    def _load(self, index: int) -> SegmentationItem:
        image_path, mask_path = self.records[index]
        mask = open_image(mask_path)
        by_colour = self.palette is not None and (self.colour_only or mask.mode not in INDEX_MODES)
        semantic = decode_semantic(
            mask,
            reduce_labels=self.reduce_labels,
            ignore_index=self.ignore_index,
            source=str(mask_path),
            palette=self.palette if by_colour else None,
        )
        image = open_rgb(image_path, decode=self.decode_images)
        return {"image": image, "semantic": semantic, "image_id": self.ids[index]}


def is_voc_folder(root: Path) -> bool:
    return (root / "SegmentationClass").is_dir()


def _subsets(root: Path) -> dict[str, list[str]]:
    return {
        path.stem: [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for path in sorted((root / "ImageSets" / "Segmentation").glob("*.txt"))
    }


def _files_by_id(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    return {
        p.relative_to(folder).with_suffix("").as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in suffixes and p.is_file()
    }


def _pairs(root: Path, ids: list[str]) -> list[tuple[Path, Path]]:
    masks = _files_by_id(root / "SegmentationClass", (".png", *LOSSY_LABEL_SUFFIXES))
    refuse_lossy(None, "masks", [masks[i] for i in ids if i in masks])
    missing = [i for i in ids if i not in masks]
    if missing:
        raise MissingInputError(
            f"VOC folder {root}: {len(missing)} listed id(s) without a mask in "
            f"{root / 'SegmentationClass'}, e.g. {missing[0]}.png"
        )
    image_dir = root / "JPEGImages"
    if not image_dir.is_dir() or not any(image_dir.iterdir()):
        raise MissingInputError(
            f"VOC folder {root}: no images in {image_dir}. CVAT writes them only when 'Save "
            f"images' is ticked in the export dialog: export again with it, or copy the images "
            f"there (named like the masks)"
        )
    images = _files_by_id(image_dir, IMAGE_SUFFIXES)
    missing = [i for i in ids if i not in images]
    if missing:
        raise MissingInputError(
            f"VOC folder {root}: {len(missing)} mask(s) without an image in {image_dir}, e.g. "
            f"{missing[0]} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return [(images[i], masks[i]) for i in ids]


def _is_pascal_voc(root: Path, first_mask: Image.Image) -> bool:
    if not _VOC_FOLDER.fullmatch(root.name) or first_mask.mode != "P":
        return False
    palette = first_mask.getpalette() or []
    return palette[: 3 * len(VOC_CLASSES)] == voc_colormap(len(VOC_CLASSES)).reshape(-1).tolist()


def load_voc_folder(
    root: str | Path,
    split: str = "train",
    *,
    palette: str | Path | Palette | None = None,
    reduce_labels: bool | None = None,
    ignore_index: int = 255,
    id2label: dict[int, str] | None = None,
    id2label_file: str | Path | None = None,
    train_val_split: float | RecordedHoldOut | None = None,
    thing_ids: Sequence[int] | None = None,
) -> MaskPairsDataset:
    root = Path(root)
    if not is_voc_folder(root):
        raise MissingInputError(f"VOC folder {root}: missing folder {root / 'SegmentationClass'}")
    where = f"VOC folder {root}"
    subsets = _subsets(root) or {
        WHOLE: sorted(_files_by_id(root / "SegmentationClass", (".png", *LOSSY_LABEL_SUFFIXES)))
    }
    plan = plan_split(split, list(subsets), train_val_split, where)
    ids = subsets[plan.subset]
    held_out = plan.held_out(len(ids))
    ids = [ids[i] for i in plan.select(len(ids))]
    if not ids:
        raise InvalidInputError(f"{where}: split {split!r} has no items")
    pairs = _pairs(root, ids)
    common = {"ignore_index": ignore_index, "held_out": held_out}

    colour_only = palette is not None
    if isinstance(palette, (str, Path)):
        palette = read_palette(palette)
    labelmap = root / "labelmap.txt"
    if palette is None and labelmap.is_file():
        palette = read_labelmap(labelmap)
        if id2label is None:  # NOTE: a run's evaluation split gets the training split's classes: said once
            names = ", ".join(palette.names[:6]) + (", ..." if len(palette.names) > 6 else "")
            logger.info(
                f"{where}: CVAT/Datumaro 'Segmentation mask' export: {len(palette.names)} classes from {labelmap} "
                f"({names})"
            )
    elif colour_only and labelmap.is_file():
        logger.info("%s: reading the masks with %s, not with %s", where, palette.source, labelmap)
    with Image.open(pairs[0][1]) as first:
        first_mode = first.mode
        pascal_voc = palette is None and _is_pascal_voc(root, first)

    if palette is not None and (colour_only or first_mode not in INDEX_MODES):
        if reduce_labels:
            raise InvalidInputError(
                f"{where}: colour masks name their classes through {palette.source}; "
                f"--label_convention ade does not apply (list a colour under __ignore__ to ignore it)"
            )
        check_palette_names(find_id2label(id2label, id2label_file, None, False), palette, where)
        metadata = {"id2label": palette.id2label, "thing_ids": thing_ids or (), "reduce_labels": False}
        return MaskPairsDataset(pairs, ids, palette=palette, colour_only=colour_only, **metadata, **common)

    if first_mode not in INDEX_MODES:
        raise InvalidInputError(
            f"{pairs[0][1]}: colour mask (mode {first_mode}) and no labelmap.txt in {root}: {PALETTE_HINT}"
        )
    fixed_by_format, reduce_labels = reduce_labels is None, bool(reduce_labels)  # None: VOC's format fixes it
    warn_if_binary([m for _, m in pairs], reduce_labels=reduce_labels, ignore_index=ignore_index, source=where)
    things: Sequence[int] = thing_ids or ()
    if id2label is None and palette is not None:  # labelmap.txt with single-channel masks: its order
        id2label = names_for_convention(palette.id2label, reduce_labels, str(palette.source))
    id2label = find_id2label(id2label, id2label_file, root, reduce_labels)
    if pascal_voc:
        voc_names = names_for_convention(dict(enumerate(VOC_CLASSES)), reduce_labels, "Pascal VOC's classes")
        if id2label is None:
            logger.info(
                f"{where}: Pascal VOC (a folder named like VOC2012 whose masks carry VOC's palette): its "
                f"{len(voc_names)} classes"
            )
            id2label = voc_names
        if id2label == voc_names:  # the 20 object classes are things, background is stuff
            things = thing_ids or [i for i, name in id2label.items() if name != "background"]
    if id2label is None:
        raise InvalidInputError(
            f"{where}: no class names (no labelmap.txt or id2label.json, and not Pascal VOC itself: a "
            f"folder named VOC2007..VOC2012 whose masks carry VOC's palette); pass --id2label FILE "
            f'(JSON {{"0": "background", "1": "cat", ...}})'
        )
    dataset = MaskPairsDataset(pairs, ids, id2label=id2label, thing_ids=things, reduce_labels=reduce_labels, **common)
    if fixed_by_format:  # said once per run, in the data line (training) or by the caller
        dataset.convention_from = "VOC's format (255 = void)"
    return dataset
