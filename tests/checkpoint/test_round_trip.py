"""A slot's checkpoint restores everything into a freshly built slot or model."""

from __future__ import annotations

import io
from typing import Any

import attrs
import pytest
import torch
from torch import nn

from esper_core.checkpoint import load_checkpoint, slot_envelope
from esper_core.codec import decode_envelope
from esper_core.slot_state import HISTORY_BOUND, PendingPrune
from esper_core.stages import SeedStage


def through_file(state: dict[str, Any]) -> dict[str, Any]:
    """torch.save then torch.load(weights_only=True): what a real checkpoint goes through."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_fresh_slot_restores_every_lifecycle_state(
    scenario, fresh_slot, example_input, scenario_name, topology
):
    source = scenario(scenario_name, topology)
    target = fresh_slot(topology)
    assert target.seed is None and target.stage is SeedStage.DORMANT

    result = target.load_state_dict(through_file(source.state_dict()))

    assert not result.missing_keys and not result.unexpected_keys
    assert slot_envelope(target) == slot_envelope(source)
    assert target.report() == source.report()
    assert (target.seed is None) == (source.seed is None)
    assert (target.blend_gate is None) == (source.blend_gate is None)
    assert_same_tensors(tensors(target), tensors(source))
    x = example_input(source)
    assert torch.equal(target(x), source(x))
    # The futures agree too: the schedule continues mid-ramp, cooldowns keep counting.
    for _ in range(3):
        source.step_epoch()
        target.step_epoch()
        assert slot_envelope(target) == slot_envelope(source)
        assert torch.equal(target(x), source(x))


def test_assign_loading_also_rebuilds_the_seed(scenario, fresh_slot, example_input):
    source = scenario("blending_gate")
    target = fresh_slot()
    target.load_state_dict(through_file(source.state_dict()), assign=True)
    assert slot_envelope(target) == slot_envelope(source)
    x = example_input(source)
    assert torch.equal(target(x), source(x))


def test_scheduled_prune_keeps_reason_and_initiator(scenario, fresh_slot):
    source = scenario("pending_prune")
    target = fresh_slot()
    target.load_state_dict(through_file(source.state_dict()))
    assert target.state.seed.pending_prune == PendingPrune(reason="test_schedule", initiator="tester")
    events = []
    target.add_observer(events.append)
    while target.stage is SeedStage.BLENDING:
        target.step_epoch()
    pruned = [e for e in events if type(e).__name__ == "SeedPruned"]
    assert [(e.reason, e.initiator) for e in pruned] == [("test_schedule", "tester")]


def test_blend_gate_is_rebuilt_with_its_weights(scenario, fresh_slot):
    source = scenario("blending_gate")
    with torch.no_grad():
        for p in source.blend_gate.parameters():
            p.add_(0.25)  # away from the gate's birth values, so a rebuilt default would differ
    target = fresh_slot()
    target.load_state_dict(through_file(source.state_dict()))
    assert target.blend_gate is not None
    assert_same_tensors(tensors(target.blend_gate), tensors(source.blend_gate))


@pytest.mark.parametrize("live", ["holding", "blending_gate", "embargoed"])
def test_dormant_entry_clears_a_live_slot(scenario, example_input, live):
    slot = scenario(live)
    empty = scenario("dormant").state_dict()
    slot.load_state_dict(through_file(empty))
    assert slot.stage is SeedStage.DORMANT
    assert slot.seed is None and slot.blend_gate is None
    assert list(slot.parameters()) == []
    x = example_input(slot)
    assert slot(x) is x


def test_loading_into_a_live_slot_updates_modules_in_place(scenario):
    source = scenario("holding")
    with torch.no_grad():
        for p in source.seed.parameters():
            p.mul_(-1.5)
    target = scenario("holding")
    before = [id(p) for p in target.seed_parameters()]
    target.load_state_dict(through_file(source.state_dict()))
    # Same parameter objects (an optimizer holding them stays valid), new values.
    assert [id(p) for p in target.seed_parameters()] == before
    assert_same_tensors(tensors(target), tensors(source))


def test_restoring_does_not_draw_from_the_global_rng(scenario, fresh_slot):
    state = through_file(scenario("blending_gate").state_dict())
    target = fresh_slot()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    target.load_state_dict(state)  # builds a seed and a gate module
    assert torch.equal(torch.rand(3), expected)


def test_envelope_holds_only_primitive_types(scenario):
    allowed = (int, float, str, bool, type(None))

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                assert type(key) is str, path
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        else:
            assert type(value) in allowed, (path, type(value))

    for name in ("pending_prune", "blending_gate", "dormant"):
        walk(slot_envelope(scenario(name)), "envelope")


def test_every_key_is_written_and_unmeasured_is_none(scenario):
    envelope = slot_envelope(scenario("germinated"))
    metrics = envelope["state"]["seed"]["metrics"]
    assert metrics["counterfactual"] is None and "counterfactual" in metrics
    assert metrics["contribution_velocity"] is None
    assert envelope["state"]["seed"]["pending_prune"] is None
    assert decode_envelope(envelope).state.seed.metrics.current_accuracy is None


def test_stage_history_bound_survives_a_round_trip(scenario, fresh_slot):
    # B3-SLOT-06: a bounded history must come back bounded, and stay bounded afterwards.
    source = scenario("holding")
    seed = source.state.seed
    full = (SeedStage.BLENDING, SeedStage.HOLDING) * (HISTORY_BOUND // 2)
    source.restore_state(
        attrs.evolve(source.state, seed=attrs.evolve(seed, history=full)), source.seed, source.blend_gate
    )
    target = fresh_slot()
    target.load_state_dict(through_file(source.state_dict()))
    assert target.state.seed.history == full
    target.set_alpha_target(0.5, 0)
    history = target.state.seed.history
    assert len(history) == HISTORY_BOUND and history[-1] is SeedStage.BLENDING and history[:-1] == full[1:]


class ThreeSlotNet(nn.Module):
    """A host with three slots between its layers, nested one level down."""

    def __init__(self, slot_factory: Any) -> None:
        super().__init__()
        self.stem = nn.Conv2d(6, 6, 1)
        self.slots = nn.ModuleDict({sid: slot_factory(slot_id=sid) for sid in ("a", "b", "c")})
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for slot in self.slots.values():
            h = slot(h)
        return self.head(h)


def _grown(slot_factory: Any, scenario: Any) -> ThreeSlotNet:
    net = ThreeSlotNet(slot_factory)
    for sid, name in zip("abc", ("training", "blending_gate", "fossilized"), strict=True):
        grown = scenario(name)
        envelope = slot_envelope(grown) | {"slot_id": sid}  # same lifecycle, placed at this slot
        net.slots[sid].load_state_dict(grown.state_dict() | {"_extra_state": envelope})
    return net


def test_model_round_trip_through_a_weights_only_file(fresh_slot, scenario, example_input):
    def factory(slot_id: str):
        return fresh_slot(slot_id=slot_id)

    source = _grown(factory, scenario)
    state = through_file(source.state_dict())
    torch.manual_seed(99)
    target = ThreeSlotNet(factory)
    target.load_state_dict(state)
    x = example_input(source.slots["a"])
    assert torch.equal(target(x), source(x))
    for sid in "abc":
        assert slot_envelope(target.slots[sid]) == slot_envelope(source.slots[sid])

    again = ThreeSlotNet(factory)
    result = load_checkpoint(again, state)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(again(x), source(x))
