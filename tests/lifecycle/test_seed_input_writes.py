"""A seed may never change the host's tensor (issue 15 item 9, the slot's half).

The kind: the seed reads the host's features through a view (``h`` itself, or ``h.detach()``
behind the gradient stop), which shares storage and version counter with the host's tensor.
Any in-place write by the seed - into the values, or only the version counter, directly or
through a view, in eval or only in training mode - would change the host's features.
G0 probes the candidate in both modes and refuses it (slot DORMANT, RNG untouched); a seed
that writes only on some inputs is caught in forward, in every stage that runs it, before
the changed features go any further.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from esper_core._build import probe_seed
from esper_core.errors import LifecycleError
from esper_core.gates import QualityGates
from esper_core.registry import get_topology, temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage as S
from esper_core.telemetry import SeedEvent


class ReluInPlaceConv(nn.Module):
    """The issue's blueprint: ``x + conv0(relu_(x))``, conv0 a zero-initialised 1x1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.conv0.weight)
        nn.init.zeros_(self.conv0.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv0(self.rewrite(x))

    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(x)


class InplaceModule(ReluInPlaceConv):
    """A module that writes in place: ``nn.ReLU(inplace=True)`` or ``nn.Dropout(inplace=True)``
    (the dropout writes in training mode only)."""

    def __init__(self, dim: int, module: nn.Module) -> None:
        super().__init__(dim)
        self.act = module

    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


class SameValues(ReluInPlaceConv):
    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(1.0)  # no value changes: only the version counter moves


class ThroughAView(ReluInPlaceConv):
    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        x[:, :1].zero_()
        return x


class OnlyInTraining(ReluInPlaceConv):
    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(x) if self.training else torch.relu(x)


class OnlyWithGrad(ReluInPlaceConv):
    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(x) if torch.is_grad_enabled() else torch.relu(x)


class OnlyOnLargeBatches(ReluInPlaceConv):
    """Passes G0 (its probe batch is 2) and writes on larger batches: caught in forward."""

    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(x) if x.shape[0] > 2 else torch.relu(x)


class Clean(ReluInPlaceConv):
    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _count(dim: int) -> int:
    return dim * dim + dim


WRITERS: dict[str, Callable[[int], nn.Module]] = {
    "relu_": ReluInPlaceConv,
    "relu_inplace_module": lambda dim: InplaceModule(dim, nn.ReLU(inplace=True)),
    "dropout_inplace": lambda dim: InplaceModule(dim, nn.Dropout(0.5, inplace=True)),
    "same_values": SameValues,
    "through_a_view": ThroughAView,
    "only_in_training": OnlyInTraining,
    "only_with_grad": OnlyWithGrad,
}
SPECS = [
    BlueprintSpec(f"w_{name}", "cnn", f, _count, f"writes into its input: {name}")
    for name, f in WRITERS.items()
]
SPECS += [
    BlueprintSpec("w_large_batches", "cnn", OnlyOnLargeBatches, _count, "writes on batches > 2"),
    BlueprintSpec("w_clean", "cnn", Clean, _count, "leaves its input alone"),
]


@pytest.fixture(autouse=True)
def _writers():  # type: ignore[no-untyped-def]
    with temporary_blueprints(*SPECS):
        yield


def _slot() -> SeedSlot:
    return SeedSlot("s", topology="cnn", dim=4, gates=QualityGates("permissive"))


def test_issue_instance_is_refused_at_g0_and_the_slot_stays_dormant() -> None:
    slot = _slot()
    events: list[SeedEvent] = []
    slot.add_observer(events.append)
    torch.manual_seed(7)
    rng = torch.random.get_rng_state()
    with pytest.raises(
        LifecycleError, match=r"G0 rejected germinating 'w_relu_' in slot 's'.*input_modified_in_place"
    ):
        slot.germinate("w_relu_")
    assert slot.stage is S.DORMANT and slot.seed is None and slot.available
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert [type(e).__name__ for e in events] == ["GateEvaluated"]
    slot.germinate("w_clean")  # the slot is usable afterwards
    assert slot.stage is S.GERMINATED


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_kind_of_write_into_the_input_is_refused_at_g0(name: str) -> None:
    slot = _slot()
    rng = torch.random.get_rng_state()
    with pytest.raises(LifecycleError, match="input_modified_in_place"):
        slot.germinate(f"w_{name}")
    assert slot.stage is S.DORMANT and slot.seed is None
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_the_training_mode_probe_leaves_no_trace() -> None:
    """Buffers (BatchNorm statistics), every submodule's mode and the global RNG as before."""
    seed = nn.Sequential(nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 4, 1))
    seed[2].eval()
    stats = [b.clone() for b in seed.buffers()]
    torch.manual_seed(3)
    rng = torch.random.get_rng_state()
    probe = probe_seed(seed, get_topology("cnn"), 4, torch.zeros(0))
    assert probe.input_preserved and probe.shape_preserved
    assert all(torch.equal(a, b) for a, b in zip(seed.buffers(), stats, strict=True))
    assert [m.training for m in seed.modules()] == [True, True, True, False]
    assert torch.equal(torch.random.get_rng_state(), rng)


