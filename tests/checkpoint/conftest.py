"""Fixtures for the checkpoint tests: tiny test blueprints and slots in every stage.

The blueprints are registered only while this directory's test modules run. They are
deliberately *not* the identity at birth: a seed whose output differs from the host makes a
resume that restored the wrong alpha, gate or weights visible in the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from esper_core.blend import BlendAlgorithm
from esper_core.gates import QualityGates
from esper_core.options import Option
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec


class ConvSeed(nn.Module):
    """Residual 1x1 convolution through a hidden width (shape-preserving on (B, C, H, W))."""

    def __init__(self, dim: int, hidden: int = 4, scale: float = 0.5) -> None:
        super().__init__()
        self.inner = nn.Conv2d(dim, hidden, 1)
        self.outer = nn.Conv2d(hidden, dim, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.outer(torch.tanh(self.inner(x)))


class TokenSeed(nn.Module):
    """Residual per-token MLP (no mixing along T, so causal)."""

    def __init__(self, dim: int, hidden: int = 4) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, hidden)
        self.outer = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(torch.tanh(self.inner(x)))


def _mlp_count(dim: int, hidden: int, **_: Any) -> int:
    return 2 * dim * hidden + hidden + dim


TEST_BLUEPRINTS = (
    BlueprintSpec(
        name="ckpt_conv",
        topology="cnn",
        factory=ConvSeed,
        param_count=_mlp_count,
        description="checkpoint-test residual 1x1 conv",
        options=(
            Option("hidden", int, 4, "hidden channels", minimum=1, maximum=64),
            Option("scale", float, 0.5, "residual scale", minimum=0.0, maximum=2.0),
        ),
    ),
    BlueprintSpec(
        name="ckpt_token",
        topology="transformer",
        factory=TokenSeed,
        param_count=_mlp_count,
        description="checkpoint-test residual token MLP",
        options=(Option("hidden", int, 4, "hidden width", minimum=1, maximum=64),),
    ),
)

#: Scenario names accepted by the ``stage_slot`` fixture, each a distinct lifecycle state.
SCENARIOS = (
    "dormant",
    "germinated",
    "training",
    "blending",
    "blending_gate",
    "blending_multiply",
    "holding",
    "fossilized",
    "pending_prune",
    "pruned",
    "embargoed",
    "resetting",
    "dormant_again",
)


@pytest.fixture(scope="module", autouse=True)
def checkpoint_blueprints() -> Iterator[None]:
    # One intra-op thread: these tensors are tiny, and on a busy machine a thread pool makes
    # each op tens of times slower. Restored afterwards for the rest of the suite.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with temporary_blueprints(*TEST_BLUEPRINTS, distribution="esper-checkpoint-tests"):
            yield
    finally:
        torch.set_num_threads(threads)


def new_slot(topology: str = "cnn", dim: int = 6, slot_id: str = "s0") -> SeedSlot:
    return SeedSlot(slot_id, topology=topology, dim=dim, gates=QualityGates("permissive"), embargo_epochs=2)


def example(slot: SeedSlot, seed: int = 0) -> torch.Tensor:
    """A small input for ``slot`` drawn from a private generator."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, slot.dim, 3, 3) if slot.topology == "cnn" else (2, 4, slot.dim)
    return torch.randn(shape, generator=g)


def _train_epoch(slot: SeedSlot, accuracy: float) -> None:
    """One tiny SGD step on the seed (if it runs), then the epoch's accuracy."""
    x = example(slot, seed=int(accuracy)).requires_grad_(True)
    params = slot.seed_parameters()
    if params:
        slot(x).square().mean().backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= 0.1 * p.grad
                    p.grad = None
    slot.record_accuracy(accuracy)


def build_scenario(name: str, topology: str = "cnn") -> SeedSlot:
    """A slot driven through the public API into the lifecycle state ``name``."""
    torch.manual_seed(1234)
    slot = new_slot(topology)
    if name == "dormant":
        return slot
    blueprint = "ckpt_conv" if topology == "cnn" else "ckpt_token"
    algorithm = {"blending_gate": BlendAlgorithm.GATE, "blending_multiply": BlendAlgorithm.MULTIPLY}.get(
        name, BlendAlgorithm.ADD
    )
    options = {"hidden": 3}
    slot.germinate(blueprint, options=options, algorithm=algorithm, ramp_epochs=3)
    if name == "germinated":
        return slot
    _train_epoch(slot, 40.0)
    slot.advance()
    _train_epoch(slot, 42.0)
    if name == "training":
        return slot
    if name in ("pruned", "embargoed", "resetting", "dormant_again"):
        slot.prune("test_prune", "tester")
        for _ in range({"pruned": 0, "embargoed": 1, "resetting": 3, "dormant_again": 4}[name]):
            slot.step_epoch()
        return slot
    slot.advance()
    slot.step_epoch()
    _train_epoch(slot, 45.0)
    if name.startswith("blending"):
        return slot
    slot.step_epoch()
    slot.step_epoch()
    _train_epoch(slot, 47.0)
    slot.advance()
    slot.record_counterfactual(2.5)
    if name == "holding":
        return slot
    if name == "pending_prune":
        slot.schedule_prune(3, reason="test_schedule", initiator="tester")
        slot.step_epoch()
        return slot
    slot.advance()
    assert name == "fossilized", name
    return slot


@pytest.fixture(params=SCENARIOS)
def scenario_name(request: pytest.FixtureRequest) -> str:
    """Each lifecycle state of :data:`SCENARIOS` in turn (a test using it runs once per state)."""
    return request.param


# The three helpers below return plain functions (no state), so module scope is safe and
# lets Hypothesis tests use them.
@pytest.fixture(scope="module")
def scenario() -> Callable[..., SeedSlot]:
    return build_scenario


@pytest.fixture(scope="module")
def fresh_slot() -> Callable[..., SeedSlot]:
    return new_slot


@pytest.fixture(scope="module")
def example_input() -> Callable[..., torch.Tensor]:
    return example
