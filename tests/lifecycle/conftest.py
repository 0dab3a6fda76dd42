"""Fixtures for the lifecycle tests: tiny blueprints registered only for the test session.

The tests never depend on the blueprint packs being installed. Every test blueprint is
exactly the identity at birth (a residual whose last layer starts at zero), like a real
blueprint, so the tests exercise the same contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from esper_core.options import Option
from esper_core.registry import temporary_blueprints
from esper_core.spec import BlueprintSpec


class ResidualConv(nn.Module):
    """``x + conv2(relu(conv1(x)))`` with ``conv2`` zero-initialised."""

    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()
        width = hidden or dim
        self.conv1 = nn.Conv2d(dim, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, dim, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class ResidualNorm(nn.Module):
    """``x + scale * (groupnorm(x) - x)``: a GroupNorm applied directly to the seed input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1 if dim < 4 else 2, dim)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * (self.norm(x) - x)


class Lora(nn.Module):
    """``x + up(down(x))`` with ``up`` zero-initialised."""

    def __init__(self, dim: int, rank: int = 8) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / math.sqrt(dim))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


class Mlp(nn.Module):
    """``x + fc2(gelu(fc1(x)))`` with ``fc2`` zero-initialised."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(nn.functional.gelu(self.fc1(x)))


def _frozen_conv(dim: int) -> nn.Module:
    module = ResidualConv(dim)
    module.requires_grad_(False)
    return module


class Shrink(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def _conv_params(dim: int, hidden: int = 0) -> int:
    width = hidden or dim
    return dim * width * 9 + width + width * dim * 9 + dim


def _norm_params(dim: int) -> int:
    return 2 * dim + 1


def _spec(name: str, topology: str, factory, count, options=()) -> BlueprintSpec:  # type: ignore[no-untyped-def]
    return BlueprintSpec(
        name=name,
        topology=topology,
        factory=factory,
        param_count=count,
        description=f"lifecycle test blueprint {name}",
        options=options,
    )


RANK = Option(name="rank", type=int, default=8, help="LoRA rank", minimum=1)
HIDDEN = Option(name="hidden", type=int, default=0, help="hidden width (0 = dim)", minimum=0)

TEST_SPECS = (
    _spec("lc_noop", "cnn", lambda dim: nn.Identity(), lambda dim: 0),
    _spec("lc_conv", "cnn", lambda dim, hidden=0: ResidualConv(dim, hidden), _conv_params, (HIDDEN,)),
    _spec("lc_norm", "cnn", lambda dim: ResidualNorm(dim), _norm_params),
    _spec("lc_frozen", "cnn", _frozen_conv, lambda dim: _conv_params(dim)),
    _spec("lc_shrink", "cnn", lambda dim: Shrink(), lambda dim: 0),
    _spec("lc_noop", "transformer", lambda dim: nn.Identity(), lambda dim: 0),
    _spec(
        "lc_lora",
        "transformer",
        lambda dim, rank=8: Lora(dim, rank),
        lambda dim, rank=8: 2 * dim * rank,
        (RANK,),
    ),
    _spec(
        "lc_mlp",
        "transformer",
        lambda dim: Mlp(dim),
        lambda dim: dim * 2 * dim + 2 * dim + 2 * dim * dim + dim,
    ),
)


@pytest.fixture(scope="module", autouse=True)
def lifecycle_blueprints() -> Iterator[tuple[BlueprintSpec, ...]]:
    with temporary_blueprints(*TEST_SPECS, distribution="esper-lifecycle-tests"):
        yield TEST_SPECS


# ---- helpers shared by the slot tests (exposed through the ``lc`` fixture) --------------------


def snapshot(slot) -> dict:  # type: ignore[no-untyped-def]
    """Everything a rejected call must leave unchanged: the lifecycle state value, the
    checkpoint envelope, which modules exist, and every tensor of the state dict."""
    from esper_core.checkpoint import slot_envelope

    return {
        "state": slot.state,
        "modules": (slot.seed is not None, slot.blend_gate is not None),
        "requires_grad": tuple(p.requires_grad for p in slot.seed_parameters()),
        "tensors": {
            k: v.detach().clone() for k, v in slot.state_dict().items() if isinstance(v, torch.Tensor)
        },
        "envelope": slot_envelope(slot),
    }


def same_snapshot(a: dict, b: dict) -> bool:
    ta, tb = a["tensors"], b["tensors"]
    if set(ta) != set(tb) or not all(torch.equal(ta[k], tb[k]) for k in ta):
        return False
    rest_a = {k: v for k, v in a.items() if k != "tensors"}
    rest_b = {k: v for k, v in b.items() if k != "tensors"}
    return rest_a == rest_b


def make_slot(topology: str = "cnn", dim: int = 8, policy: str = "permissive", **kwargs):  # type: ignore[no-untyped-def]
    from esper_core.gates import QualityGates
    from esper_core.slot import SeedSlot

    return SeedSlot("r0c0", topology=topology, dim=dim, gates=QualityGates(policy), **kwargs)


def drive(slot, stage, blueprint: str = "lc_conv", **germinate_kwargs):  # type: ignore[no-untyped-def]
    """Take a fresh permissive slot to ``stage`` through the public API."""
    from esper_core.stages import SeedStage as S

    if stage is S.DORMANT:
        return slot
    germinate_kwargs.setdefault("ramp_epochs", 2)
    slot.germinate(blueprint, **germinate_kwargs)
    if stage is S.GERMINATED:
        return slot
    if stage in (S.PRUNED, S.EMBARGOED, S.RESETTING):
        slot.prune("test", "test")
        ticks = {S.PRUNED: 0, S.EMBARGOED: 1, S.RESETTING: 1 + slot.embargo_epochs}[stage]
        for _ in range(ticks):
            slot.step_epoch()
        assert slot.stage is stage
        return slot
    assert slot.advance(S.TRAINING).passed
    slot.record_accuracy(50.0)
    if stage is S.TRAINING:
        return slot
    assert slot.advance(S.BLENDING).passed
    if stage is S.BLENDING:
        return slot
    while not slot.schedule.at_rest or slot.alpha < 1.0:
        slot.step_epoch()
    assert slot.advance(S.HOLDING).passed
    if stage is S.HOLDING:
        return slot
    slot.record_counterfactual(2.0)
    assert slot.advance(S.FOSSILIZED).passed
    return slot


class Helpers:
    snapshot = staticmethod(snapshot)
    same_snapshot = staticmethod(same_snapshot)
    make_slot = staticmethod(make_slot)
    drive = staticmethod(drive)


@pytest.fixture
def lc() -> type[Helpers]:
    return Helpers
