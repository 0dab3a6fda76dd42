"""A germination that fails while building or probing the candidate leaves the global RNG as it was.

The kind: anything between drawing the candidate's initial weights and committing it may
raise (the pack's factory after it built some layers, the pack's forward on G0's probe
input). The slot promises that a failed command leaves the slot *and* the global RNG
unchanged, as a G0 refusal does, so a run that goes on after the failure draws the same
numbers it would have drawn without the attempt.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper_core.errors import BlueprintError, LifecycleError
from esper_core.gates import QualityGates
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage


def _builds_then_raises(dim: int) -> nn.Module:
    nn.Linear(dim, dim)  # draws from the global RNG first
    raise ValueError("cannot build this")


class _ForwardRaises(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 1)  # drawn from the global RNG

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward cannot run")


SPECS = (
    BlueprintSpec("rng_factory", "cnn", _builds_then_raises, lambda dim: 0, "factory raises"),
    BlueprintSpec("rng_forward", "cnn", _ForwardRaises, lambda dim: dim * dim + dim, "forward raises"),
)


@pytest.mark.parametrize(
    ("name", "error"),
    [("rng_factory", BlueprintError), ("rng_forward", LifecycleError)],
)
def test_a_failed_build_or_probe_leaves_the_rng_and_slot_unchanged(name: str, error: type) -> None:
    slot = SeedSlot("s", topology="cnn", dim=4, gates=QualityGates("permissive"))
    with temporary_blueprints(*SPECS):
        torch.manual_seed(11)
        rng = torch.random.get_rng_state()
        with pytest.raises(error, match=name):
            slot.germinate(name)
        assert torch.equal(torch.random.get_rng_state(), rng)
    assert slot.stage is SeedStage.DORMANT and slot.seed is None and slot.available
