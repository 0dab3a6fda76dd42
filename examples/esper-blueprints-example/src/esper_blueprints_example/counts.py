"""Closed-form parameter and FLOP counts.

Esper charges a seed its parameter count as rent and sorts blueprints by it before any
module is built, so each count is exact arithmetic on the constructor's arguments. The
conformance kit checks these against ``sum(p.numel())`` and ``FlopCounterMode``.
"""

from __future__ import annotations

import math

__all__ = ["pointwise_flops", "pointwise_params", "token_shift_flops", "token_shift_params"]


def pointwise_params(dim: int, expansion: int, bias: bool) -> int:
    """Two 1x1 convolutions C -> e*C -> C: 2*e*C^2 weights, plus e*C + C biases."""
    hidden = expansion * dim
    return 2 * hidden * dim + (hidden + dim if bias else 0)


def pointwise_flops(dim: int, input_shape: tuple[int, ...], expansion: int, bias: bool) -> int:
    """Multiply-adds of both convolutions, counted as 2 FLOPs each (biases are not counted)."""
    batch, _, *spatial = input_shape
    positions = batch * math.prod(spatial)
    return 2 * 2 * positions * dim * expansion * dim


def token_shift_params(dim: int, shift: int, bias: bool) -> int:
    """One D x D projection, plus its bias."""
    return dim * dim + (dim if bias else 0)


def token_shift_flops(dim: int, input_shape: tuple[int, ...], shift: int, bias: bool) -> int:
    """One matrix multiply over every token: 2 * tokens * D * D."""
    batch, length, _ = input_shape
    return 2 * batch * length * dim * dim
