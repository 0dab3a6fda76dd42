"""Checkpoints record which distribution registered each seed's blueprint, and say what to install."""

from __future__ import annotations

import pytest
from torch import nn

from esper_core.errors import CheckpointError
from esper_core.gates import QualityGates
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.slot_state import Provenance
from esper_core.spec import BlueprintSpec

SPEC = BlueprintSpec(
    name="provenance_probe",
    topology="cnn",
    factory=lambda dim: nn.Identity(),
    param_count=lambda dim: 0,
    description="a blueprint only registered inside the test",
)


def _slot() -> SeedSlot:
    return SeedSlot("s", topology="cnn", dim=4, gates=QualityGates("permissive"))


def test_the_envelope_records_the_distribution_and_version() -> None:
    with temporary_blueprints(SPEC, distribution="esper-blueprints-rare"):
        slot = _slot()
        slot.germinate("provenance_probe")
        assert slot.state.seed.provenance == Provenance(distribution="esper-blueprints-rare", version="0")
        state = slot.state_dict()
        fresh = _slot()
        fresh.load_state_dict(state)
        assert fresh.state.seed.provenance == slot.state.seed.provenance


def test_an_unknown_blueprint_says_which_distribution_to_install() -> None:
    with temporary_blueprints(SPEC, distribution="esper-blueprints-rare"):
        slot = _slot()
        slot.germinate("provenance_probe")
        state = slot.state_dict()
    target = _slot()  # the pack is gone now
    with pytest.raises(CheckpointError, match=r"state\.seed\.blueprint.*esper-blueprints-rare") as info:
        target.load_state_dict(state)
    assert "0" in str(info.value)
    assert target.state.seed is None  # nothing changed
