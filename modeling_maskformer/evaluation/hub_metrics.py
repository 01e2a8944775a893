"""`evaluate` modules shipped with the package: `mean_iou`, `panoptic_quality` and `mask_ap`, loaded offline.

Each lives in `metric_modules/<name>/` in the layout of an `evaluate` community metric (the script
`<name>.py`, a README card, `app.py` and `requirements.txt`), so the folder can also be pushed to the Hub
as a Space as it is. The scripts import nothing from this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRIC_MODULES = Path(__file__).resolve().parent / "metric_modules"
METRIC_NAMES = ("mean_iou", "panoptic_quality", "mask_ap")


def metric_module_path(name: str) -> Path:
    """The folder of a shipped metric module (what `evaluate.load` and a Hub upload take)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; the package ships {list(METRIC_NAMES)}")
    return METRIC_MODULES / name


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` of a shipped metric module, from its local folder (no network).

    `kwargs` go to `evaluate.load` (e.g. `keep_in_memory=True`, `num_process`/`process_id` for distributed
    use). Returns an `evaluate.EvaluationModule`; see each module's `inputs_description` or README card.
    """
    import evaluate

    return evaluate.load(str(metric_module_path(name)), **kwargs)
