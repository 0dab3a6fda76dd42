"""DistributedLifecycle without a process group: same semantics, one rank."""

from __future__ import annotations

import datetime

import pytest
import torch
from dist_probe import PROBE
from torch import nn

from esper_core.alpha import AlphaCurve
from esper_core.distributed import (
    FINGERPRINT_FIELDS,
    Channel,
    DDPRewrapper,
    DistributedLifecycle,
    find_drift,
    parameter_signature,
    slot_fingerprint,
)
from esper_core.errors import DistributedError, LifecycleError
from esper_core.gates import GateLevel, QualityGates
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage


@pytest.fixture(autouse=True)
def probe_registered():
    with temporary_blueprints(PROBE):
        yield


def _slot(slot_id: str = "a", **kwargs) -> SeedSlot:
    return SeedSlot(slot_id, topology="cnn", dim=4, gates=QualityGates("permissive"), **kwargs)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 1)
        self.slots = nn.ModuleDict({"b": _slot("b"), "a": _slot("a")})


def test_local_run_matches_direct_calls() -> None:
    direct, driven = _slot(), _slot()
    dl = DistributedLifecycle([driven])
    assert (dl.rank, dl.world_size, dl.is_leader, dl.slot_ids) == (0, 1, True, ("a",))
    steps = [
        (
            lambda s: s.germinate("dist_probe", ramp_epochs=2),
            lambda: dl.germinate("a", "dist_probe", ramp_epochs=2),
        ),
        (lambda s: s.advance(), lambda: dl.advance("a")),
        (lambda s: s.record_accuracy(5.0), lambda: driven.record_accuracy(5.0)),
        (lambda s: s.advance(), lambda: dl.advance("a")),
        (lambda s: s.step_epoch(), dl.step_epoch),
        (lambda s: s.step_epoch(), dl.step_epoch),
        (lambda s: s.advance(), lambda: dl.advance("a")),
        (
            lambda s: s.set_alpha_target(0.5, 1, AlphaCurve.COSINE),
            lambda: dl.set_alpha_target("a", 0.5, 1, AlphaCurve.COSINE),
        ),
        (lambda s: s.step_epoch(), dl.step_epoch),
        (
            lambda s: s.schedule_prune(2, reason="r", initiator="i"),
            lambda: dl.schedule_prune("a", 2, reason="r", initiator="i"),
        ),
        (lambda s: s.step_epoch(), dl.step_epoch),
        (lambda s: s.step_epoch(), dl.step_epoch),
    ]
    seen = []
    for on_direct, on_driven in steps:
        on_direct(direct)
        on_driven()
        assert torch.equal(direct.state_checksum(), driven.state_checksum())
        seen.append(driven.stage)
    assert SeedStage.HOLDING in seen and driven.stage is SeedStage.PRUNED
    assert dl.overruled == 0


def test_decider_is_installed_and_restored() -> None:
    slot = _slot()
    with DistributedLifecycle({"a": slot}) as dl:
        assert slot.decider == dl._decide
    assert slot.decider is None


def test_slots_are_found_in_models_mappings_and_iterables() -> None:
    model = _Model()
    assert DistributedLifecycle(model).slot_ids == ("a", "b")  # sorted: index order is deterministic
    wrapper = nn.Sequential(nn.Identity(), _slot("z"))
    assert DistributedLifecycle(wrapper).slot_ids == ("z",)
    with pytest.raises(DistributedError, match="no seed slots"):
        DistributedLifecycle(nn.Linear(2, 2))
    with pytest.raises(DistributedError, match="got int"):
        DistributedLifecycle(3)


@pytest.mark.parametrize("timeout", [0, -1.0, "10", True])
def test_bad_timeout_is_rejected(timeout: object) -> None:
    with pytest.raises(DistributedError, match="timeout"):
        DistributedLifecycle([_slot()], timeout=timeout)


def test_group_without_process_group_is_rejected() -> None:
    with pytest.raises(DistributedError, match="not initialised"):
        Channel(object(), datetime.timedelta(seconds=1))


def test_local_channel_exchange_returns_own_header_and_record() -> None:
    channel = Channel(None, 1, capacity=3)
    rows, record = channel.exchange(2, 5, 1, 7, b"abc")
    assert [(r.rank, r.op, r.seq, r.slot, r.extra) for r in rows] == [(0, 2, 5, 1, 7)]
    assert record == b"abc"
    assert channel.exchange(2, 6)[1] == b""  # no record
    assert channel.broadcast_record(b"longer than the capacity") == b"longer than the capacity"


@pytest.mark.parametrize("size", [-1, 2.5, True, "8", 2**21])
def test_bad_capacity_is_rejected(size: object) -> None:
    with pytest.raises(DistributedError, match=r"capacity must be an int in \[0, 1048576\] \(bytes\), got"):
        Channel(None, 1, capacity=size)


