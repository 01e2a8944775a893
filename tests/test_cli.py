"""Command-line errors: one line on stderr and exit status 2 for a user error, the traceback with --debug; the
converter's user errors; pickles that would allocate or run anything are refused before they do."""

from __future__ import annotations

import os
import pickle
import runpy
import subprocess
import sys
import tracemalloc
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.cli import run_cli
from modeling_maskformer.errors import InvalidInputError, MissingDependencyError, MissingInputError
from modeling_maskformer.interop.authors_checkpoints import load_original_checkpoint
from modeling_maskformer.interop.transformers_weights import convert_to_transformers

from builders import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))


# ---------------------------------------------------------------------------------------------------------
# run_cli
# ---------------------------------------------------------------------------------------------------------
def fails_with(error: BaseException):
    def main():
        main.argv = list(sys.argv)
        raise error

    return main


def test_user_error_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tool.py", "in.pkl"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fails_with(MissingInputError("in.pkl: no such file")))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool.py: error: in.pkl: no such file\n"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fails_with(MissingDependencyError("export needs openvino: pip install -e '.[export]'")))
    assert exit_info.value.code == 2
    line = "tool.py: error: MissingDependencyError: export needs openvino: pip install -e '.[export]'\n"
    assert capsys.readouterr().err == line


def test_long_message_keeps_its_first_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    with pytest.raises(SystemExit):
        run_cli(fails_with(InvalidInputError("first line\n\n300 lines of report\n...")))
    assert capsys.readouterr().err == "tool.py: error: first line (more with --debug)\n"


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py", "--debug", "x"])
    main = fails_with(InvalidInputError("bad value"))
    with pytest.raises(InvalidInputError, match="bad value"):
        run_cli(main)
    assert main.argv == ["tool.py", "x"]  # the program's own parser never sees --debug
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    monkeypatch.setenv("MASKFORMER_DEBUG", "1")
    with pytest.raises(InvalidInputError, match="bad value"):
        run_cli(fails_with(InvalidInputError("bad value")))


@pytest.mark.parametrize(
    "bug",
    [AttributeError("a bug"), ValueError("too many values to unpack"), ImportError("cannot import name 'x'")],
    ids=lambda error: type(error).__name__,
)
def test_bugs_keep_their_traceback(bug, monkeypatch, capsys):
    """Only a UserError is one line: a plain ValueError, FileNotFoundError or ImportError is a bug to report."""
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    with pytest.raises(type(bug)):
        run_cli(fails_with(bug))
    assert capsys.readouterr().err == ""


def test_ctrl_c_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fails_with(KeyboardInterrupt()))
    assert exit_info.value.code == 130 and capsys.readouterr().err == "tool.py: interrupted\n"
    assert run_cli(lambda: 42) == 42


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_script_runs_its_main_through_run_cli(script):
    source = script.read_text()
    fix = (
        f"scripts/{script.name}: import `from modeling_maskformer.cli import run_cli` and end with "
        "`run_cli(main)`, so that user errors print one line and exit with status 2"
    )
    assert "from modeling_maskformer.cli import run_cli" in source, fix
    assert source.rstrip().splitlines()[-1].strip().startswith("run_cli("), fix


# ---------------------------------------------------------------------------------------------------------
# The converter's user errors
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model()
    model.save_pretrained(root / "ours", folder_format="remote_code")
    tiny_model(pre_norm=True).save_pretrained(root / "pre-norm")  # not representable: a remote-code folder
    convert_to_transformers(model, root / "transformers", processor=MaskFormerImageProcessor())
    (root / "no-config").mkdir()
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return root


