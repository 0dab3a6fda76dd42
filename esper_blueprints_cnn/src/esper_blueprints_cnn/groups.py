"""How many GroupNorm groups a seed uses for a given channel count.

Seeds normalise with GroupNorm rather than BatchNorm because GroupNorm keeps no running
statistics: a seed that is trained, frozen, pruned and re-grown never carries stale
buffers, and its output does not depend on the batch it happens to see.

The rule (kept from the earlier implementation so that behaviour and checkpoints match):

1. Among the candidate group counts 32, 16, 8, 4, 2, 1 (largest first), take the first that
   divides ``C`` and still leaves at least ``min_group_size`` (16) channels in every group.
2. If none qualifies (``C`` < 16, or no candidate leaves 16 channels), take the largest
   candidate that divides ``C``; 1 always does.

The normalisation itself is :class:`SeedGroupNorm`, a GroupNorm that uses this rule, can start
with a zero gain, and accepts inputs with a single value per group. It is the core's
:class:`esper_core.groupnorm.GroupNorm`, so its backward survives channels_last inputs that do
not require grad (torch 2.13 segfaults there; the workaround lives in the core).

Consequences worth knowing: ``C`` = 8 gets 8 groups of one channel (an InstanceNorm), ``C`` = 16
gets one group (a LayerNorm over C, H, W), and any odd ``C`` gets one group. The group count
never changes the parameter count: GroupNorm always has ``2 * C`` affine parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper_core import RegistryError
from esper_core.groupnorm import GroupNorm, groupnorm_input

__all__ = ["GROUP_CANDIDATES", "MIN_GROUP_SIZE", "SeedGroupNorm", "check_channels", "get_num_groups"]

#: Group counts tried, largest first.
GROUP_CANDIDATES: tuple[int, ...] = (32, 16, 8, 4, 2, 1)

#: Default minimum number of channels per group for rule 1.
MIN_GROUP_SIZE = 16


def check_channels(channels: object, name: str = "channels") -> int:
    """Return ``channels`` if it is a positive int, else raise :class:`RegistryError`."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise RegistryError(f"{name} must be an int >= 1; got {channels!r} ({type(channels).__name__})")
    return channels


def get_num_groups(channels: int, min_group_size: int = MIN_GROUP_SIZE) -> int:
    """The GroupNorm group count for ``channels`` under the rule in the module docstring."""
    check_channels(channels)
    check_channels(min_group_size, "min_group_size")
    for groups in GROUP_CANDIDATES:
        if channels % groups == 0 and channels // groups >= min_group_size:
            return groups
    # Rule 2: 1 is the last candidate and divides everything, so this always returns.
    return next(groups for groups in GROUP_CANDIDATES if channels % groups == 0)


class SeedGroupNorm(GroupNorm):
    """GroupNorm over ``channels`` with :func:`get_num_groups` groups, eps 1e-5, affine.

    A :class:`esper_core.groupnorm.GroupNorm` (an ``nn.GroupNorm`` whose backward survives
    channels_last inputs that do not require grad). Two differences from
    :class:`torch.nn.GroupNorm`, both for seeds:

    * ``zero_gain=True`` starts (and :meth:`reset_parameters` restarts) the gain at 0, so the
      output is exactly the bias, 0. Residual seeds end in such a norm to be the identity at
      birth while the gain and bias still get gradient on the first step.
    * It accepts inputs with one value per group (batch 1, 1 x 1 maps, one channel per group).
      ``nn.GroupNorm`` refuses those with "Expected more than 1 value per channel", a guard
      inherited from BatchNorm; normalising a single value gives 0, so the output is the bias,
      which is well defined. A seed must not crash on single-image inference at a 1 x 1 map.
      (No gain can be learned from such inputs, since the normalised value is always 0.)

    Parameters and ``state_dict`` keys are those of ``nn.GroupNorm``: ``weight`` and ``bias``.
    """

    def __init__(self, channels: int, *, zero_gain: bool = False) -> None:
        # Set before nn.GroupNorm.__init__, which calls reset_parameters().
        self.zero_gain = zero_gain
        super().__init__(get_num_groups(channels), channels)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.zero_gain:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        # torch.group_norm is the op F.group_norm calls after its size check; groupnorm_input
        # is the core's channels_last backward workaround.
        x = groupnorm_input(x, self.weight, self.bias)
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, zero_gain={self.zero_gain}"
