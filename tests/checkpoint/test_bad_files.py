"""Bad checkpoint files raise CheckpointError naming the field and change nothing."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from esper_core.checkpoint import load_checkpoint, slot_envelope
from esper_core.errors import CheckpointError
from esper_core.restore import restore_slot

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    def mutate(env: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = env
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(env: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = env
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


NAN, INF = math.nan, math.inf

# (id, scenario the envelope comes from, mutation, text the message must contain)
CASES: list[tuple[str, str, Mutation, str]] = [
    ("missing-top", "blending_gate", _delete("dim"), "'dim' is missing"),
    ("missing-nested", "blending_gate", _delete("state.seed.metrics.contribution_velocity"),
     "'state.seed.metrics.contribution_velocity' is missing"),
    ("missing-version", "blending_gate", _delete("version"), "'version' is missing"),
    ("missing-pending", "blending", _delete("state.seed.pending_prune"), "'state.seed.pending_prune' is missing"),
    ("extra-top", "blending_gate", _set("colour", "red"), "'colour' is not part"),
    ("extra-nested", "blending_gate", _set("state.seed.schedule.speed", 1.0), "'state.seed.schedule.speed' is an unexpected key"),
    ("type-str-for-int", "blending_gate", _set("dim", "6"), "'dim'"),
    ("type-float-for-int", "blending_gate", _set("state.seed.ramp_epochs", 3.0), "'state.seed.ramp_epochs'"),
    ("type-bool-for-int", "blending_gate", _set("state.epochs_in_stage", True), "'state.epochs_in_stage'"),
    ("type-int-for-float", "blending_gate", _set("state.seed.schedule.alpha", 1), "'state.seed.schedule.alpha'"),
    ("type-list-for-dict", "blending_gate", _set("state.seed.metrics", []), "'state.seed.metrics'"),
    ("type-int-for-bool", "blending_gate", _set("state.seed.output_requires_grad", 1), "'state.seed.output_requires_grad'"),
    ("type-none-for-str", "blending_gate", _set("state.seed.seed_id", None), "'state.seed.seed_id'"),
    ("stage-5", "blending_gate", _set("state.stage", 5), "'state.stage'"),
    ("stage-11", "blending_gate", _set("state.stage", 11), "'state.stage'"),
    ("stage-negative", "blending_gate", _set("state.stage", -1), "'state.stage'"),
    ("stage-unknown-0", "blending_gate", _set("state.stage", 0), "'state.stage'"),
    ("previous-stage-5", "blending_gate", _set("state.previous_stage", 5), "'state.previous_stage'"),
    ("history-stage-5", "blending_gate", _set("state.seed.history", [2, 5]), "'state.seed.history[1]'"),
    ("version-3", "blending_gate", _set("version", 3), "'version'"),
    ("version-str", "blending_gate", _set("version", "1"), "'version'"),
    ("unknown-blueprint", "blending_gate", _set("state.seed.blueprint", "no_such_blueprint"), "'state.seed.blueprint'"),
    ("unknown-topology", "blending_gate", _set("topology", "graph"), "'topology'"),
    ("other-topology", "blending_gate", _set("topology", "transformer"), "'topology'"),
    ("dim-mismatch", "blending_gate", _set("dim", 7), "'dim'"),
    ("slot-id-mismatch", "blending_gate", _set("slot_id", "elsewhere"), "'slot_id'"),
    ("nan-alpha", "blending_gate", _set("state.seed.schedule.alpha", NAN), "'state.seed.schedule.alpha'"),
    ("inf-accuracy", "blending_gate", _set("state.seed.metrics.current_accuracy", INF), "'state.seed.metrics.current_accuracy'"),
    ("nan-target", "blending_gate", _set("state.seed.germination_target", NAN), "'state.seed.germination_target'"),
    ("nan-option", "blending_gate", _set("state.seed.options.scale", NAN), "'state.seed.options.scale'"),
    ("unknown-option", "blending_gate", _set("state.seed.options.depth", 2), "'state.seed.options'"),
    ("option-out-of-range", "blending_gate", _set("state.seed.options.hidden", 0), "'state.seed.options'"),
    ("accuracy-out-of-range", "blending_gate", _set("state.seed.metrics.best_accuracy", 101.0), "'state.seed.metrics.best_accuracy'"),
    ("alpha-out-of-range", "blending_gate", _set("state.seed.schedule.target", 1.5), "'state.seed.schedule.target'"),
    ("bad-mode", "blending_gate", _set("state.seed.schedule.mode", "sideways"), "'state.seed.schedule.mode'"),
    ("bad-algorithm", "blending_gate", _set("state.seed.algorithm", "subtract"), "'state.seed.algorithm'"),
    ("seed-missing-for-stage", "blending_gate", _set("state.seed", None), "'state.seed'"),
    ("seed-in-dormant", "blending_gate", _set("state.stage", 1), "'state.previous_stage'"),
    ("illegal-previous", "blending_gate", _set("state.previous_stage", 1), "'state.previous_stage'"),
    ("ramp-steps-inconsistent", "blending_gate", _set("state.seed.schedule.epochs_done", 9), "'state.seed.schedule'"),
    ("alpha-in-training", "training",
     _set("state.seed.schedule", {"alpha": 0.5, "start": 0.5, "target": 0.5, "mode": "hold", "curve": "linear",
                         "steepness": 12.0, "epochs_total": 0, "epochs_done": 0}), "'state.seed.schedule'"),
    ("pending-prune-in-training", "training", _set("state.seed.pending_prune", {"reason": "r", "initiator": "i"}),
     "'state.seed.pending_prune'"),
    ("blank-prune-reason", "pending_prune", _set("state.seed.pending_prune.reason", "  "), "'state.seed.pending_prune.reason'"),
    ("activity-inconsistent", "blending_gate", _set("state.seed.activity", {"ema": None, "last": None, "samples": 3}),
     "'state.seed.activity'"),
    ("germinations-zero", "blending_gate", _set("state.germinations", 0), "'state.germinations'"),
    ("epochs-inconsistent", "blending_gate", _set("state.seed.metrics.evaluations_in_stage", 99), "'state.seed.metrics.evaluations_in_stage'"),
    ("history-over-bound", "blending_gate", _set("state.seed.history", [4, 6] * 51), "'state.seed.history'"),
    ("history-wrong-last", "blending_gate", _set("state.seed.history", [2, 3]), "'state.seed.history'"),
    ("options-not-dict", "blending_gate", _set("state.seed.options", [["hidden", 3]]), "'state.seed.options'"),
]  # fmt: skip


def snapshot(slot: nn.Module) -> tuple[Any, ...]:
    """Everything a failed load must leave alone: lifecycle, modules and their values."""
    return (
        slot_envelope(slot),
        id(slot.seed),
        id(slot.blend_gate),
        {k: v.clone() for k, v in slot.state_dict().items() if isinstance(v, torch.Tensor)},
    )


def assert_unchanged(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert before[:3] == after[:3]
    assert before[3].keys() == after[3].keys()
    for key in before[3]:
        assert torch.equal(before[3][key], after[3][key]), key


@pytest.mark.parametrize(("source", "mutate", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("target_name", ["holding", "dormant"])
def test_bad_envelope_raises_naming_the_field_and_changes_nothing(
    scenario, source, mutate, field, target_name
):
    envelope = copy.deepcopy(slot_envelope(scenario(source)))
    mutate(envelope)
    target = scenario(target_name)
    before = snapshot(target)
    with pytest.raises(CheckpointError) as info:
        restore_slot(target, envelope)
    assert field in str(info.value)
    assert_unchanged(before, snapshot(target))


@pytest.mark.parametrize("bad", [None, [], "envelope", 3, torch.zeros(2)], ids=repr)
def test_non_dict_envelope_is_rejected(scenario, bad):
    target = scenario("holding")
    before = snapshot(target)
    with pytest.raises(CheckpointError, match="envelope"):
        restore_slot(target, bad)
    assert_unchanged(before, snapshot(target))


def test_error_message_says_what_is_accepted(scenario):
    envelope = slot_envelope(scenario("blending"))
    envelope["state"]["stage"] = 5
    with pytest.raises(CheckpointError) as info:
        restore_slot(scenario("dormant"), envelope)
    message = str(info.value)
    assert "got 5" in message and "accepted" in message and "4" in message


def test_bad_envelope_through_load_state_dict_leaves_seed_weights_alone(scenario):
    source = scenario("fossilized")
    state = source.state_dict()
    state = {k: (v + 1.0 if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    envelope = json.loads(state["_extra_state"])  # a slot stores its envelope as JSON text
    envelope["state"]["seed"]["metrics"]["counterfactual"] = math.nan
    state["_extra_state"] = json.dumps(envelope)
    target = scenario("holding")
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=r"seed\.metrics\.counterfactual"):
        target.load_state_dict(state)
    assert_unchanged(before, snapshot(target))


class Net(nn.Module):
    def __init__(self, slot: nn.Module) -> None:
        super().__init__()
        self.first = nn.Conv2d(6, 6, 1)
        self.slot = slot
        self.last = nn.Conv2d(6, 6, 1)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.update({"slot._extra_state": s["slot._extra_state"].replace('"dim":6', '"dim":9')}),
        lambda s: s.update({"slot.seed.inner.weight": torch.zeros(5, 6, 1, 1)}),
        lambda s: s.pop("slot.seed.outer.bias"),
        lambda s: s.update({"slot.seed.extra": torch.zeros(1)}),
        lambda s: s.pop("slot._extra_state"),
    ],
    ids=["envelope", "tensor-shape", "tensor-missing", "tensor-extra", "no-envelope"],
)
def test_load_checkpoint_checks_everything_before_touching_the_model(scenario, corrupt):
    state = copy.deepcopy(Net(scenario("blending")).state_dict())
    state = {k: (v + 1.0 if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    corrupt(state)
    model = Net(scenario("dormant"))
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    before_env = slot_envelope(model.slot)
    with pytest.raises(CheckpointError, match="slot"):
        load_checkpoint(model, state)
    after = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert slot_envelope(model.slot) == before_env
    assert model.slot.seed is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("dim", 6.0), ("state.epochs_in_stage", True), ("state.stage", 4.0)],
)
def test_near_identical_envelope_is_still_checked_strictly(scenario, field, value):
    # Re-loading a slot's own envelope is a no-op; one that only *compares* equal is not.
    slot = scenario("blending")
    envelope = slot_envelope(slot)
    node, key = (envelope["state"], field[6:]) if field.startswith("state.") else (envelope, field)
    assert node[key] == value
    node[key] = value
    before = snapshot(slot)
    with pytest.raises(CheckpointError, match=field):
        restore_slot(slot, envelope)
    assert_unchanged(before, snapshot(slot))


@pytest.mark.parametrize("history", [None, []])
def test_a_live_seed_needs_its_stage_history(scenario, history) -> None:
    """Found by the mutation test: a history of None used to load and keep the target's own."""
    envelope = slot_envelope(scenario("fossilized"))
    envelope["state"]["seed"]["history"] = history
    target = scenario("holding")
    before = slot_envelope(target)
    with pytest.raises(CheckpointError, match=r"'state\.seed\.history"):
        restore_slot(target, envelope)
    assert slot_envelope(target) == before


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module."])
def test_a_file_saved_from_a_wrapper_says_so(prefix: str) -> None:
    """A state dict of ``torch.compile(model)`` (keys ``_orig_mod.*``) or of a DDP wrapper
    (``module.*``) names the wrapper and how to load it; the model is unchanged."""
    from esper_core.gates import QualityGates
    from esper_core.hosts import CNNHost
    from esper_core.model import MorphogeneticModel

    grown = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    grown.germinate("r0c0", "conv_light")
    wrapped = {prefix + k: v for k, v in grown.state_dict().items()}
    fresh = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    before = {k: v.clone() for k, v in fresh.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(
        CheckpointError, match=rf"the file has '{prefix}.*consume_prefix_in_state_dict_if_present"
    ):
        load_checkpoint(fresh, wrapped)
    after = fresh.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(slot.seed is None for slot in fresh.slots.values())


@pytest.mark.parametrize("key", [None, 3, 2.5, ("a", "b"), b"bytes"])
def test_a_key_that_is_not_a_str_is_refused_by_name(key: object) -> None:
    # None among them: the check once looked for the first odd key with ``next(..., None)``,
    # and a None key was taken for "no odd key".
    from esper_core import CNNHost, MorphogeneticModel

    model = MorphogeneticModel(CNNHost(10))
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    state = model.state_dict()
    state[key] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=rf"checkpoint key .* is a {type(key).__name__}; accepted: str keys"
    ):
        load_checkpoint(model, state)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("damage", ["shape", "missing"])
