"""Test set-up: one thread per test process (2-core CI), no downloads. The code under test is the installed
package; the suite's own helpers (`builders.py`) are importable through pytest's `pythonpath` setting."""

import os

import torch

torch.set_num_threads(2)
# Nothing may download during tests: the Hub is unreachable here, so fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
