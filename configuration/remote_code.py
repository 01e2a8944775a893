"""Hub-ready folders that load without this package: `HubFolderMixin` writes the Python files `trust_remote_code=True`
needs next to the JSON whenever the config, the model or the image processor is saved.

The files are the first-party modules reachable by imports from the modules `auto_map` names. A Hub repository is
flat, so each relative import is rewritten to `from .x import`: module file names must be unique across the
package, and first-party code is imported from its module, not from a package `__init__` (both checked).
NOTE: transformers' `custom_object_save` copies files verbatim from the first module's folder, so it covers neither.
NOTE: `auto_map` lives in `config.json` only: transformers 5.24's `AutoVideoProcessor` (tried by the pipeline)
turns an `auto_map.AutoImageProcessor` in `preprocessor_config.json` into a "run the custom code?" prompt.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

# NOTE: every segmentation Auto class the pipeline may try (the package registers the same ones): an unregistered one
# resolves our config by its class name, "MaskFormerConfig", to transformers' own MaskFormer.
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_maskformer.MaskFormerConfig",
    "AutoModel": "modeling_maskformer.MaskFormerModel",
    "AutoModelForInstanceSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoModelForUniversalSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoModelForImageSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoModelForSemanticSegmentation": "modeling_maskformer.MaskFormerForInstanceSegmentation",
    "AutoImageProcessor": "image_processing_maskformer.MaskFormerHFImageProcessor",
}
# The per-pixel baseline's folders (model_type "maskformer-per-pixel"): semantic segmentation only.
PER_PIXEL_AUTO_MAP = {
    "AutoConfig": "configuration_per_pixel.PerPixelBaselineConfig",
    "AutoModel": "per_pixel.PerPixelBaselineModel",
    "AutoModelForSemanticSegmentation": "per_pixel.PerPixelBaselineForSemanticSegmentation",
    "AutoImageProcessor": "image_processing_maskformer.MaskFormerHFImageProcessor",
}
# The modules defining the classes above, relative to the installed top-level package.
_ENTRY_MODULES = (
    "configuration.configuration_maskformer",
    "configuration.configuration_per_pixel",
    "modeling_maskformer",
    "paper.per_pixel",
    "image_processing.image_processing_maskformer",
)
# Keyword arguments of `save_pretrained(..., push_to_hub=True)` that belong to the upload.
PUSH_KWARGS = ("repo_id", "token", "private", "commit_message", "create_pr", "revision")


def _entry_modules() -> list[str]:
    package = __name__.rpartition(".")[0]
    if package.rpartition(".")[2] == "configuration":  # the installed package
        top = package.rpartition(".")[0]
        return [f"{top}.{name}" for name in _ENTRY_MODULES]
    # A flat remote-code folder (loaded with trust_remote_code): the modules transformers copied next to this one.
    flat = [f"{package}.{name.rpartition('.')[2]}" for name in _ENTRY_MODULES]
    return [name for name in flat if importlib.util.find_spec(name) is not None]


def _relative_imports(tree: ast.AST, module: str) -> list[tuple[ast.ImportFrom, list[str]]]:
    """Each relative `from ... import` of `module` and the first-party modules it loads."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), module.rpartition(".")[0])
        # `from . import x`: x must be a module
        found.append((node, [f"{base}.{alias.name}" for alias in node.names] if node.module is None else [base]))
    return found


def _module_file(name: str, importer: str) -> Path:
    """The file of module `name`; refuses a package (remote code is flat)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"{importer}: relative import of {name!r}, which is not a module")
    if spec.submodule_search_locations is not None:
        raise ImportError(
            f"{importer}: imports from the package {name!r}; remote code is flat, so import from the module that "
            "defines the name"
        )
    return Path(spec.origin)


def remote_code_modules() -> dict[str, str]:
    """Flat file name -> module name, for every first-party module the config, model and processor import."""
    modules: dict[str, str] = {}
    queue = [(module, module) for module in _entry_modules()]  # (module, the file importing it)
    while queue:
        module, importer = queue.pop()
        path = _module_file(module, importer=importer)
        flat = module.rpartition(".")[2] + ".py"
        if flat in modules:
            if modules[flat] != module:
                raise ImportError(f"remote code is flat, but {modules[flat]} and {module} are both {flat}")
            continue
        modules[flat] = module
        for _, targets in _relative_imports(ast.parse(path.read_text()), module):
            queue.extend((target, str(path)) for target in targets)
    return modules


def flatten_imports(source: str, module: str) -> str:
    """Rewrite every relative import in `module`'s source to `from .<module> import` (a flat folder)."""
    lines = source.splitlines(keepends=True)
    found = _relative_imports(ast.parse(source), module)
    # Right to left, so that a rewrite never shifts the position of one still to do.
    for node, targets in sorted(found, key=lambda item: (item[0].lineno, item[0].col_offset), reverse=True):
        row, start = node.lineno - 1, node.col_offset
        line = lines[row]
        end = line.index(" import", start) + len(" import")
        head = "from . import" if node.module is None else f"from .{targets[0].rpartition('.')[2]} import"
        lines[row] = line[:start] + head + line[end:]
    return "".join(lines)


def write_remote_code(folder: str | Path) -> None:
    """Write the flattened modules into `folder` (a file already there with the same text is left alone)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for flat, module in sorted(remote_code_modules().items()):
        target = Path(folder) / flat
        text = flatten_imports(_module_file(module, importer=module).read_text(), module)
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)


TRANSFORMERS_MODEL_TYPE = "maskformer"  # transformers' own MaskFormer, as in a native folder's config.json


def folder_model_type(folder: str | Path) -> str | None:
    """model_type in a local folder's config.json (None without one, or when it cannot be read)."""
    config_file = Path(folder) / "config.json"
    try:
        return json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def mark_processor_config(folder: str | Path) -> None:
    """Name transformers' `MaskFormerImageProcessor` in a native folder's preprocessor_config.json (if any): it
    reads every setting of ours (docs/api.md, drop-in)."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return
    settings = json.loads(path.read_text())
    settings.pop("auto_map", None)
    settings["image_processor_type"] = "MaskFormerImageProcessor"
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


class HubFolderMixin:
    """`save_pretrained` that also writes the flattened remote code (and `auto_map` when set); `push_to_hub=True`
    uploads after that, through the class's own `push_to_hub`."""

    remote_auto_map: dict[str, str] | None = None  # written into this object's JSON when set

    def save_pretrained(self, save_directory, *args: Any, push_to_hub: bool = False, **kwargs: Any):
        push_kwargs = {key: kwargs.pop(key) for key in PUSH_KWARGS if key in kwargs} if push_to_hub else {}
        if self.remote_auto_map is not None:
            self.auto_map = dict(self.remote_auto_map)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        # NOTE: a processor saved next to a transformers-native model (transformers_folder.py) needs no code,
        # and its preprocessor_config.json names transformers' processor class.
        if folder_model_type(save_directory) == TRANSFORMERS_MODEL_TYPE:
            mark_processor_config(save_directory)
        elif kwargs.get("is_main_process", True):
            write_remote_code(save_directory)
        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", None) or Path(save_directory).resolve().name
            self.push_to_hub(repo_id, **push_kwargs)
        return result
