"""Repository layout: one import name, scripts that shadow nothing, no `sys.path` edits, every subpackage in
the wheel."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SKIP_DIRS = {".venv", ".git", "build", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache"}
# Old script-side modules and the generic folder names: importing any of them at top level means code reaches
# past the installed package (or into scripts/).
FORBIDDEN_TOP_LEVEL = {
    "configuration",
    "image_processing",
    "data",
    "metrics",
    "synthetic",
    "train",
    "benchmark",
}


def python_files() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*.py")
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts) and ".egg-info" not in str(path)
    ]


def test_scripts_shadow_no_module_or_distribution():
    assert all(Path(p or ".").resolve() != SCRIPTS for p in sys.path), "scripts/ must not be on sys.path"
    clashes = []
    for script in sorted(SCRIPTS.glob("*.py")):
        name = script.stem
        if name in sys.stdlib_module_names:
            clashes.append(f"{script.name}: standard library module {name!r}")
        if importlib.util.find_spec(name) is not None:
            clashes.append(f"{script.name}: importable module {name!r}")
        for candidate in {name, name.replace("_", "-")}:
            try:
                importlib.metadata.distribution(candidate)
            except importlib.metadata.PackageNotFoundError:
                continue
            clashes.append(f"{script.name}: installed distribution {candidate!r}")
    assert not clashes, "rename these scripts: " + "; ".join(clashes)


def test_no_sys_path_edits():
    pattern = re.compile(r"\bsys\.path\.(insert|append|extend)\(")
    offenders = [str(path.relative_to(ROOT)) for path in python_files() if pattern.search(path.read_text())]
    assert not offenders, f"sys.path edits in {offenders}: import from the installed package instead"


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_a_generic_top_level_name():
    forbidden = FORBIDDEN_TOP_LEVEL | {script.stem for script in SCRIPTS.glob("*.py")}
    offenders = {str(path.relative_to(ROOT)): sorted(top_level_imports(path) & forbidden) for path in python_files()}
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"imports of non-package top-level names: {offenders}; use modeling_maskformer.<...>"


def test_every_subpackage_is_installed():
    """pyproject lists packages explicitly (two of them are mapped from top-level folders): a new subpackage
    missing from the list works in an editable install but is absent from the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {"modeling_maskformer": ROOT / "modeling_maskformer"}
    folders |= {name: ROOT / folder for name, folder in setuptools.get("package-dir", {}).items()}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    missing = sorted(found - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert listed <= found, f"listed but not packages: {sorted(listed - found)}"


@pytest.mark.parametrize("name", ["configuration", "image_processing"])
def test_folders_install_as_subpackages(name):
    module = importlib.import_module(f"modeling_maskformer.{name}")
    assert Path(module.__file__).resolve().parent == ROOT / name


# The model and its blocks, at the top of the package.
MODEL_MODULES = ["modeling_maskformer", "backbone", "pixel_decoder", "transformer_decoder", "attention"]
MODEL_MODULES += ["loss", "matcher", "outputs", "sampling"]


@pytest.mark.parametrize("name", MODEL_MODULES)
def test_the_model_never_imports_interop(name):
    """interop/ reaches the model classes through the package face's registration (`FolderIO`), never the other way
    round (tests/test_hub.py checks the whole import graph of the remote-code folder)."""
    tree = ast.parse((ROOT / "modeling_maskformer" / f"{name}.py").read_text())
    imported = ["." * node.level + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [module for module in imported if "interop" in module.split(".")], imported
