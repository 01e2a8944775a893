"""The opt-in fast path for inference (`MaskFormerForInstanceSegmentation.enable_fast_inference()`): channels-last
tensors, and bf16 autocast only where the hardware computes bf16 natively. NOTE: on a CPU that means AVX512-BF16 or
AMX; elsewhere bf16 matrix products are emulated and slower than float32, so the path keeps float32 there.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16; torch's own probes, in torch.cpu since 2.3)."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is worth it on `device`: native bf16 on a CPU, bf16 support on a CUDA GPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()
