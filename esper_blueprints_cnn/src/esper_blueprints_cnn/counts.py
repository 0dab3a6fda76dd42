"""Exact parameter and FLOP counts of the CNN blueprints, in closed form.

These are pure integer functions: they never build a module, so a controller can price
every blueprint at every width in microseconds (rent must be exact and cheap; building a
``conv_heavy`` at C = 4096 to count it allocates 1.2 GB).

FLOPs follow :class:`torch.utils.flop_counter.FlopCounterMode`'s convention, so the two
agree exactly: one multiply-accumulate of a convolution or matrix product is 2 FLOPs;
biases, normalisation, activations, pooling and element-wise arithmetic are not counted.
For a conv that is ``2 * B * H_out * W_out * C_out * (C_in / groups) * k * k``; every conv
here keeps the spatial size, so ``H_out, W_out = H, W``.
"""

from __future__ import annotations

from collections.abc import Sequence

from esper_blueprints_cnn.blocks import seed_conv_block_params
from esper_core import RegistryError

__all__ = [
    "DEFAULT_REDUCTION",
    "MIN_BOTTLENECK_WIDTH",
    "attention_flops",
    "attention_params",
    "bottleneck_flops",
    "bottleneck_params",
    "bottleneck_width",
    "check_input_shape",
    "conv2d_flops",
    "conv_heavy_flops",
    "conv_heavy_params",
    "conv_light_flops",
    "conv_light_params",
    "conv_small_flops",
    "conv_small_params",
    "depthwise_flops",
    "depthwise_params",
    "noop_flops",
    "noop_params",
    "norm_flops",
    "norm_params",
    "se_width",
]

#: Default ``reduction`` of ``attention`` and ``bottleneck``.
DEFAULT_REDUCTION = 4

#: The bottleneck's hidden width never drops below this, so tiny C still has room to learn.
MIN_BOTTLENECK_WIDTH = 8


# ------------------------------------------------------------------------------------------
# Widths derived from options
# ------------------------------------------------------------------------------------------


def se_width(channels: int, reduction: int) -> int:
    """Hidden width of the squeeze-excitation MLP: ``max(1, C // reduction)``."""
    return max(1, channels // reduction)


def bottleneck_width(channels: int, reduction: int) -> int:
    """Hidden width of the bottleneck: ``max(8, C // reduction)`` (may exceed C when C < 8)."""
    return max(MIN_BOTTLENECK_WIDTH, channels // reduction)


# ------------------------------------------------------------------------------------------
# Parameter counts: param_count(dim, **options)
# ------------------------------------------------------------------------------------------


def noop_params(dim: int) -> int:
    """``0``."""
    return 0


def norm_params(dim: int) -> int:
    """GroupNorm affine plus the blend scalar: ``2C + 1``."""
    return 2 * dim + 1


def attention_params(dim: int, reduction: int = DEFAULT_REDUCTION) -> int:
    """``Linear(C, r, no bias) + Linear(r, C)``: ``2 C r + C`` with ``r = max(1, C // reduction)``."""
    return 2 * dim * se_width(dim, reduction) + dim


def depthwise_params(dim: int) -> int:
    """Depthwise 3x3 (9C) + pointwise 1x1 (C^2) + GroupNorm (2C): ``C^2 + 11C``."""
    return dim * dim + 11 * dim


def bottleneck_params(dim: int, reduction: int = DEFAULT_REDUCTION) -> int:
    """1x1 down (Cb) + 3x3 (9b^2) + 1x1 up (bC) + GroupNorm (2C): ``2Cb + 9b^2 + 2C``."""
    width = bottleneck_width(dim, reduction)
    return 2 * dim * width + 9 * width * width + 2 * dim


def conv_small_params(dim: int) -> int:
    """One 1x1 seed conv block: ``C^2 + 2C``."""
    return seed_conv_block_params(dim, dim, 1)


def conv_light_params(dim: int) -> int:
    """One 3x3 seed conv block: ``9C^2 + 2C``."""
    return seed_conv_block_params(dim, dim, 3)


def conv_heavy_params(dim: int) -> int:
    """Two 3x3 seed conv blocks: ``18C^2 + 4C``."""
    return 2 * seed_conv_block_params(dim, dim, 3)


# ------------------------------------------------------------------------------------------
# FLOP counts: flop_count(dim, input_shape, **options)
# ------------------------------------------------------------------------------------------


def check_input_shape(dim: int, input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Return ``(B, C, H, W)`` if ``input_shape`` is a valid input for width ``dim``."""
    shape = tuple(input_shape)
    valid = len(shape) == 4 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    if not valid or shape[1] != dim:
        raise RegistryError(
            f"input_shape must be (B, C, H, W) of ints >= 1 with C == dim == {dim}; got {input_shape!r}"
        )
    return shape  # type: ignore[return-value]


def conv2d_flops(
    positions: int, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1
) -> int:
    """FLOPs of a shape-preserving conv over ``positions = B * H * W`` output positions."""
    return 2 * positions * out_channels * (in_channels // groups) * kernel_size * kernel_size


def _positions(dim: int, input_shape: Sequence[int]) -> int:
    batch, _, height, width = check_input_shape(dim, input_shape)
    return batch * height * width


def noop_flops(dim: int, input_shape: Sequence[int]) -> int:
    """``0``: no matrix products."""
    check_input_shape(dim, input_shape)
    return 0


def norm_flops(dim: int, input_shape: Sequence[int]) -> int:
    """``0``: normalisation and blending are element-wise, which the convention does not count."""
    check_input_shape(dim, input_shape)
    return 0


def attention_flops(dim: int, input_shape: Sequence[int], reduction: int = DEFAULT_REDUCTION) -> int:
    """Two small matrix products on the pooled ``(B, C)`` vector: ``4 B C r``, independent of H, W."""
    batch = check_input_shape(dim, input_shape)[0]
    return 4 * batch * dim * se_width(dim, reduction)


def depthwise_flops(dim: int, input_shape: Sequence[int]) -> int:
    """``2 B H W (9C + C^2)``."""
    positions = _positions(dim, input_shape)
    return conv2d_flops(positions, dim, dim, 3, groups=dim) + conv2d_flops(positions, dim, dim, 1)


def bottleneck_flops(dim: int, input_shape: Sequence[int], reduction: int = DEFAULT_REDUCTION) -> int:
    """``2 B H W (2Cb + 9b^2)``."""
    positions = _positions(dim, input_shape)
    width = bottleneck_width(dim, reduction)
    return (
        conv2d_flops(positions, dim, width, 1)
        + conv2d_flops(positions, width, width, 3)
        + conv2d_flops(positions, width, dim, 1)
    )


def conv_small_flops(dim: int, input_shape: Sequence[int]) -> int:
    """``2 B H W C^2``."""
    return conv2d_flops(_positions(dim, input_shape), dim, dim, 1)


def conv_light_flops(dim: int, input_shape: Sequence[int]) -> int:
    """``18 B H W C^2``."""
    return conv2d_flops(_positions(dim, input_shape), dim, dim, 3)


def conv_heavy_flops(dim: int, input_shape: Sequence[int]) -> int:
    """``36 B H W C^2``."""
    return 2 * conv2d_flops(_positions(dim, input_shape), dim, dim, 3)