def _host_features(batch: int) -> tuple[nn.Conv2d, torch.Tensor]:
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 4, 1)
    return conv, torch.randn(batch, 4, 3, 3)


def _drive(slot: SeedSlot, stage: S) -> None:
    slot.advance(S.TRAINING)
    if stage is S.TRAINING:
        return
    slot.record_accuracy(40.0)
    slot.advance(S.BLENDING)
    while not (slot.schedule.at_rest and slot.alpha == 1.0):
        slot.step_epoch()
    if stage is S.HOLDING:
        slot.record_accuracy(41.0)
        assert slot.advance(S.HOLDING).passed
    elif stage is S.PRUNED:  # the scheduled prune's ramp-down runs the seed without grad
        slot.schedule_prune(3, reason="test", initiator="tester")
        slot.step_epoch()
    assert slot.seed is not None


@pytest.mark.parametrize("stage", [S.TRAINING, S.BLENDING, S.HOLDING, S.PRUNED], ids=lambda s: s.name)
def test_a_write_that_passes_g0_is_caught_in_forward(stage: S) -> None:
    slot = _slot()
    slot.germinate("w_large_batches")  # the probe (batch 2) sees no write
    _drive(slot, stage)
    conv, x = _host_features(batch=2)
    slot(conv(x)).sum().backward()  # a batch of 2: nothing written, nothing raised
    conv, x = _host_features(batch=3)
    h = conv(x)
    before = slot.state
    with pytest.raises(LifecycleError, match=r"seed 'w_large_batches' in slot 's' wrote into its input"):
        slot(h)
    assert slot.state is before  # the error changes nothing


@pytest.mark.parametrize("stage", [S.TRAINING, S.BLENDING, S.HOLDING], ids=lambda s: s.name)
def test_a_clean_seed_leaves_the_host_tensor_exactly_as_it_was(stage: S) -> None:
    slot = _slot()
    slot.germinate("w_clean")
    _drive(slot, stage)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.normal_()
    conv, x = _host_features(batch=3)
    h = conv(x)
    copy, version = h.detach().clone(), h._version
    out = slot(h)
    out.square().sum().backward()
    assert h._version == version and torch.equal(h, copy)
    assert not torch.equal(out.detach(), copy) or stage is S.TRAINING  # the seed really ran
    assert conv.weight.grad is not None


def test_inference_mode_runs_a_clean_seed() -> None:
    """Inference tensors keep no version counter: the forward check steps aside."""
    slot = _slot()
    slot.germinate("w_clean")
    _drive(slot, S.BLENDING)
    conv, x = _host_features(batch=3)
    with torch.inference_mode():
        h = conv(x)
        torch.testing.assert_close(slot(h), slot.seed(h))  # alpha 1: the seed's output
