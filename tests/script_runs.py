"""Running the command-line programs in the test process, as a user's shell would run them (their `__main__`,
`run_cli`'s error handling and exit status included), with one torch thread."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, argv: list) -> int:
    """Run scripts/<name> with `argv` (any values, made strings); returns its exit status."""
    saved, threads = sys.argv, torch.get_num_threads()
    sys.argv = [str(SCRIPTS / name), *map(str, argv)]
    torch.set_num_threads(1)  # NOTE: tiny models; on a busy machine a second thread mostly spins (~10x CPU time)
    try:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
        torch.set_num_threads(threads)
    return 0
