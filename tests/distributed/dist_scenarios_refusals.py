"""Scenarios: candidates the blueprint makes fail, under a DistributedLifecycle on every rank.

The controllers of both ranks see the same (reduced) evaluation. Bad candidates - one G0
refuses (it writes into its input), one whose factory raises, one that writes into its
input on rank 1 only - must be refused identically on every rank (G0's verdict is rank
0's), the good candidate germinated on both, and the controllers' memories identical.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from esper_core.control import ControllerConfig, HeuristicController
from esper_core.distributed import DistributedLifecycle
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import Evaluation, MorphogeneticModel
from esper_core.registry import temporary_blueprints
from esper_core.spec import BlueprintSpec


class _Writes(nn.Module):
    """``size * dim`` parameters; writes into its input when ``writes()`` says so."""

    def __init__(self, dim: int, size: int, writes) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(size * dim))
        self.writes = writes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.writes():
            x.mul_(1)
        return x * (1 + self.w[: x.shape[1]].view(1, -1, 1, 1))


def _raises(dim: int) -> nn.Module:
    nn.Linear(dim, dim)  # draws from the RNG first
    raise ValueError("the pack cannot build this")


SPECS = (
    BlueprintSpec("dist_inplace", "cnn", lambda dim: _Writes(dim, 10, lambda: True), lambda d: 10 * d, "bad"),
    BlueprintSpec("dist_raises", "cnn", _raises, lambda d: 12 * d, "bad factory"),
    # larger than dist_probe (42 at dim 8), so tried first; rank 1 alone sees the write,
    # and rank 0's verdict (pass) is committed on both ranks
    BlueprintSpec(
        "dist_rank1_writes",
        "cnn",
        lambda dim: _Writes(dim, 8, lambda: dist.get_rank() == 1),
        lambda d: 8 * d,
        "ok",
    ),
)


def refusals_agree(rank: int, group) -> dict:
    with temporary_blueprints(*SPECS):
        torch.manual_seed(0)
        model = MorphogeneticModel(
            CNNHost(3, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates("permissive")
        )
        lifecycle = DistributedLifecycle(model, group=group, timeout=10)
        config = ControllerConfig(
            param_budget=1000,
            plateau_window=1,
            plateau_min_delta=100.0,
            warmup_epochs=1,
            max_concurrent=2,
            include=("dist_inplace", "dist_raises", "dist_rank1_writes", "dist_probe"),
        )
        controller = HeuristicController(model.slots, config, lifecycle=lifecycle)
        for epoch in range(4):
            controller.step(Evaluation(50.0, {}, samples=10), epoch)
        lifecycle.check_drift()
        lifecycle.close()
    state = controller.state_dict()
    return {
        "state": state,
        "stages": {s: slot.stage.name for s, slot in model.slots.items()},
        "blueprints": {s: slot.report().blueprint for s, slot in model.slots.items()},
        "rng": float(torch.rand(1)),
    }


SCENARIOS = [("refusals_agree", refusals_agree)]
