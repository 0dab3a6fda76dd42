"""The controller in checkpoints and behind a lifecycle.

* ``state_dict``/``load_state_dict``: a run cut at every epoch and resumed from a file read
  with ``torch.load(weights_only=True)`` decides exactly as the uninterrupted run (and a
  resume without the controller's state does not, so the comparison can fail); a bad state
  raises ``CheckpointError`` naming the field, with the controller unchanged.
* ``lifecycle=``: every decision goes through the given lifecycle; with a
  ``DistributedLifecycle`` (one process here; two real ranks in
  ``tests/distributed/test_two_ranks_control.py``) the drift check sees no bypass.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable

import pytest
import torch

from esper_core.checkpoint import load_checkpoint
from esper_core.control import ControllerConfig, HeuristicController
from esper_core.distributed import DistributedLifecycle, reduce_evaluation
from esper_core.errors import CheckpointError, DistributedError, HostError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import Evaluation, MorphogeneticModel

SCORES = [50, 60, 60, 60, 61, 61, 60, 62, 62, 62, 62, 62, 63, 63, 63, 63, 63, 63]
GOOD = {"r0c0": 2.0, "r1c0": 1.0, "r0c1": -1.5, "r1c1": 0.5}


def _model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(
        CNNHost(3, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates("permissive")
    )


def _config() -> ControllerConfig:
    return ControllerConfig(
        param_budget=60,
        plateau_window=2,
        warmup_epochs=2,
        ramp_epochs=2,
        prune_patience=1,
        include=("toy_conv", "toy_scale"),
    )


def _evaluation(model: MorphogeneticModel, score: float) -> Evaluation:
    live = {s: GOOD[s] for s, slot in model.slots.items() if slot.alpha > 0}
    return Evaluation(score, live, samples=10)


def _run(
    model: MorphogeneticModel, controller: HeuristicController, epochs: range
) -> list[tuple[int, str, str, str]]:
    out = []
    for epoch in epochs:
        for d in controller.step(_evaluation(model, SCORES[epoch]), epoch):
            out.append((d.epoch, d.slot_id, d.action, d.detail))
    return out


def _saved(model: MorphogeneticModel, controller: HeuristicController) -> dict:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "controller": controller.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("cut", range(1, len(SCORES)))
def test_a_resumed_controller_decides_as_the_uninterrupted_one(cut: int) -> None:
    model = _model()
    straight = _run(model, HeuristicController(model.slots, _config()), range(len(SCORES)))
    assert {a for _, _, a, _ in straight} == {"germinate", "advance", "prune"}  # a full story

    model = _model()
    controller = HeuristicController(model.slots, _config())
    before = _run(model, controller, range(cut))
    checkpoint = _saved(model, controller)
    fresh = _model()
    load_checkpoint(fresh, checkpoint["model"])
    resumed = HeuristicController(fresh.slots, _config())
    resumed.load_state_dict(checkpoint["controller"])
    assert resumed.state_dict() == controller.state_dict()
    after = _run(fresh, resumed, range(cut, len(SCORES)))
    assert before + after == straight


def test_without_its_state_a_resumed_controller_decides_otherwise() -> None:
    """The negative control: the same resume, minus ``load_state_dict``, diverges."""
    model = _model()
    straight = _run(model, HeuristicController(model.slots, _config()), range(len(SCORES)))
    model = _model()
    controller = HeuristicController(model.slots, _config())
    before = _run(model, controller, range(6))
    fresh = _model()
    load_checkpoint(fresh, _saved(model, controller)["model"])
    after = _run(fresh, HeuristicController(fresh.slots, _config()), range(6, len(SCORES)))
    assert before + after != straight


def _mutations() -> list[tuple[str, Callable[[dict], None], str]]:
    def setter(path: list, value: object) -> Callable[[dict], None]:
        def apply(state: dict) -> None:
            target = state
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    def drop(key: str) -> Callable[[dict], None]:
        return lambda state: state.pop(key)

    return [
        ("version", setter(["version"], 3), "'version': got 3"),
        ("version bool", setter(["version"], True), "'version': got True"),
        ("missing key", drop("tried"), "'(top level)'"),
        ("history nan", setter(["history", 0], float("nan")), "'history[0]': got nan"),
        ("history str", setter(["history"], "60"), "'history': got '60'; accepted: a list"),
        ("memory slot", setter(["memory", "r9c9"], {}), "'memory'"),
        ("memory age", setter(["memory", "r0c0", "age"], -1), "'memory.r0c0.age': got -1"),
        ("memory stage", setter(["memory", "r0c0", "stage"], "GROWING"), "'memory.r0c0.stage'"),
        ("memory bool", setter(["memory", "r0c0", "below"], True), "'memory.r0c0.below': got True"),
        ("decision action", setter(["decisions", 0, "action"], "grow"), "'decisions[0].action'"),
        ("decision slot", setter(["decisions", 0, "slot_id"], "nope"), "'decisions[0].slot_id'"),
        ("outcome fate", setter(["outcomes", 0, "fate"], "kept"), "'outcomes[0].fate'"),
        ("tried pair", setter(["tried", 0], ["r0c0"]), "'tried[0]'"),
        ("quiet", setter(["quiet_until"], 1.5), "'quiet_until': got 1.5"),
        ("not a dict", lambda state: state.clear(), "'(top level)'"),
    ]


@pytest.mark.parametrize(("name", "mutate", "message"), _mutations(), ids=[m[0] for m in _mutations()])
def test_a_bad_state_names_the_field_and_changes_nothing(
    name: str, mutate: Callable[[dict], None], message: str
) -> None:
    model = _model()
    controller = HeuristicController(model.slots, _config())
    _run(model, controller, range(12))
    assert controller.outcomes and controller.decisions
    good = controller.state_dict()
    bad = copy.deepcopy(good)
    mutate(bad)
    target = HeuristicController(_model().slots, _config())
    before = target.state_dict()
    with pytest.raises(CheckpointError, match=re.escape(message)):
        target.load_state_dict(bad)
    assert target.state_dict() == before
    target.load_state_dict(good)  # the good state still loads afterwards
    assert target.state_dict() == good


class Recorder:
    """A lifecycle that records the calls and forwards them to the slots."""

    def __init__(self, slots: dict) -> None:
        self.slots = slots
        self.calls: list[tuple] = []

    def germinate(self, slot_id: str, blueprint: str, **kwargs: object) -> None:
        self.calls.append(("germinate", slot_id, blueprint))
        self.slots[slot_id].germinate(blueprint, **kwargs)

    def advance(self, slot_id: str) -> object:
        self.calls.append(("advance", slot_id))
        return self.slots[slot_id].advance()

    def prune(self, slot_id: str, reason: str, initiator: str) -> None:
        self.calls.append(("prune", slot_id, initiator))
        self.slots[slot_id].prune(reason, initiator)

    def step_epoch(self) -> None:
        self.calls.append(("step_epoch",))
        for slot in self.slots.values():
            slot.step_epoch()


def test_every_decision_goes_through_the_lifecycle() -> None:
    model = _model()
    recorder = Recorder(dict(model.slots.items()))
    controller = HeuristicController(model.slots, _config(), lifecycle=recorder)
    decisions = _run(model, controller, range(len(SCORES)))
    assert [c[:2] for c in recorder.calls if c[0] != "step_epoch"] == [(a, s) for _, s, a, _ in decisions]
    assert recorder.calls.count(("step_epoch",)) == len(SCORES)
    assert all(c[2] == "controller" for c in recorder.calls if c[0] == "prune")


def test_under_a_distributed_lifecycle_the_controller_is_no_bypass() -> None:
    """Calling the slots directly under a DistributedLifecycle is reported; through it, it is not."""
    model = _model()
    with DistributedLifecycle(model) as lifecycle:  # no process group: one rank
        _run(model, HeuristicController(model.slots, _config()), range(len(SCORES)))
        with pytest.raises(DistributedError, match="changed outside the distributed lifecycle"):
            lifecycle.check_drift()
    model = _model()
    with DistributedLifecycle(model) as lifecycle:
        controller = HeuristicController(model.slots, _config(), lifecycle=lifecycle)
        decisions = _run(model, controller, range(len(SCORES)))
        lifecycle.check_drift()
    assert {a for _, _, a, _ in decisions} == {"germinate", "advance", "prune"}


def test_a_bad_lifecycle_is_refused() -> None:
    model = _model()
    with pytest.raises(HostError, match=r"lacks \['advance', 'prune', 'step_epoch'\]"):
        HeuristicController(model.slots, _config(), lifecycle=type("L", (), {"germinate": print})())
    other = MorphogeneticModel(CNNHost(3, in_channels=1, n_blocks=1, base_channels=4))
    with DistributedLifecycle(other) as lifecycle, pytest.raises(HostError, match="same model"):
        HeuristicController(model.slots, _config(), lifecycle=lifecycle)


def test_reduce_evaluation_without_a_process_group_is_the_identity() -> None:
    evaluation = Evaluation(61.5, {"r0c0": 1.25}, samples=7)
    assert reduce_evaluation(evaluation) is evaluation
    with pytest.raises(TypeError, match=r"must be an esper_core\.model\.Evaluation, got dict"):
        reduce_evaluation({"score": 1.0})
