"""The ``lora`` and ``lora_large`` blueprints: a low-rank residual update.

Standard LoRA initialisation: ``down`` keeps PyTorch's default init and ``up`` starts at
zero, so the seed is exactly the identity at birth, ``up`` learns from the first step and
``down`` from the second. Both projections act on each position alone, so the seed is
causal. One class serves both blueprints; they differ only in the default ``rank``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LoRASeed"]


class LoRASeed(nn.Module):
    """``y = x + up(down(x))`` with ``down: D→rank`` and a zero-initialised ``up: rank→D``."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.down(x))
