"""The seed modules. Each is exactly the identity when built: its last layer starts at
zero, so inserting it changes nothing until training moves that layer."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PointwiseSeed", "TokenShiftSeed"]


class PointwiseSeed(nn.Module):
    """``x + up(GELU(down(x)))`` with 1x1 convolutions on ``(B, C, H, W)``.

    1x1 convolutions keep channels_last input channels_last and work at any H, W.
    ``up`` is zero at birth; ``down`` keeps its default init so ``up`` gets a gradient on
    the first step and ``down`` from the second on (GELU's slope is never exactly zero).
    """

    def __init__(self, dim: int, expansion: int = 2, bias: bool = False) -> None:
        super().__init__()
        hidden = expansion * dim
        self.down = nn.Conv2d(dim, hidden, kernel_size=1, bias=bias)
        self.up = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        nn.init.zeros_(self.up.weight)
        if self.up.bias is not None:
            nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


class TokenShiftSeed(nn.Module):
    """``x + proj(x shifted `shift` steps later along T)`` on ``(B, T, D)``.

    Position t only sees position t - shift (zeros before the start), so the seed is causal.
    """

    def __init__(self, dim: int, shift: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.shift = shift
        self.proj = nn.Linear(dim, dim, bias=bias)
        nn.init.zeros_(self.proj.weight)
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        # pad `shift` zero tokens at the front of T, keep the first `length`: token t <- t - shift
        shifted = nn.functional.pad(x, (0, 0, self.shift, 0))[:, :length]
        return x + self.proj(shifted)

    def extra_repr(self) -> str:
        return f"shift={self.shift}"
