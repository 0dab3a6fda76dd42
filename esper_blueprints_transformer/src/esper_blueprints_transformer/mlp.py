"""The ``mlp_small`` and ``mlp`` blueprints: one position-wise feed-forward seed.

Both blueprints are the same module built by the same factory; they differ only in the
default ``expansion`` (2 and 4). The output projection ``fc2`` starts at zero, so the
seed is the identity at birth; ``fc2`` learns from the first step and ``fc1`` once ``fc2``
is non-zero. Everything acts per position, so the seed is causal.

``checkpoint=True`` trades compute for memory: the hidden activation (``expansion`` times
wider than the input) is not kept for backward but recomputed, using non-reentrant
activation checkpointing so that it composes with ``torch.compile`` and with inputs that do
not require grad. Outputs and gradients are the same as without it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as activation_checkpoint

__all__ = ["MLPSeed", "build_mlp"]


class MLPSeed(nn.Module):
    """``y = x + fc2(gelu(fc1(x)))`` with exact GELU and a zero-initialised ``fc2``."""

    def __init__(self, dim: int, expansion: int, *, checkpoint: bool = False) -> None:
        super().__init__()
        self.expansion = expansion
        self.use_checkpoint = checkpoint
        self.fc1 = nn.Linear(dim, expansion * dim)
        self.fc2 = nn.Linear(expansion * dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def _delta(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))

    def forward(self, x: Tensor) -> Tensor:
        # Checkpointing only pays off when autograd would otherwise keep the hidden
        # activation alive: in training with grad enabled. Eval and no_grad take the plain path.
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            delta = activation_checkpoint(self._delta, x, use_reentrant=False)
        else:
            delta = self._delta(x)
        return x + delta


def build_mlp(dim: int, *, expansion: int, checkpoint: bool = False) -> MLPSeed:
    """The one factory behind ``mlp_small`` and ``mlp`` (B3-TFM-04: no duplicated classes)."""
    return MLPSeed(dim, expansion, checkpoint=checkpoint)
