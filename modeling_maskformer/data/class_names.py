"""Class names from files (``id2label.json``, ADE's ``objectInfo150``). Under ``--label_convention ade`` a file whose
entry 0 is named like an ignored value (`IGNORED_CLASS_NAMES`) is keyed by pixel value (entry 0 dropped, entry k names
class k - 1); otherwise (``ade20k-id2label.json``, 0 = "wall") by class id. One log line says which."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from ..errors import InvalidInputError, MissingInputError
from .decoding import read_json

logger = logging.getLogger(__name__)

# Names of entry 0 that mark a file keyed by pixel value under ADE's convention.
IGNORED_CLASS_NAMES = frozenset(
    "background unlabeled unlabelled other others void ignore ignored none unknown".split()
)  # compared lower-case, without leading/trailing underscores or spaces


def parse_id2label(payload, source: str) -> dict[int, str]:
    """``{"0": "name", ...}`` -> ``{0: "name", ...}``, checked: keys 0..K-1, distinct non-empty names."""
    if not isinstance(payload, dict) or not payload:
        raise InvalidInputError(f'{source}: expected a non-empty JSON object {{"0": "class name", "1": ...}}')
    id2label = {}
    for key, name in payload.items():
        try:
            number = int(key)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{source}: key {key!r} is not a class id (an integer)") from None
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"{source}: the name of class {key} must be a non-empty string, got {name!r}")
        if number in id2label:
            raise InvalidInputError(f"{source}: class id {number} is given twice")
        id2label[number] = name
    missing = sorted(set(range(len(id2label))) - set(id2label))
    if missing:
        raise InvalidInputError(
            f"{source}: class ids must be contiguous 0..{len(id2label) - 1}; missing {missing[:10]}, "
            f"extra {sorted(set(id2label) - set(range(len(id2label))))[:10]}"
        )
    names = list(id2label.values())
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInputError(
            f"{source}: class name(s) {duplicates} are used for more than one id; names must be unique"
        )
    return dict(sorted(id2label.items()))


def read_id2label_file(path: str | Path) -> dict[int, str]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"id2label file {path} not found")
    return parse_id2label(read_json(path), str(path))


def read_id2label(root: Path, reduce_labels: bool = False) -> dict[int, str] | None:
    """A folder's ``id2label.json`` (under the label convention) or ADE's ``objectInfo150.{csv,txt}``, else None."""
    path = root / "id2label.json"
    if path.is_file():
        return names_for_convention(read_id2label_file(path), reduce_labels, str(path))
    for name in ("objectInfo150.csv", "objectInfo150.txt"):
        path = root / name
        if path.is_file():
            text = path.read_text()
            dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",\t")
            rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
            try:
                return {int(row["Idx"]) - 1: row["Name"].split(";")[0].split(",")[0].strip() for row in rows}
            except KeyError as error:
                raise InvalidInputError(f"{path}: expected columns Idx and Name, got {list(rows[0])}") from error
    return None


def names_for_convention(id2label: dict[int, str], reduce_labels: bool, source: str) -> dict[int, str]:
    """An id2label read from a file, as class ids 0..K-1 under the label convention (see the module docstring)."""
    if not reduce_labels:
        return id2label
    first = id2label[0]
    if first.strip().strip("_").strip().lower() in IGNORED_CLASS_NAMES:
        shifted = {key - 1: name for key, name in id2label.items() if key}
        if not shifted:
            raise InvalidInputError(
                f"{source}: only entry 0 ({first!r}), which ADE's convention ignores: no class is left"
            )
        logger.info(
            f"{source} is keyed by pixel value (entry 0 is {first!r}, the value --label_convention ade ignores): "
            f"entry 0 dropped, pixel k is class k-1 = entry k (class 0 = {shifted[0]!r}); {len(shifted)} classes"
        )
        return shifted
    logger.info(
        f"{source} is keyed by class id (entry 0 is {first!r}, not a name of an ignored value): with "
        f"--label_convention ade, pixel k is class k-1 = entry k-1 (pixel 1 = {first!r}); {len(id2label)} classes"
    )
    return id2label


def find_id2label(id2label, id2label_file, folder: Path | None, reduce_labels: bool) -> dict[int, str] | None:
    if id2label is not None:
        return id2label
    if id2label_file is not None:
        return names_for_convention(read_id2label_file(id2label_file), reduce_labels, str(id2label_file))
    return read_id2label(Path(folder), reduce_labels) if folder is not None else None


def check_palette_names(id2label, palette, where: str) -> None:
    if id2label is not None and dict(id2label) != palette.id2label:
        raise InvalidInputError(
            f"{where}: {palette.source} names the classes {list(palette.names)[:8]}, but id2label gives "
            f"{list(id2label.values())[:8]}; leave out --id2label (the palette names the classes)"
        )
