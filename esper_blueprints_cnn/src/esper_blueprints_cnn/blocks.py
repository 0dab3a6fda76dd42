"""The seed convolution block: conv, GroupNorm, optional ReLU.

This is the seed-side counterpart of the host's BatchNorm block (which lives with the host
in the core). Seeds use GroupNorm so they hold no running statistics that could drift while
a seed is isolated, blended or frozen.

``zero_init=True`` makes the block output exactly zero when built, by zeroing the
GroupNorm gain. This is how residual seeds start as the identity without starving any
parameter of gradient:

* the gain and bias of the norm get a gradient on the very first step, because the
  normalised activations they multiply are non-zero;
* every earlier parameter gets one from the second step on, once the gain has moved;
* the norm's input is an ordinary, non-degenerate activation, so there is no
  ``1/sqrt(eps)`` gradient spike (zeroing the *conv* instead feeds GroupNorm an all-zero
  tensor, whose backward scales gradients by about 316x).

A zero-output block must not end in ReLU: PyTorch's ReLU has gradient 0 at 0, so every
parameter behind it would stay dead forever (the earlier ``conv_small`` bug). The
constructor refuses that combination.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper_blueprints_cnn.groups import SeedGroupNorm, check_channels
from esper_core import RegistryError

__all__ = ["SeedConvBlock", "seed_conv_block_params"]


def seed_conv_block_params(in_channels: int, out_channels: int, kernel_size: int = 3) -> int:
    """Exact parameter count of a :class:`SeedConvBlock`: ``k^2 * in * out + 2 * out``."""
    return kernel_size * kernel_size * in_channels * out_channels + 2 * out_channels


def _check_kernel_size(kernel_size: object) -> int:
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise RegistryError(f"kernel_size must be an odd int >= 1 (to keep H and W); got {kernel_size!r}")
    return kernel_size


class SeedConvBlock(nn.Module):
    """``Conv2d(k x k, same padding, no bias) -> GroupNorm -> ReLU`` (ReLU optional).

    The conv has no bias because the GroupNorm that follows removes any per-channel offset.
    Spatial size is preserved for odd ``kernel_size``; even sizes are rejected because
    ``padding = k // 2`` would grow the map by one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        activation: bool = True,
        zero_init: bool = False,
    ) -> None:
        check_channels(in_channels, "in_channels")
        check_channels(out_channels, "out_channels")
        _check_kernel_size(kernel_size)
        if zero_init and activation:
            raise RegistryError(
                "zero_init=True needs activation=False: ReLU has gradient 0 at 0, so a block "
                "whose output starts at exactly 0 would never learn"
            )
        super().__init__()
        self.activation = activation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.gn = SeedGroupNorm(out_channels, zero_gain=zero_init)

    @property
    def zero_init(self) -> bool:
        return self.gn.zero_gain

    def reset_parameters(self) -> None:
        """Default conv init; GroupNorm gain 1 (or 0 with ``zero_init``) and bias 0."""
        self.conv.reset_parameters()
        self.gn.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        out = self.gn(self.conv(x))
        return torch.relu(out) if self.activation else out

    def extra_repr(self) -> str:
        return f"activation={self.activation}"
