"""Hub-ready folders that load without this package: `save_pretrained` writes the Python files that
`trust_remote_code=True` needs, flattened into the folder, and an `auto_map` naming the classes.

The package spans three folders (`modeling_maskformer/` and its subpackages `configuration/` and
`image_processing/`); a Hub repository is flat, so first-party relative imports that reach into another
folder (`from .configuration.x import ...`, `from ..configuration.x import ...`) are rewritten to
`from .x import ...` on the way out. This module itself is part of the exported code, so a model loaded with
`trust_remote_code` saves a complete folder too.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

# Every module the model, config and processor import, by package.
REMOTE_CODE_FILES = {
    "modeling_maskformer.configuration": ["configuration_maskformer.py", "remote_code.py"],
    "modeling_maskformer": [
        "modeling_maskformer.py",
        "backbone.py",
        "pixel_decoder.py",
        "transformer_decoder.py",
        "attention.py",
        "matcher.py",
        "loss.py",
        "sampling.py",
        "hub.py",
    ],
    "modeling_maskformer.image_processing": [
        "image_processing_maskformer.py",
        "post_processing.py",
        "window_resampling.py",
        "validation.py",
    ],
}
IMAGE_PROCESSOR_REF = "image_processing_maskformer.MaskFormerImageProcessor"
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_maskformer.MaskFormerConfig",
    "AutoModel": "modeling_maskformer.MaskFormerModel",
    "AutoModelForInstanceSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoModelForUniversalSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoModelForImageSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoModelForSemanticSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoImageProcessor": IMAGE_PROCESSOR_REF,
}
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": IMAGE_PROCESSOR_REF}

# `from .x import`, `from ..configuration.x import`, `from .image_processing.x import`: the module is the last name.
_FIRST_PARTY_IMPORT = re.compile(r"^(\s*)from \.+(?:\w+\.)*(\w+) import", re.M)


def _source_file(package: str, name: str) -> Path:
    here = Path(__file__).resolve().parent
    flat = here / name  # already a flat remote-code folder
    if (here / "modeling_maskformer.py").is_file() and flat.is_file():
        return flat
    return Path(importlib.import_module(package).__file__).resolve().parent / name


def flatten_imports(source: str) -> str:
    """`from ..configuration.configuration_maskformer import X` -> `from .configuration_maskformer import X`."""
    return _FIRST_PARTY_IMPORT.sub(r"\1from .\2 import", source)


def write_remote_code(folder: str | Path) -> list[Path]:
    """Write the flattened modules into `folder`; returns the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for package, names in REMOTE_CODE_FILES.items():
        for name in names:
            target = folder / name
            source = _source_file(package, name)
            if source.resolve() != target.resolve():
                target.write_text(flatten_imports(source.read_text()))
            written.append(target)
    return written
