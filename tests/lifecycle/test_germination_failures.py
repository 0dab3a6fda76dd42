"""Germinations the blueprint makes fail: the slot stays DORMANT and the global RNG as it was.

The kind: anything between drawing the candidate's initial weights and committing it may
raise (the pack's factory after it built some layers, the pack's forward on G0's probe
input) or be refused by G0. The slot promises that a failed command leaves the slot *and*
the global RNG unchanged, so a run that goes on after the failure (the controller does)
draws the same numbers it would have drawn without the attempt. G0 also refuses a seed
whose parameters or probe output are already NaN/inf: it could never pass a later gate.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper_core.errors import BlueprintError, GerminationRefusedError
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
    [("rng_factory", BlueprintError), ("rng_forward", GerminationRefusedError)],
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


class _Scaled(nn.Module):
    def __init__(self, dim: int, scale: float, init: float = 0.0) -> None:
        super().__init__()
        self.scale = scale
        self.w = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.w.view(1, -1, 1, 1)


NONFINITE = {
    "nan_output": (lambda dim: _Scaled(dim, float("nan")), "nonfinite_output"),
    "inf_output": (lambda dim: _Scaled(dim, float("inf")), "nonfinite_output"),
    "nan_parameters": (lambda dim: _Scaled(dim, 1.0, init=float("nan")), "nonfinite_parameters_output"),
}


@pytest.mark.parametrize("name", sorted(NONFINITE))
def test_g0_refuses_a_seed_that_is_non_finite_from_the_start(name: str) -> None:
    factory, check = NONFINITE[name]
    slot = SeedSlot("s", topology="cnn", dim=4, gates=QualityGates("permissive"))
    with temporary_blueprints(BlueprintSpec(name, "cnn", factory, lambda dim: dim, "non-finite")):
        rng = torch.random.get_rng_state()
        with pytest.raises(GerminationRefusedError, match=check) as caught:
            slot.germinate(name)
        assert caught.value.checks_failed == (check,)
        assert (caught.value.slot_id, caught.value.blueprint) == ("s", name)
        assert torch.equal(torch.random.get_rng_state(), rng)
        assert slot.stage is SeedStage.DORMANT and slot.seed is None


def test_the_same_seed_with_finite_values_passes_g0() -> None:
    """The control: the non-finite fixtures above fail G0 for their values only."""
    slot = SeedSlot("s", topology="cnn", dim=4, gates=QualityGates("permissive"))
    with temporary_blueprints(
        BlueprintSpec("finite", "cnn", lambda dim: _Scaled(dim, 1.0), lambda d: d, "ok")
    ):
        slot.germinate("finite")
    assert slot.stage is SeedStage.GERMINATED