def test_record_that_is_not_bytes_is_rejected() -> None:
    channel = Channel(None, 1)
    with pytest.raises(DistributedError, match="a record must be bytes, got list"):
        channel.exchange(1, 1, record=[1, 2])


def test_unknown_slot_changes_nothing() -> None:
    slot = _slot()
    dl = DistributedLifecycle([slot])
    before = slot.state_checksum()
    with pytest.raises(LifecycleError, match=r"unknown slot 'x'; slots: \['a'\]"):
        dl.germinate("x", "dist_probe")
    assert torch.equal(slot.state_checksum(), before) and slot.stage is SeedStage.DORMANT


def test_slot_errors_propagate_unchanged() -> None:
    slot = _slot()
    dl = DistributedLifecycle([slot])
    with pytest.raises(LifecycleError):
        dl.prune("a", "nothing to prune", "policy")
    assert slot.stage is SeedStage.DORMANT


def test_commands_leave_the_global_rng_alone_and_are_reproducible() -> None:
    def germinated_weights() -> list[torch.Tensor]:
        torch.manual_seed(11)
        slot = _slot()
        DistributedLifecycle([slot]).germinate("a", "dist_probe")
        return [p.detach().clone() for p in slot.seed_parameters()]

    torch.manual_seed(3)
    state = torch.get_rng_state()
    dl = DistributedLifecycle([_slot()])
    dl.germinate("a", "dist_probe")
    assert torch.equal(torch.get_rng_state(), state)
    first, second = germinated_weights(), germinated_weights()
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_auto_advance_goes_through_the_decider() -> None:
    slot = _slot(auto_advance={GateLevel.G1})
    calls = []
    dl = DistributedLifecycle([slot])
    inner = slot.decider

    def spy(s, result):
        calls.append(result.edge)
        return inner(s, result)

    slot.decider = spy
    dl.germinate("a", "dist_probe")
    dl.step_epoch()
    assert slot.stage is SeedStage.TRAINING
    assert (SeedStage.GERMINATED, SeedStage.TRAINING) in calls


def test_fingerprint_and_drift_comparison() -> None:
    slot = _slot()
    slot.germinate("dist_probe")
    values = slot_fingerprint(slot, parameters=True)
    assert len(values) == len(FINGERPRINT_FIELDS)
    assert values[0] == float(SeedStage.GERMINATED)
    assert values[2] == sum(p.numel() for p in slot.seed_parameters())
    assert len(slot_fingerprint(slot, parameters=False)) == len(FINGERPRINT_FIELDS) - 2
    local = torch.tensor([[1.0, 0.5], [2.0, 0.0]], dtype=torch.float64)
    high = local.clone()
    high[1, 1] = 0.25
    drifts = find_drift(["x", "y"], ("stage", "alpha"), local, high, local)
    assert [(d.slot_id, d.field, d.local, d.low, d.high) for d in drifts] == [("y", "alpha", 0.0, 0.0, 0.25)]
    assert "slot 'y' alpha" in drifts[0].describe()
    assert find_drift(["x", "y"], ("stage", "alpha"), local, local, local) == []


def test_mutation_outside_the_lifecycle_is_reported_once() -> None:
    slot = _slot()
    dl = DistributedLifecycle([slot])
    dl.germinate("a", "dist_probe")
    dl.check_drift()  # our own commands are not "outside"
    slot.prune("direct call", "governor")
    with pytest.raises(DistributedError, match=r"slot 'a' was changed outside.*StageChanged"):
        dl.check_drift()
    dl.check_drift()  # reported once, then the slate is clean
    dl.close()
    slot.step_epoch()
    dl.check_drift()  # a closed lifecycle no longer watches


def test_nan_fingerprint_stays_comparable() -> None:
    class Odd:
        stage = SeedStage.BLENDING
        alpha = float("nan")
        seed = None

        def state_checksum(self) -> torch.Tensor:
            return torch.tensor([float("nan")], dtype=torch.float64)

    values = slot_fingerprint(Odd(), parameters=False)
    assert all(v == v for v in values)  # NaN mapped to a finite sentinel


def test_ddp_rewrapper_rebuilds_only_when_parameters_change() -> None:
    model = _Model()
    built = []
    wrapper = DDPRewrapper(model, wrap=lambda m: built.append(parameter_signature(m)) or m)
    assert wrapper.refresh() is False and len(built) == 1
    model.slots["a"].germinate("dist_probe")
    assert wrapper.refresh() is True and wrapper.rebuilds == 1
    assert wrapper.refresh() is False
    model.stem.weight.requires_grad_(False)  # e.g. a blend-out freeze: DDP must re-register hooks
    assert wrapper.refresh() is True and wrapper.rebuilds == 2
    assert wrapper.wrapped is model and len(built) == 3
    assert built[-1] != built[0]
