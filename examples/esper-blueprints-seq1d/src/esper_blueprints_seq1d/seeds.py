"""The seed modules, on ``(B, C, L)`` input. Each is exactly the identity at birth (its
last layer is zero) and causal along L (position t never sees a later position)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CausalConvSeed", "ShiftMixSeed"]


class CausalConvSeed(nn.Module):
    """``x + mix(GELU(depthwise(x)))``; the depthwise convolution only looks back.

    Padding ``kernel_size - 1`` zeros on the left of L (and none on the right) makes output
    position t depend on inputs ``t - kernel_size + 1 .. t`` only. ``mix`` (1x1) is zero at
    birth; ``depthwise`` keeps its default init, so both learn (GELU's slope is never 0).
    """

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=bias)
        self.mix = nn.Conv1d(dim, dim, kernel_size=1, bias=bias)
        nn.init.zeros_(self.mix.weight)
        if self.mix.bias is not None:
            nn.init.zeros_(self.mix.bias)

    def forward(self, x: Tensor) -> Tensor:
        past = nn.functional.pad(x, (self.kernel_size - 1, 0))  # zeros before position 0
        return x + self.mix(nn.functional.gelu(self.depthwise(past)))


class ShiftMixSeed(nn.Module):
    """``x + mix(x shifted `shift` steps later along L)``: position t sees t - shift."""

    def __init__(self, dim: int, shift: int = 1) -> None:
        super().__init__()
        self.shift = shift
        self.mix = nn.Conv1d(dim, dim, kernel_size=1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        shifted = nn.functional.pad(x, (self.shift, 0))[..., :length]
        return x + self.mix(shifted)

    def extra_repr(self) -> str:
        return f"shift={self.shift}"
