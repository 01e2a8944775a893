"""What batch prediction reads: the image files that files, folders (their subfolders too with `recursive`; hidden
names left out) and glob patterns (expanded here, so also quoted; `**` for any depth) name, sorted within each input,
inputs in the order given, each file once; their output names; the images themselves.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidInputError, MissingInputError

# Extensions of the formats PIL can open (not those it can only write, such as .pdf).
IMAGE_EXTENSIONS = frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


class UnreadableImageError(Exception):
    """A file PIL cannot decode; batch prediction reports it and goes on."""


def _images(candidates: Iterable[Path], root: Path | None, exclude: list[Path]) -> list[Path]:
    return sorted(
        path
        for path in candidates
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not (root and any(part.startswith(".") for part in path.relative_to(root).parts))
        and path.is_file()
        and not any(path.resolve().is_relative_to(folder) for folder in exclude)
    )


def expand_inputs(
    inputs: Iterable[str | os.PathLike], *, recursive: bool = False, exclude: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """The image files that `inputs` name, none inside the folders `exclude` (the output folder); a folder without
    images, a pattern matching none or a missing path is a user error naming it."""
    exclude = [Path(folder).resolve() for folder in exclude]
    paths, seen = [], set()
    for given in inputs:
        text = str(given)
        path = Path(text).expanduser()
        if path.is_dir():
            found = _images(path.rglob("*") if recursive else path.iterdir(), path, exclude)
            if not found:
                subfolders = not recursive and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
                hint = "; its subfolders are searched with --recursive" if subfolders else ""
                raise InvalidInputError(
                    f"{text}: no image files in this folder (extensions PIL reads, e.g. .jpg, .png){hint}"
                )
        elif path.is_file():
            found = [path]
        elif any(character in text for character in "*?["):
            found = _images(map(Path, glob.glob(os.path.expanduser(text), recursive=True)), None, exclude)
            if not found:
                raise InvalidInputError(f"{text}: the pattern matches no image files")
        elif path.exists():
            raise InvalidInputError(f"{text}: neither a file nor a folder")
        else:
            raise MissingInputError(f"{text}: no such file or folder")
        for image in found:
            if (resolved := image.resolve()) not in seen:
                seen.add(resolved)
                paths.append(image)
    if not paths:
        raise InvalidInputError("no input images given")
    return paths


def output_names(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """Per path, (file_name, key): its path relative to the deepest folder holding every path, and that without its
    suffix (kept where two files differ only by it), made unique."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    names = [p.relative_to(root).as_posix() for p in absolute]
    stems = [name.removesuffix(Path(name).suffix) for name in names]
    counts = Counter(stems)
    keys, used = [], set()
    for name, stem in zip(names, stems):
        key = stem if counts[stem] == 1 else name
        while key in used:  # only for contrived names (`a.jpg` beside `a.jpg.png` and `a.jpg.gif`)
            key += "_"
        used.add(key)
        keys.append(key)
    return list(zip(names, keys))


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path` as RGB, EXIF orientation applied (as transformers' `load_image`)."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImageError("not an image (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"cannot decode it ({type(error).__name__}: {error})") from None
