"""Test set-up: no downloads, and torch's thread count. The code under test is the installed package; the suite's
own helpers (`builders.py`, `numerics.py`, `exact.py`) are importable through pytest's `pythonpath` setting.

Threads: `OMP_NUM_THREADS` when it is set (`.ci/run` runs the suite once with 1), else 2, the CI machine's cores.
No assertion may depend on the count: results computed at different thread counts are compared at a tolerance
(numerics.py)."""

import os

import torch

if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(2)
# Nothing may download during tests: the Hub is unreachable here, so fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
