"""The seed modules behind the CNN blueprints.

Every seed maps ``(B, C, H, W)`` to the same shape, dtype, device and memory format, and is
*exactly* the identity when built (``torch.equal(seed(x), x)`` for finite ``x``). Identity
comes from each seed's own construction, never from a caller zeroing "the last layer":

* residual seeds compute ``x + delta(x)`` where ``delta`` ends in a GroupNorm whose gain is
  zero, so ``delta`` is exactly 0 (see :mod:`esper_blueprints_cnn.blocks` for why the gain,
  and not a conv, is the thing to zero);
* ``norm`` blends toward its GroupNorm by ``tanh(scale)`` with ``scale = 0``;
* ``attention`` multiplies by ``2 * sigmoid(logit)`` with a zero last layer, and
  ``2 * sigmoid(0)`` is exactly 1.

Each of these leaves some parameters with a zero gradient on the first step only (the ones
behind the zero factor); they receive gradient from the second step on, once the zero
factor has moved. ``reset_parameters()`` restores the birth state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper_blueprints_cnn.blocks import SeedConvBlock
from esper_blueprints_cnn.counts import bottleneck_width, se_width
from esper_blueprints_cnn.groups import SeedGroupNorm, check_channels
from esper_blueprints_cnn.options import ATTENTION_REDUCTION, BOTTLENECK_REDUCTION

__all__ = [
    "BottleneckSeed",
    "DepthwiseSeed",
    "NoopSeed",
    "NormSeed",
    "ResidualConvSeed",
    "SqueezeExcitationSeed",
]


class NoopSeed(nn.Module):
    """Returns its input unchanged; holds no parameters and no state."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class NormSeed(nn.Module):
    """``x + tanh(scale) * (GroupNorm(x) - x)``, with ``scale`` starting at 0.

    ``tanh`` bounds the mix to (-1, 1): the seed can move features at most all the way to
    their normalised version (or the same distance away from it), whatever the optimizer
    does to ``scale``. The price is saturation: once ``|scale|`` exceeds about 3, ``tanh'`` is
    below 0.01 and ``scale`` learns slowly. That only happens after the seed has committed
    fully to (or away from) normalisation, and it cannot produce NaN or overflow.

    At birth only ``scale`` has a gradient (the norm's affine parameters sit behind the
    ``tanh(0) = 0`` factor); they get one from the second step on.
    """

    def __init__(self, channels: int) -> None:
        check_channels(channels)
        super().__init__()
        self.norm = SeedGroupNorm(channels)
        self.scale = nn.Parameter(torch.zeros(1))

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        nn.init.zeros_(self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.scale) * (self.norm(x) - x)


class SqueezeExcitationSeed(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from all channels.

    ``gate = 2 * sigmoid(fc(mean_hw(x)))`` with ``fc = Linear(C, r, no bias) -> SiLU ->
    Linear(r, C) -> Sigmoid`` and ``r = max(1, C // reduction)``; the output is ``x * gate``.
    The factor 2 centres the gate's range (0, 2) on 1, so a zero last layer gives a gate of
    exactly 1 (the earlier version started at ``sigmoid(3) ~ 0.953``, a 4.7 % attenuation).
    ``fc[2]`` gets gradient at birth, ``fc[0]`` from the second step on.

    The hidden activation is SiLU (as in EfficientNet's excitation) rather than ReLU: the
    hidden layer is tiny (one unit whenever C < 2 * reduction), and a ReLU unit that is
    negative for every sample of a batch passes no gradient, which can leave ``fc[0]``
    without any. SiLU's gradient is nonzero almost everywhere.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        check_channels(channels)
        reduction = ATTENTION_REDUCTION.validate(reduction)
        super().__init__()
        self.reduction = reduction
        hidden = se_width(channels, reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )
        self._init_birth()

    def reset_parameters(self) -> None:
        self.fc[0].reset_parameters()
        self._init_birth()

    def _init_birth(self) -> None:
        nn.init.zeros_(self.fc[2].weight)
        nn.init.zeros_(self.fc[2].bias)

    def forward(self, x: Tensor) -> Tensor:
        gate = 2.0 * self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]

    def extra_repr(self) -> str:
        return f"reduction={self.reduction}"


class DepthwiseSeed(nn.Module):
    """``x + GN0(pointwise(relu(depthwise(x))))``: a depthwise-separable residual branch.

    The depthwise 3x3 conv (one filter per channel) adds spatial context; the pointwise 1x1
    conv mixes channels; ``GN0`` is a GroupNorm with zero gain, so the branch is 0 at birth.
    """

    def __init__(self, channels: int) -> None:
        check_channels(channels)
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.gn = SeedGroupNorm(channels, zero_gain=True)

    def reset_parameters(self) -> None:
        for layer in (self.depthwise, self.pointwise, self.gn):
            layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gn(self.pointwise(torch.relu(self.depthwise(x))))


class BottleneckSeed(nn.Module):
    """``x + GN0(up(relu(conv3x3(relu(down(x))))))``: the ResNet bottleneck as a residual branch.

    ``down`` and ``up`` are 1x1 convs to and from a hidden width ``b = max(8, C // reduction)``;
    the floor of 8 keeps a usable hidden width for tiny C (so ``b > C`` when C < 8, and a
    ``reduction`` larger than C simply gives ``b = 8``). ``GN0`` has zero gain; ``up`` keeps its
    default init so GroupNorm never normalises an all-zero tensor (the earlier version zeroed
    ``up`` and started with a ~316x gradient spike through ``1/sqrt(eps)``).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        check_channels(channels)
        reduction = BOTTLENECK_REDUCTION.validate(reduction)
        super().__init__()
        self.reduction = reduction
        hidden = bottleneck_width(channels, reduction)
        self.down = nn.Conv2d(channels, hidden, 1, bias=False)
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.up = nn.Conv2d(hidden, channels, 1, bias=False)
        self.gn = SeedGroupNorm(channels, zero_gain=True)

    def reset_parameters(self) -> None:
        for layer in (self.down, self.conv, self.up, self.gn):
            layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.relu(self.conv(torch.relu(self.down(x))))
        return x + self.gn(self.up(hidden))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction}"


class ResidualConvSeed(nn.Module):
    """``x + enhance(x)`` where ``enhance`` is a stack of :class:`SeedConvBlock`.

    All blocks but the last are ``conv -> GN -> ReLU``; the last is ``conv -> GN0`` (zero
    gain, no ReLU), so the branch is exactly 0 at birth and can still learn. With one block
    ``enhance`` is that block; with several it is an ``nn.Sequential`` of them.
    """

    def __init__(self, channels: int, kernel_size: int = 3, depth: int = 1) -> None:
        check_channels(channels)
        check_channels(depth, "depth")
        super().__init__()
        blocks = [SeedConvBlock(channels, channels, kernel_size) for _ in range(depth - 1)]
        blocks.append(SeedConvBlock(channels, channels, kernel_size, activation=False, zero_init=True))
        self.enhance: nn.Module = blocks[0] if depth == 1 else nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        for module in self.enhance.modules():
            if isinstance(module, SeedConvBlock):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.enhance(x)
