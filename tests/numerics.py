"""How the suite compares floating-point results.

Bit equality is asserted only where the same kernels run the same inputs at the same thread count, in one
process: a saved-and-reloaded model against itself, a resumed run against an uninterrupted one, data that are
copied and never computed on. Everywhere else the reduction order may differ with the CPU (AVX-512 or AVX2
kernels, oneDNN's and MKL's choice of algorithm), the thread count, or the implementation (ours against
transformers, eager against an exported graph), so results are compared at a stated tolerance and the measured
maximum difference is printed (`pytest -s` or the failure report shows it).

The tolerances, for float32 on the suite's tiny models (values of order 1):
- `SAME_GRAPH` (1e-5): the same operations in another order, split or fused (another process or thread count,
  transformers' modules against ours). float32 rounding of sums of a few hundred terms stays near 1e-6.
- Callers with longer chains (exported graphs, the authors' layout rebuilt as DETR) state their own.
"""

from __future__ import annotations

import torch

SAME_GRAPH = 1e-5


def max_abs_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    if actual.numel() == 0:
        return 0.0
    return (actual.detach().double() - expected.detach().double()).abs().max().item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, what: str = "") -> float:
    """|actual - expected| <= atol everywhere; prints and returns the measured maximum difference."""
    difference = max_abs_difference(actual, expected)
    print(f"{what or 'max |difference|'}: {difference:.3g} (tolerance {atol:g})")
    assert difference <= atol, f"{what}: max |difference| {difference:.3g} > {atol:g}"
    return difference
