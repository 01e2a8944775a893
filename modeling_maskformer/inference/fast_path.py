"""The opt-in fast path for inference (`MaskFormerForInstanceSegmentation.enable_fast_inference()`): channels-last
tensors, and bf16 autocast only where the hardware computes bf16 natively. NOTE: on a CPU that means AVX512-BF16 or
AMX; elsewhere bf16 matrix products are emulated and slower than float32, so the path keeps float32 there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

_CPU_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # in /proc/cpuinfo, for a torch without the probes


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16)."""
    probes = [getattr(torch.cpu, name) for name in _CPU_PROBES if getattr(torch.cpu, name, None) is not None]
    if probes:
        return any(probe() for probe in probes)
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and any(flag in cpuinfo.read_text().split() for flag in _CPU_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is worth it on `device`: native bf16 on a CPU, bf16 support on a CUDA GPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()
