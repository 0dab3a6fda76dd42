"""Closed-form parameter and FLOP counts (checked by Esper's conformance kit).

FLOPs follow ``torch.utils.flop_counter``: a convolution costs ``2 * B * L_out * C_out *
(C_in / groups) * k`` (a multiply-add is 2 FLOPs); biases, padding and GELU are not counted.
"""

from __future__ import annotations

__all__ = ["causal_conv_flops", "causal_conv_params", "shift_mix_flops", "shift_mix_params"]


def causal_conv_params(dim: int, kernel_size: int, bias: bool) -> int:
    """Depthwise ``C * k`` weights, 1x1 ``C * C`` weights, plus ``C`` bias each."""
    return dim * kernel_size + dim * dim + (2 * dim if bias else 0)


def causal_conv_flops(dim: int, input_shape: tuple[int, ...], kernel_size: int, bias: bool) -> int:
    batch, _, length = input_shape
    return 2 * batch * length * dim * kernel_size + 2 * batch * length * dim * dim


def shift_mix_params(dim: int, shift: int) -> int:
    """One 1x1 convolution: ``C * C`` weights and ``C`` biases."""
    return dim * dim + dim


def shift_mix_flops(dim: int, input_shape: tuple[int, ...], shift: int) -> int:
    batch, _, length = input_shape
    return 2 * batch * length * dim * dim