def convert(monkeypatch, capsys, *args: str) -> str:
    """The converter's stderr for a command line that must fail with status 2."""
    monkeypatch.setattr(sys, "argv", ["convert_checkpoint.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "scripts" / "convert_checkpoint.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("convert_checkpoint.py: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_converter_refuses_what_transformers_cannot_represent(folders, tmp_path, monkeypatch, capsys):
    line = convert(monkeypatch, capsys, "--to", "transformers", str(folders / "pre-norm"), str(tmp_path / "out"))
    assert "transformers' MaskFormer cannot represent this model: pre_norm=True" in line


@pytest.mark.parametrize("direction", ["--to", "--from"])
def test_converter_says_a_missing_path_does_not_exist(direction, tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "no" / "such")
    line = convert(monkeypatch, capsys, direction, "transformers", missing, str(tmp_path / "out"))
    assert line.endswith(f"{missing}: no such file or folder"), line
    line = convert(monkeypatch, capsys, "--from", "original", f"{missing}.pkl", str(tmp_path / "out"))
    assert line.endswith(f"{missing}.pkl: no such file"), line


def test_converter_other_user_errors(folders, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "out")
    assert "has no config.json" in convert(
        monkeypatch, capsys, "--from", "transformers", str(folders / "no-config"), out
    )
    assert "model_type 'maskformer-hf', expected 'maskformer'" in convert(
        monkeypatch, capsys, "--from", "transformers", str(folders / "ours"), out
    )
    line = convert(monkeypatch, capsys, "--from", "original", str(folders / "image.png"), out)
    assert "not a PyTorch checkpoint of tensors only" in line
    arrays = tmp_path / "arrays.pkl"
    arrays.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}}, protocol=2))
    assert f"{arrays}: not a MaskFormer checkpoint" in convert(
        monkeypatch, capsys, "--from", "original", str(arrays), out
    )


def test_converter_command_line_end_to_end(tmp_path):
    """The real program: status 2 and one line; with --debug the traceback."""
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle_calling("builtins", "bytearray", 3_000_000_000))
    command = [
        sys.executable,
        str(ROOT / "scripts" / "convert_checkpoint.py"),
        "--from",
        "original",
        str(evil),
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert (
        result.stderr.startswith("convert_checkpoint.py: error: ")
        and "refusing bytearray(3000000000)" in result.stderr
    )
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


# ---------------------------------------------------------------------------------------------------------
# Pickles: refused before anything runs or is allocated
# ---------------------------------------------------------------------------------------------------------
def pickle_calling(module: str, name: str, *args: int) -> bytes:
    """A protocol-2 pickle of `module.name(*args)` (ints only), built opcode by opcode."""
    body = b"".join(b"\x8a" + bytes([len(pickle.encode_long(arg))]) + pickle.encode_long(arg) for arg in args)
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(" + body + b"tR."


ALLOCATING = {
    "bytearray(n)": (pickle_calling("builtins", "bytearray", 3_000_000_000), "refusing bytearray"),
    "protocol-2 bytearray(n)": (
        pickle_calling("__builtin__", "bytearray", 3_000_000_000),
        "refusing bytearray",
    ),
    "ndarray(n)": (pickle_calling("numpy", "ndarray", 1_000_000_000), r"refusing numpy\.ndarray"),
    "_reconstruct of n bytes": (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(\x8a\x04\x00\xca\x9a\x3btC\x01b\x87R.",
        "refusing an array of 1000000000 bytes",
    ),
    "protocol-2 eval": (
        b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.",
        r"refusing to load builtins\.eval",
    ),
}


@pytest.mark.parametrize("name", list(ALLOCATING))
def test_pickles_that_allocate_are_refused_before_allocating(name, tmp_path):
    data, message = ALLOCATING[name]
    path = tmp_path / "model_final.pkl"
    path.write_bytes(data)
    assert len(data) < 100
    tracemalloc.start()
    try:
        with pytest.raises(pickle.UnpicklingError, match=message):
            load_original_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, (peak, name)  # refused before allocating: tracemalloc's peak, not a clock


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_checkpoints_of_every_protocol_load_alike(protocol, tmp_path):
    """Protocol 2 writes `__builtin__.set`, `__builtin__.bytearray` and `_codecs.encode`; they are mapped as
    pickle itself maps them, so the same checkpoint loads whatever the protocol."""
    weights = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.ones(3), n=np.array(7, np.int64))
    checkpoint = {
        "model": weights,
        "tags": {"a", "b"},
        "frozen": frozenset([1]),
        "raw": bytearray(b"xy"),
        "scalar": np.float32(2.5),
        "__author__": "test",
    }
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps(checkpoint, protocol=protocol))
    state = load_original_checkpoint(path)
    assert sorted(state) == ["b", "n", "w"]
    for key, value in weights.items():
        np.testing.assert_array_equal(state[key].numpy(), value)
