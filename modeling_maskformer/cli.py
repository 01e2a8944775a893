"""What every command-line program of this project does with errors.

    if __name__ == "__main__":
        run_cli(main)

A user error (a bad path, a wrong format, a refused pickle, an invalid value) prints one line on stderr,
`<program>: error: <message>`, and exits with status 2, like argparse's own errors. `--debug` anywhere on the
command line (or `MASKFORMER_DEBUG=1` in the environment, handy under `accelerate launch`) shows the full
traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .loading import MaskFormerLoadError

# Exceptions that report something about the user's input or environment, not a defect of the program.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # invalid values, wrong formats, mismatched checkpoints (CheckpointMismatchError), bad JSON
    OSError,  # missing or unreadable files, nothing on the Hub
    pickle.UnpicklingError,  # refused or damaged pickles
    ImportError,  # an optional dependency that is not installed
    MaskFormerLoadError,  # a saved folder whose weights do not fit its config
)
DEBUG_FLAG = "--debug"


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get("MASKFORMER_DEBUG", "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The first line of the message (the rest, e.g. transformers' load reports, is in the traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if isinstance(error, ImportError) or not lines:
        message = f"{type(error).__name__}: {message}"
    return message + (" (more with --debug)" if len(lines) > 1 else "")


def run_cli(main: Callable[[], Any]) -> Any:
    """Run `main()` (which reads `sys.argv`, with `--debug` removed) and return its result; a user error exits
    with status 2 and one line on stderr, Ctrl-C with status 130."""
    debug = debug_requested(sys.argv[1:])
    sys.argv = [arg for arg in sys.argv if arg != DEBUG_FLAG]
    program = Path(sys.argv[0]).name
    try:
        return main()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{program}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"{program}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
