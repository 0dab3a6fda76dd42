"""Toy blueprints for host tests, so they do not depend on the two packs' internals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from esper_core.gates import QualityGates
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage


class ToyConv(nn.Module):
    """``x + conv1x1(x)`` with the conv zero-initialised: identity at birth, every weight learns."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class ToyLinear(nn.Module):
    """``x + linear(x)`` with the linear zero-initialised (causal: per position)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class ToyScale(nn.Module):
    """``x * (1 + s)`` with one scalar per channel: a second, cheaper CNN blueprint."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.s)


TOY_SPECS = (
    BlueprintSpec("toy_conv", "cnn", ToyConv, lambda dim: dim * dim + dim, "test: residual 1x1 conv"),
    BlueprintSpec("toy_scale", "cnn", ToyScale, lambda dim: dim, "test: per-channel scale"),
    BlueprintSpec(
        "toy_linear", "transformer", ToyLinear, lambda dim: dim * dim + dim, "test: residual linear"
    ),
)


@pytest.fixture(autouse=True)
def toy_blueprints() -> Iterator[None]:
    with temporary_blueprints(*TOY_SPECS, distribution="hosts-tests"):
        yield


@pytest.fixture
def permissive() -> QualityGates:
    return QualityGates("permissive")


def drive(slot: SeedSlot, target: SeedStage, accuracy: float = 50.0, contribution: float = 1.0) -> None:
    """Walk a germinated seed forward under permissive gates until it reaches ``target``."""
    for _ in range(40):
        if slot.stage is target:
            return
        slot.record_accuracy(accuracy)
        if slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING) and slot.alpha > 0:
            slot.record_counterfactual(contribution)
        if slot.evaluate().passed:
            slot.advance()
        if slot.stage is not target:
            slot.step_epoch()
    raise AssertionError(f"slot {slot.slot_id} stuck in {slot.stage.name}, wanted {target.name}")
