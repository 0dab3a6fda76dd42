"""The ``norm`` blueprint: a gated LayerNorm delta.

A seed that only re-normalises features is the cheapest useful change a slot can make.
The gate ``tanh(scale)`` starts at exactly zero, which makes the seed the identity when it
is born; ``scale`` receives a gradient from the first step, and once it is non-zero the
LayerNorm affine parameters do too. Every position is normalised on its own, so the seed
is causal along the sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NormSeed"]


class NormSeed(nn.Module):
    """``y = x + tanh(scale) · (LayerNorm(x) - x)`` with ``scale`` initialised to 0."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.scale) * (self.norm(x) - x)
