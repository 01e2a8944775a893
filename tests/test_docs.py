"""Docs that cannot drift: every Python and shell block of README.md and docs/*.md.

- A Python block runs, in the page's order and namespace, in a folder holding what `make demo` leaves
  (`outputs/demo`: a tiny model in the demo's format) and pictures (`scene.jpg`, `street.jpg`, `photos/`).
- A shell block's commands are checked against the program they call: `python scripts/X.py ...` and
  `python -m benchmarks ...` are parsed by the program's own argument parser (a renamed or removed flag fails),
  `make T` must be a Makefile target, `pip install -e ".[extras]"` must name extras of pyproject.toml.
- A block preceded by `<!-- docs-test: skip: REASON -->` is skipped with that reason (say, it needs the network
  or a GPU, or it shows output rather than a program).
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.data import build_dataset

from builders import tiny_model

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.+?)\s*-->")
PYTHON, SHELL = {"python", "py"}, {"bash", "sh", "shell", "console"}
# Commands that only set up the shell or the machine: nothing of ours to check.
PLAIN_COMMANDS = {
    "cd",
    "ls",
    "mkdir",
    "export",
    "unzip",
    "tar",
    "cp",
    "mv",
    "rm",
    "cat",
    "echo",
    "git",
    "curl",
    "wget",
}


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    found, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(before)
        language = opening.group(1).lower()
        if language in PYTHON | SHELL:
            found.append(Block(page, i + 1, language, "\n".join(lines[i + 1 : end]), skip and skip.group(1)))
        i = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """What a user has after `make demo`: outputs/demo (here a tiny random model of the demo's format), and
    pictures."""
    folder = tmp_path_factory.mktemp("docs")
    demo_data = build_dataset("synthetic", "validation", num_images=1)  # the demo's classes, things and stuff
    model = tiny_model(
        num_labels=demo_data.num_labels, id2label=demo_data.id2label, thing_ids=list(demo_data.thing_ids)
    ).eval()
    model.save_pretrained(folder / "outputs" / "demo")
    MaskFormerImageProcessor(ignore_index=255, do_reduce_labels=False).save_pretrained(folder / "outputs" / "demo")
    pixels = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    (folder / "photos").mkdir()
    for name in ("scene.jpg", "street.jpg", "photos/street.jpg", "photos/park.jpg"):
        Image.fromarray(pixels).save(folder / name)
    return folder


def test_every_block_is_found():
    assert len(ALL) > 20, [block.name for block in ALL]


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.language in PYTHON for b in blocks(p))], ids=str)
def test_python_blocks_run(page, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for block in blocks(page):
        if block.language not in PYTHON:
            continue
        if block.skip:
            skipped.append(f"{block.name}: {block.skip}")
            continue
        try:
            exec(compile(block.code, block.name, "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{block.name} failed: {type(error).__name__}: {error}") from error
    if skipped:
        print("skipped:", *skipped, sep="\n  ")


class _Parsed(Exception):
    """Raised once the program's outermost parser has accepted the command line: nothing of the program runs."""


def commands(code: str) -> list[list[str]]:
    """The shell commands of a block: continuations joined, comments and environment assignments dropped,
    `accelerate launch [its options]` taken off."""
    out = []
    for line in re.sub(r"\\\n", " ", code).splitlines():
        words, command = shlex.split(line, comments=True), []
        for word in [*words, ";"]:
            if word not in ("&&", "||", ";"):
                command.append(word)
                continue
            while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", command[0]):
                command = command[1:]
            if command[:2] == ["accelerate", "launch"]:
                start = next(i for i, w in enumerate(command) if w.endswith(".py"))
                command = ["python", *command[start:]]
            if command:
                out.append(command)
            command = []
    return out


def parse_only(program: Path, argv: list[str], run_name: str = "__main__") -> None:
    """Run `program` with `argv` until its outermost argument parser has accepted them."""
    original = argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_known_args(self, args=None, namespace=None):
        depth[0] += 1
        try:
            result = original(self, args, namespace)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            raise _Parsed()
        return result

    saved = sys.argv
    argparse.ArgumentParser.parse_known_args = parse_known_args
    sys.argv = [str(program), *argv]
    try:
        if program.name == "__main__.py":
            runpy.run_module(program.parent.name, run_name="__main__", alter_sys=False)
        else:
            runpy.run_path(str(program), run_name=run_name)
    except _Parsed:
        return
    except SystemExit as error:
        if error.code == 0 and {"-h", "--help"} & set(argv):
            return
        raise AssertionError(f"{program.name} {shlex.join(argv)}: the parser refused it (exit {error.code})") from None
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv = saved
    raise AssertionError(f"{program.name} {shlex.join(argv)}: the program never parsed its arguments")


def check_command(words: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    if words[0] == "make":
        for target in (w for w in words[1:] if "=" not in w):
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make {target}: no such target"
        return
    if words[0] in ("pip", "python") and "install" in words:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for word in words:
            if word.startswith(".["):
                wanted = word[2:].rstrip("]").split(",")
                assert set(wanted) <= set(extras), f"{word}: extras not in pyproject.toml ({sorted(extras)})"
        return
    if words[0] in ("python", "python3"):
        if words[1:3] == ["-m", "benchmarks"]:
            parse_only(ROOT / "benchmarks" / "__main__.py", words[3:])
            return
        script = ROOT / words[1]
        assert script.parent == ROOT / "scripts" and script.is_file(), f"{words[1]}: no such script"
        if "..." not in words:  # "..." stands for the arguments of the command above it
            parse_only(script, words[2:])
        return
    assert words[0] in PLAIN_COMMANDS, f"{shlex.join(words)}: not a command this test knows how to check"


@pytest.mark.parametrize("block", [b for b in ALL if b.language in SHELL], ids=lambda b: b.name)
def test_shell_commands_match_their_programs(block, workspace, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for words in commands(block.code):
        check_command(words)
    assert os.getcwd() == str(workspace)
