"""Saved weight files are as readable as any other file the save writes (the umask decides, not safetensors,
whose `save_file` creates its file 0600): a model folder copied to another user or a server can be read there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.interop.saving import current_umask, make_weights_readable
from modeling_maskformer.interop.transformers_weights import convert_to_transformers
from modeling_maskformer.training import save_checkpoint

from builders import tiny_model


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_as_umask_allows(folder: Path, umask: int) -> None:
    modes = _modes(folder)
    assert any(name.endswith(".safetensors") for name in modes), modes
    expected = 0o666 & ~umask
    assert modes == dict.fromkeys(modes, expected), {name: oct(mode) for name, mode in modes.items()}


def test_current_umask_is_read_back(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # reading it does not change it


def test_safetensors_alone_writes_0600_and_the_helper_fixes_it(tmp_path, umask):
    # The upstream behaviour this module exists for (safetensors 0.8): if it ever changes, the helper is a no-op.
    save_file({"a": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    (tmp_path / "other.json").write_text("{}")
    make_weights_readable(tmp_path)
    _assert_as_umask_allows(tmp_path, umask)
    assert make_weights_readable(tmp_path / "missing") == []


@pytest.mark.parametrize("folder_format", ["transformers", "remote_code"])
def test_save_pretrained_leaves_weights_readable(tmp_path, umask, folder_format):
    model = tiny_model()
    model.save_pretrained(tmp_path, folder_format=folder_format)
    MaskFormerImageProcessor().save_pretrained(tmp_path)
    _assert_as_umask_allows(tmp_path, umask)


def test_checkpoint_and_conversion_leave_weights_readable(tmp_path, umask):
    accelerator = Accelerator(cpu=True)
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    accelerator.prepare(model, optimizer)
    checkpoint = save_checkpoint(accelerator, tmp_path, {"step": 1, "history": []}, total_limit=None)
    _assert_as_umask_allows(checkpoint, umask)
    convert_to_transformers(model, tmp_path / "converted")
    _assert_as_umask_allows(tmp_path / "converted", umask)
