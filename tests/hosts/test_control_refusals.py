"""A candidate the blueprint makes fail never ends ``HeuristicController.step`` (user report).

The kind: every way a germination can fail because of the blueprint - G0 refuses it (in-place
write, wrong shape, wrong dtype, non-finite output, forward raising on the probe input), its
factory raises or rejects its options, its ``validate``/``param_count`` crashes - becomes a
``Refusal`` and a ``"germination_refused"`` decision; the pair is not offered again, the next
candidate is tried in the same step, the slot stays DORMANT. Errors that are not the
blueprint's doing still propagate. The refusal memory survives ``state_dict``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from esper_core.control import ControllerConfig, HeuristicController, Refusal, SlotVerbs
from esper_core.errors import CheckpointError, OptionError, PluginLoadWarning, UnknownBlueprintError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import Evaluation, MorphogeneticModel
from esper_core.registry import temporary_blueprints
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage


class InPlace(nn.Module):
    """The reported blueprint: multiplies its input in place (values unchanged, version bumped)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(1)
        return x * (1 + self.w.view(1, -1, 1, 1))


class Bad(nn.Module):
    """A seed of ``size`` parameters whose forward is ``fault``."""

    def __init__(self, dim: int, size: int, fault: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(size))
        self.fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fault(x)


def _raise(message: str, error: type[Exception] = RuntimeError) -> Callable[..., nn.Module]:
    def fail(*args: object, **kwargs: object) -> nn.Module:
        raise error(message)

    return fail


FORWARDS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "in_place": (lambda x: x.add_(0), "input_modified_in_place"),
    "shape": (lambda x: x[:, :1], "shape_changed"),
    "dtype": (lambda x: x.double(), "dtype_changed"),
    "non_finite": (lambda x: x * float("nan"), "nonfinite_output"),
    "forward_raises": (_raise("no forward today"), "G0 could not run"),
}
FACTORIES: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "factory_raises": (_raise("cannot build", ValueError), "BlueprintError"),
    "factory_rejects_options": (_raise("dim must be odd", OptionError), "OptionError"),
}
CAUSES = sorted([*FORWARDS, *FACTORIES])
#: Broken before any build: the registry leaves them out of listings (with a warning).
UNLISTED = ("count_raises", "validate_crashes")


def _size(strategy: str) -> Callable[[int], int]:
    """Rank the bad blueprint ahead of ``toy_scale`` (``dim`` params) under ``strategy``."""
    return (lambda dim: 0) if strategy == "cheapest" else (lambda dim: 3 * dim)


def _bad_spec(cause: str, strategy: str) -> tuple[BlueprintSpec, str]:
    """The bad blueprint (``bad_<cause>_<strategy>``: the registry warns once per name) and its reason."""
    size, name = _size(strategy), f"bad_{cause}_{strategy}"
    if cause in FORWARDS:
        fault, expected = FORWARDS[cause]
        return BlueprintSpec(name, "cnn", lambda dim: Bad(dim, size(dim), fault), size, cause), expected
    if cause in FACTORIES:
        factory, expected = FACTORIES[cause]
        return BlueprintSpec(name, "cnn", factory, size, cause), expected
    if cause == "count_raises":
        spec = BlueprintSpec(name, "cnn", lambda dim: Bad(dim, 0, torch.clone), _raise("no count"), cause)
        return spec, "has a broken param_count"
    validate = _raise("validate has a bug", KeyError)
    spec = BlueprintSpec(name, "cnn", lambda dim: Bad(dim, 0, torch.clone), size, cause, validate=validate)
    return spec, "could not validate"


