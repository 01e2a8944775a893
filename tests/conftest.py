"""Test set-up: no downloads, and torch's thread count. The code under test is the installed package; the suite's
own helpers (`builders.py`, `numerics.py`, `exact.py`) are importable through pytest's `pythonpath` setting.

Threads: `OMP_NUM_THREADS` when it is set (`.ci/run` runs the suite once with 1), else 2, the CI machine's cores.
No assertion may depend on the count: results computed at different thread counts are compared at a tolerance
(numerics.py).

Signals: a suite started in the background by a non-interactive shell (`nohup make test &`) inherits SIGINT
ignored, as would every program the tests start, and the tests that send Ctrl-C to a program would see it ignored.
The suite takes Python's own SIGINT handler back, so that its programs start with SIGINT delivered."""

import os
import signal

import torch

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(2)
# Nothing may download during tests: the Hub is unreachable here, so fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
