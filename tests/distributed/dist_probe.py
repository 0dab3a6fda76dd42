"""A tiny test blueprint registered through the registry (every option type the codec carries)."""

from __future__ import annotations

import torch
from torch import nn

from esper_core import BlueprintSpec, Option


class Probe(nn.Module):
    """x + up(act(down(x))) with 1x1 convolutions; ``up`` starts at zero, so it is the identity at birth."""

    def __init__(self, dim: int, hidden: int, gain: float, bias: bool, act: str) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, hidden, 1, bias=bias)
        self.up = nn.Conv2d(hidden, dim, 1, bias=bias)
        self.gain = gain
        self.act = torch.tanh if act == "tanh" else torch.relu
        nn.init.zeros_(self.up.weight)
        if bias:
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain * self.up(self.act(self.down(x)))


def _count(dim: int, hidden: int, gain: float, bias: bool, act: str) -> int:
    return 2 * dim * hidden + ((hidden + dim) if bias else 0)


PROBE = BlueprintSpec(
    name="dist_probe",
    topology="cnn",
    factory=lambda dim, **o: Probe(dim, **o),
    param_count=_count,
    description="distributed-test probe: residual 1x1 bottleneck",
    options=(
        Option("hidden", int, 2, "bottleneck width", minimum=1),
        Option("gain", float, 1.0, "residual gain"),
        Option("bias", bool, True, "use biases"),
        Option("act", str, "tanh", "activation", choices=("tanh", "relu")),
    ),
)