def test_a_seed_smaller_than_its_envelope_names_the_first_bad_tensor(damage: str) -> None:
    # The size check runs before anything is built; the message still names the key, from the
    # seed built on the meta device (no allocation), and nothing changes, RNG included.
    from esper_core import CNNHost, MorphogeneticModel, QualityGates

    grown = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    grown.slot("r0c0").germinate("conv_small")
    state = grown.state_dict()
    key = next(k for k in state if ".seed." in k and k.endswith("weight") and state[k].dim() == 4)
    if damage == "shape":
        state[key] = torch.zeros(3, 3)
        expected = rf"first difference: checkpoint tensor '{re.escape(key)}': shape \(3, 3\); accepted: \("
    else:
        del state[key]
        expected = rf"first difference: checkpoint tensor '{re.escape(key)}' is missing"
    target = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    before = {k: v.clone() for k, v in target.state_dict().items() if isinstance(v, torch.Tensor)}
    rng = torch.get_rng_state()
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(target, state)
    assert torch.equal(rng, torch.get_rng_state())
    assert target.slot("r0c0").seed is None
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_short_history_starts_at_germination(scenario) -> None:
    # Found by a new user's hand-edited file: history [BLENDING] loaded. Every seed starts at
    # GERMINATED; only a full history (HISTORY_BOUND stages) has dropped its oldest entries.
    envelope = slot_envelope(scenario("blending"))
    history = envelope["state"]["seed"]["history"]
    assert history[0] == 2 and history[-1] == 4  # GERMINATED ... BLENDING
    envelope["state"]["seed"]["history"] = [4]
    target = scenario("holding")
    before = slot_envelope(target)
    with pytest.raises(CheckpointError, match=r"'state\.seed\.history\[0\]'.*accepted: GERMINATED"):
        restore_slot(target, envelope)
    assert slot_envelope(target) == before
