"""The opt-in fast path for inference: channels-last tensors, and bf16 autocast where the hardware computes bf16
natively. `MaskFormerForInstanceSegmentation.enable_fast_inference()` switches it on.

On a CPU, native bf16 means AVX512-BF16 or AMX; elsewhere bf16 matrix products are emulated and slower than
float32, so the path keeps float32 there (channels-last alone still helps the convolutions). The features are
read from torch's CPU probes, or from /proc/cpuinfo where those are missing.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

_CPU_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16)."""
    for name in _CPU_PROBES:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:
                continue
    if any(getattr(torch.cpu, name, None) is not None for name in _CPU_PROBES):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
    return any(flag in flags for flag in _CPU_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is worth it on `device`: native bf16 on a CPU, bf16 support on a CUDA GPU."""
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False
