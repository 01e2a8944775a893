"""Test set-up: the repo root and scripts/ importable, one thread per test process (2-core CI)."""

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

torch.set_num_threads(2)
# Nothing may download during tests: the Hub is unreachable here, so fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
