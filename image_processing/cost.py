"""Which evaluation `method="auto"` takes (placeholder, replaced by the cost model)."""

from __future__ import annotations

from .resampling import Geometry

DENSE_LIMITS = {"semantic": 1 << 21, "instance": 1 << 18, "panoptic": 1 << 22}


def use_bounded(task: str, method: str, geometry: Geometry, *, maps: int, classes: int = 0) -> bool:
    if method != "auto":
        return method == "bounded"
    pixels = geometry.valid[0] * geometry.valid[1] + geometry.target[0] * geometry.target[1]
    return geometry.device.type == "cpu" and maps * pixels > DENSE_LIMITS[task]
