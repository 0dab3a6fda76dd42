"""The ``lora`` and ``lora_large`` blueprints: a low-rank residual update.

Standard LoRA initialisation: ``down`` keeps PyTorch's default init and ``up`` starts at
zero, so the seed is exactly the identity at birth, ``up`` learns from the first step and
``down`` from the second. Both projections act on each position alone, so the seed is
causal. One class serves both blueprints; they differ only in the default ``rank``.

The seed is linear in its input, ``y = (I + up·down) x``: :meth:`LoRASeed.affine_form` gives
that matrix, so ``esper_core.fold(model, merge="auto")`` merges a fossilized LoRA seed into
the host layer whose output it sees (``docs/shipping.md``).
"""

from __future__ import annotations

import torch
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

    def affine_form(self) -> tuple[Tensor, None]:
        """``(I + up.weight @ down.weight, None)``: the ``(D, D)`` float64 matrix with ``seed(x) = x Mᵀ``."""
        up, down = self.up.weight.detach(), self.down.weight.detach()
        eye = torch.eye(up.shape[0], dtype=torch.float64, device=up.device)
        return eye + up.to(torch.float64) @ down.to(torch.float64), None
