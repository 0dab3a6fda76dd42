"""A seed that is not the identity at birth is reported when it germinates.

The kind: G0's probe already runs the candidate; whatever it computes untrained (a residual
branch left at its random initialisation, a scale that is not 1, a bias) shows as an output
that differs from the input. It is not a G0 failure (the alpha schedule starts at 0, so the
host's output is unchanged at germination either way), but the model changes by that
untrained computation as soon as alpha grows: the slot says so once, as a ``SeedWarning``
event and a Python ``LifecycleWarning``, with the measured difference. Every shipped
blueprint is the identity at birth, so none of them may warn.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from esper_core._loader import SHIPPED
from esper_core.errors import LifecycleWarning
from esper_core.plugins import normalize_distribution
from esper_core.registry import get_topology, list_blueprints, provenance, temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage
from esper_core.telemetry import SeedEvent, SeedWarning

CODE = "not_identity_at_birth"


class _Residual(nn.Module):
    """``x + conv1x1(x)`` with the conv at its random initialisation (the reported pack's seed)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class _Scaled(nn.Module):
    """``s * x`` with ``s`` starting away from 1 (no residual branch at all)."""

    def __init__(self, dim: int, scale: float = 1.5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1)


class _Bias(nn.Module):
    """``x + b`` with ``b`` = 0.25 on the feature axis of a sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((dim,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


SPECS = (
    BlueprintSpec("nid_residual", "cnn", _Residual, lambda dim: dim * dim + dim, "untrained residual"),
    BlueprintSpec("nid_scaled", "cnn", _Scaled, lambda dim: dim, "scale 1.5"),
    BlueprintSpec("nid_bias", "transformer", _Bias, lambda dim: dim, "bias 0.25"),
)


def _germinate(slot: SeedSlot, blueprint: str) -> tuple[list[SeedEvent], list[str]]:
    events: list[SeedEvent] = []
    slot.add_observer(events.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slot.germinate(blueprint)
    return events, [str(w.message) for w in caught if issubclass(w.category, LifecycleWarning)]


def _probe_error(slot: SeedSlot) -> float:
    """What G0's probe measures, recomputed here: the eval output on the probe input vs the input."""
    x = get_topology(slot.topology).example_input(
        slot.dim, batch=2, generator=torch.Generator().manual_seed(0)
    )
    seed = slot.seed
    assert seed is not None
    seed.eval()
    with torch.no_grad():
        return float((seed(x.clone()) - x).abs().max())


@pytest.mark.parametrize(
    ("blueprint", "topology"), [("nid_residual", "cnn"), ("nid_scaled", "cnn"), ("nid_bias", "transformer")]
)
def test_a_seed_that_is_not_the_identity_at_birth_is_reported_once(blueprint: str, topology: str) -> None:
    torch.manual_seed(0)
    with temporary_blueprints(*SPECS):
        slot = SeedSlot("s", topology=topology, dim=4)
        events, messages = _germinate(slot, blueprint)
        assert slot.stage is SeedStage.GERMINATED  # reported, not refused
        expected = _probe_error(slot)
        assert expected > 0
        (warning,) = [e for e in events if isinstance(e, SeedWarning) and e.code == CODE]
        assert f"max|output - input| = {expected:.3g}" in warning.message
        assert f"blueprint {blueprint!r} is not the identity at birth" in warning.message
        assert len(messages) == 1 and f"{expected:.3g}" in messages[0]
        assert CODE in slot.report().warnings
        # Once per seed: the rest of its life does not repeat it.
        slot.advance()
        assert sum(isinstance(e, SeedWarning) and e.code == CODE for e in events) == 1


def test_the_bias_instance_measures_exactly_its_bias() -> None:
    with temporary_blueprints(*SPECS):
        slot = SeedSlot("s", topology="transformer", dim=4)
        events, _ = _germinate(slot, "nid_bias")
    (warning,) = [e for e in events if isinstance(e, SeedWarning) and e.code == CODE]
    assert "max|output - input| = 0.25 " in warning.message


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_no_shipped_blueprint_warns(topology: str) -> None:
    shipped = [
        spec
        for spec in list_blueprints(topology)
        if normalize_distribution(provenance(f"{topology}:{spec.name}").distribution) in SHIPPED
    ]
    assert len(shipped) >= 8  # both packs ship eight blueprints each
    for spec in shipped:
        dim = 64
        torch.manual_seed(0)
        slot = SeedSlot("s", topology=topology, dim=dim)
        try:
            events, messages = _germinate(slot, spec.name)
        except Exception as exc:  # not buildable at this dim: nothing to probe
            pytest.fail(f"{topology}:{spec.name} did not germinate at dim {dim}: {exc}")
        assert not [e for e in events if isinstance(e, SeedWarning) and e.code == CODE], spec.name
        assert not [m for m in messages if "identity at birth" in m], spec.name