def _model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(
        CNNHost(10, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates("permissive")
    )


def _config(include: tuple[str, ...], strategy: str = "gain_per_param") -> ControllerConfig:
    return ControllerConfig(
        param_budget=1000,
        warmup_epochs=1,
        plateau_window=1,
        plateau_min_delta=100.0,
        include=include,
        strategy=strategy,
    )


def _steps(controller: HeuristicController, epochs: range) -> list:
    return [d for e in epochs for d in controller.step(Evaluation(50.0), e)]


def test_the_reported_instance_is_refused_and_the_run_goes_on() -> None:
    spec = BlueprintSpec("inplace", "cnn", InPlace, lambda dim: dim, "bad")
    with temporary_blueprints(spec):
        model = _model()
        ctrl = HeuristicController(model.slots, _config(("inplace",)))
        x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
        evaluations = [model.evaluate([(x, y)], lambda o, t: (o.argmax(1) == t).float()) for _ in range(3)]
        assert ctrl.step(evaluations[0], 1) == []
        rng = torch.random.get_rng_state()
        decisions = ctrl.step(evaluations[1], 2)
        assert torch.equal(torch.random.get_rng_state(), rng)
        assert ctrl.step(evaluations[2], 3) == []  # every pair refused once, none retried
    first = decisions[0]
    assert (first.epoch, first.slot_id, first.action) == (2, "r0c1", "germination_refused")
    assert "inplace" in first.detail and "'r0c1'" in first.detail
    assert "input_modified_in_place" in first.detail
    assert sorted(r.slot_id for r in ctrl.refusals) == sorted(model.slots)  # each slot refused it
    assert [d.action for d in decisions] == ["germination_refused"] * len(model.slots)
    assert all(slot.stage is SeedStage.DORMANT and slot.seed is None for slot in model.slots.values())
    assert ctrl.candidates() == []


@pytest.mark.parametrize("strategy", ["gain_per_param", "cheapest"])
@pytest.mark.parametrize("cause", CAUSES)
def test_a_bad_candidate_is_refused_and_a_good_one_germinated_in_the_same_step(
    cause: str, strategy: str
) -> None:
    spec, expected = _bad_spec(cause, strategy)
    with temporary_blueprints(spec):
        model = _model()
        ctrl = HeuristicController(model.slots, _config((spec.name, "toy_scale"), strategy))
        decisions = _steps(ctrl, range(1, 3))
        later = _steps(ctrl, range(3, 6))
    refused = [d for d in decisions if d.action == "germination_refused"]
    germinated = [d for d in decisions if d.action == "germinate"]
    assert refused and all(spec.name in d.detail and expected in d.detail for d in refused), decisions
    assert len(germinated) == 1 and germinated[0].detail.startswith("toy_scale"), decisions
    assert decisions.index(germinated[0]) == len(decisions) - 1  # refusals first, then the good one
    assert {r.blueprint for r in ctrl.refusals} == {spec.name}
    assert all(expected in r.reason and r.epoch == 2 for r in ctrl.refusals)
    for refusal in ctrl.refusals:
        if refusal.slot_id != germinated[0].slot_id:
            assert model.slots[refusal.slot_id].stage is SeedStage.DORMANT
    pairs = [(r.slot_id, r.blueprint) for r in ctrl.refusals]
    assert len(pairs) == len(set(pairs))  # never the same pair twice, however long the run
    assert [d.slot_id for d in later if d.action == "germination_refused"] == [
        slot_id for slot_id, _ in pairs[len(refused) :]
    ]


@pytest.mark.parametrize("strategy", ["gain_per_param", "cheapest"])
@pytest.mark.parametrize("cause", UNLISTED)
def test_a_blueprint_broken_before_building_is_never_a_candidate(cause: str, strategy: str) -> None:
    spec, expected = _bad_spec(cause, strategy)
    with temporary_blueprints(spec), pytest.warns(PluginLoadWarning, match=f"bad_{cause}.*{expected}"):
        model = _model()
        ctrl = HeuristicController(model.slots, _config((spec.name, "toy_scale"), strategy))
        decisions = _steps(ctrl, range(1, 3))
    assert [d.action for d in decisions] == ["germinate"] and decisions[0].detail.startswith("toy_scale")
    assert ctrl.refusals == []


def test_a_blueprint_refused_at_one_slot_is_still_tried_at_another() -> None:
    """Per-slot exclusion: a seed that breaks only at one dim is germinated where it works."""

    def factory(dim: int) -> nn.Module:
        return Bad(dim, dim, (lambda x: x[:, :1]) if dim == 8 else torch.clone)

    spec = BlueprintSpec("dim_picky", "cnn", factory, lambda dim: dim, "breaks at dim 8")
    with temporary_blueprints(spec):
        model = _model()
        ctrl = HeuristicController(model.slots, _config(("dim_picky",), "cheapest"))
        decisions = _steps(ctrl, range(1, 3))
    dims = {s: slot.dim for s, slot in model.slots.items()}
    assert [dims[r.slot_id] for r in ctrl.refusals] == []  # cheapest first: dim 4 works
    assert decisions[-1].action == "germinate" and dims[decisions[-1].slot_id] == 4
    with temporary_blueprints(spec):
        model = _model()
        ctrl = HeuristicController(model.slots, _config(("dim_picky",)))  # largest first: dim 8
        decisions = _steps(ctrl, range(1, 3))
    assert {dims[r.slot_id] for r in ctrl.refusals} == {8}
    assert decisions[-1].action == "germinate" and dims[decisions[-1].slot_id] == 4


class _Failing:
    """A lifecycle whose germinate raises ``error``: not the blueprint's doing."""

    def __init__(self, slots: dict, error: Exception) -> None:
        verbs = SlotVerbs(slots)
        self.error = error
        self.advance, self.prune, self.step_epoch = verbs.advance, verbs.prune, verbs.step_epoch

    def germinate(self, slot_id: str, blueprint: str, **kwargs: object) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("a library bug"),
        UnknownBlueprintError("toy_scale vanished"),
        TypeError("bad argument"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_that_are_not_the_blueprints_still_propagate(error: Exception) -> None:
    model = _model()
    ctrl = HeuristicController(model.slots, _config(("toy_scale",)), lifecycle=_Failing(model.slots, error))
    with pytest.raises(type(error), match=str(error)):
        _steps(ctrl, range(1, 3))
    assert ctrl.refusals == []


def test_a_candidate_larger_than_the_slot_allows_is_not_offered() -> None:
    """The slot would refuse it (max_seed_params): that is known before trying, so no attempt."""
    model = _model()
    ctrl = HeuristicController(model.slots, _config(("toy_scale",)))  # costs dim: 4 or 8
    assert {model.slots[c.slot_id].dim for c in ctrl.candidates()} == {4, 8}  # the control
    for slot in model.slots.values():
        slot.reconfigure(max_seed_params=5)
    assert {model.slots[c.slot_id].dim for c in ctrl.candidates()} == {4}
    decisions = _steps(ctrl, range(1, 3))
    assert [d.action for d in decisions] == ["germinate"] and ctrl.refusals == []


def _saved(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_the_refusal_memory_survives_a_checkpoint() -> None:
    spec, _ = _bad_spec("in_place", "gain_per_param")
    with temporary_blueprints(spec):
        model = _model()
        ctrl = HeuristicController(model.slots, _config((spec.name, "toy_scale")))
        _steps(ctrl, range(1, 3))
        state = _saved(ctrl.state_dict())
        assert state["version"] == 2 and len(state["refusals"]) == len(ctrl.refusals) > 0
        resumed = HeuristicController(_model().slots, _config((spec.name, "toy_scale")))
        resumed.load_state_dict(state)
        assert resumed.state_dict() == ctrl.state_dict()
        assert resumed.refusals == ctrl.refusals and isinstance(resumed.refusals[0], Refusal)
        refused = {(r.slot_id, r.blueprint) for r in resumed.refusals}
        assert not refused & {(c.slot_id, c.blueprint) for c in resumed.candidates()}
        assert refused & {
            (c.slot_id, c.blueprint)
            for c in HeuristicController(_model().slots, _config((spec.name, "toy_scale"))).candidates()
        }  # the control

        bad = {**state, "refusals": [{**state["refusals"][0], "slot_id": "r9c9"}]}
        before = resumed.state_dict()
        with pytest.raises(CheckpointError, match=r"'refusals\[0\]\.slot_id': got 'r9c9'"):
            resumed.load_state_dict(bad)
        assert resumed.state_dict() == before


def test_a_version_1_state_reads_with_no_refusals() -> None:
    model = _model()
    ctrl = HeuristicController(model.slots, _config(("toy_scale",)))
    _steps(ctrl, range(1, 4))
    old = {k: v for k, v in ctrl.state_dict().items() if k != "refusals"} | {"version": 1}
    resumed = HeuristicController(_model().slots, _config(("toy_scale",)))
    resumed.load_state_dict(old)
    assert resumed.state_dict() == ctrl.state_dict() and resumed.refusals == []
    with pytest.raises(CheckpointError, match=re.escape("'(top level)'")):
        resumed.load_state_dict({**old, "refusals": []})  # version 1 has no refusals key
