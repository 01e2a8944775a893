"""What every command-line program of this project does with errors and stop signals: `run_cli(main)`.

A user error (`errors.UserError`) prints `<program>: error: <message>` (one line) and exits with status 2, like
argparse's; `--debug` anywhere on the command line (or `MASKFORMER_DEBUG=1`) shows its traceback instead. Any other
exception is a bug and keeps its traceback. SIGTERM raises `Terminated`, a KeyboardInterrupt, in the main thread, so
Ctrl-C and `kill` both run every `finally` and end with `<program>: interrupted[ by SIGTERM][: detail]` and status
130 or 143. The handler is an ordinary `signal.signal` one for the duration of `run_cli`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError, first_line

DEBUG_FLAG = "--debug"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def one_line(error: BaseException) -> str:
    """The first line of the message (the rest, e.g. transformers' load reports, is in the traceback)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    message = first_line(error)
    if isinstance(error, ImportError) or not lines:
        message = f"{type(error).__name__}: {message}"
    return message + (" (more with --debug)" if len(lines) > 1 else "")


def run_cli(main: Callable[[], Any]) -> Any:
    """Run `main()` (which reads `sys.argv`, with `--debug` removed) and return its result."""
    debug = DEBUG_FLAG in sys.argv[1:] or os.environ.get("MASKFORMER_DEBUG", "") not in ("", "0")
    sys.argv = [arg for arg in sys.argv if arg != DEBUG_FLAG]
    program = Path(sys.argv[0]).name
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal works only there
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return main()
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        signum = getattr(interrupt, "signum", signal.SIGINT)
        by = " by SIGTERM" if signum == signal.SIGTERM else ""
        detail = f": {one_line(interrupt)}" if str(interrupt).strip() else ""
        print(f"{program}: interrupted{by}{detail}", file=sys.stderr)
        raise SystemExit(128 + signum) from None
    except UserError as error:
        if debug:
            raise
        print(f"{program}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if in_main_thread:
            # NOTE: None means a handler installed outside Python; SIG_DFL is the closest thing to put back.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
