"""A real lifecycle for the sink tests: a user's model, injected slots, two seeds.

``features`` grows a seed from germination to FOSSILIZED; ``mid`` grows one, retargets its
alpha, schedules a prune and ends PRUNED. Everything goes through the public API, with a
real forward/backward/optimizer step per epoch. The blueprint is registered only for this
folder's tests, so the sinks are tested without depending on the installed packs.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Iterator

import attrs
import pytest
import torch
from torch import nn

from esper_core import telemetry
from esper_core.gates import QualityGates
from esper_core.inject import inject_slots
from esper_core.optim import OptimizerBinding, host_parameters
from esper_core.registry import temporary_blueprints
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage
from esper_core.telemetry import SeedEvent

BLUEPRINT = "sink_conv"


class ResidualConv(nn.Module):
    """``x + conv(x)`` with the conv zero-initialised: the identity at birth."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


SPEC = BlueprintSpec(
    name=BLUEPRINT,
    topology="cnn",
    factory=lambda dim: ResidualConv(dim),
    param_count=lambda dim: dim * dim * 9 + dim,
    description="sink tests: residual 3x3 convolution",
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mid(torch.relu(self.features(x)))))


@pytest.fixture(scope="module", autouse=True)
def sink_blueprint() -> Iterator[None]:
    with temporary_blueprints(SPEC, distribution="esper-sink-tests"):
        yield


def run_lifecycle() -> list[SeedEvent]:
    """Drive both slots; return every event in emission order (as the slots' observers saw them)."""
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 2, (16,))
    slots = inject_slots(
        model, {"features": "cnn", "mid": "cnn"}, example_input=x[:1], gates=QualityGates("permissive")
    )
    events: list[SeedEvent] = []
    for slot in slots.values():
        slot.add_observer(events.append)
    optimizer = torch.optim.SGD(host_parameters(model, slots), lr=0.05)
    OptimizerBinding(optimizer, slots)

    def epoch(accuracy: float) -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        for slot in slots.values():
            if slot.stage in (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING):
                slot.record_accuracy(accuracy)

    def blend_in(slot) -> None:  # type: ignore[no-untyped-def]
        for _ in range(20):
            if slot.alpha >= 1.0:
                return
            epoch(60.0)
            slot.step_epoch()
        raise AssertionError(f"{slot.slot_id} did not finish blending in 20 epochs")

    grown, pruned = slots["features"], slots["mid"]
    grown.germinate(BLUEPRINT, ramp_epochs=2)
    pruned.germinate(BLUEPRINT, ramp_epochs=2)
    epoch(50.0)
    for slot in (grown, pruned):
        assert slot.advance(SeedStage.TRAINING).passed
    epoch(55.0)
    for slot in (grown, pruned):
        assert slot.advance(SeedStage.BLENDING).passed
        blend_in(slot)
    assert grown.advance(SeedStage.HOLDING).passed
    grown.record_counterfactual(2.0)
    assert grown.advance(SeedStage.FOSSILIZED).passed

    pruned.set_alpha_target(0.5, 2)
    for _ in range(2):
        epoch(61.0)
        pruned.step_epoch()
    pruned.schedule_prune(2, reason="no measurable gain", initiator="test")
    for _ in range(10):
        if pruned.stage is SeedStage.PRUNED:
            break
        pruned.step_epoch()
    assert (grown.stage, pruned.stage) == (SeedStage.FOSSILIZED, SeedStage.PRUNED)
    return events


@pytest.fixture
def lifecycle() -> Callable[[], list[SeedEvent]]:
    return run_lifecycle


# ---- every event class, with a sample instance built from its annotations -----------------


def all_event_classes() -> list[type[SeedEvent]]:
    return [
        getattr(telemetry, name)
        for name in telemetry.__all__
        if isinstance(getattr(telemetry, name), type)
        and issubclass(getattr(telemetry, name), SeedEvent)
        and getattr(telemetry, name) is not SeedEvent
    ]


def _sample(tp: object) -> object:
    """A value of the annotated type ``tp``; a type not handled here fails the test by name."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return None
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)[-1]
    if origin is tuple:
        return (_sample(args[0]),) if args[-1] is Ellipsis else tuple(_sample(a) for a in args)
    samples = {bool: True, int: 3, float: 0.5, str: "text", typing.Any: "any"}
    if tp in samples:
        return samples[tp]
    raise AssertionError(
        f"no sample value for field type {tp!r}: extend _sample (and sinks.record if needed)"
    )


def sample_event(cls: type[SeedEvent]) -> SeedEvent:
    """An instance of any event class, built from its resolved field annotations."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _sample(hints[f.name]) for f in attrs.fields(cls)})


@pytest.fixture
def event_classes() -> list[type[SeedEvent]]:
    return all_event_classes()


@pytest.fixture(name="sample_event")
def sample_event_fixture() -> Callable[[type[SeedEvent]], SeedEvent]:
    return sample_event
