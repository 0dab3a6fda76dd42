"""HeuristicController: plateau -> a seed chosen by the selection strategy; gates advance; negative
contributors pruned; finished seeds recorded as outcomes that steer the next choice."""

from __future__ import annotations

import pytest
import torch

from esper_core.control import (
    Candidate,
    ControllerConfig,
    HeuristicController,
    Outcome,
    plateaued,
    rank_candidates,
)
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, HostError
from esper_core.model import Evaluation, MorphogeneticModel
from esper_core.stages import SeedStage


def _model(gates: QualityGates) -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4), gates=gates)


def _config(**kwargs: object) -> ControllerConfig:
    base = {
        "param_budget": 1000,
        "plateau_window": 2,
        "plateau_min_delta": 0.5,
        "warmup_epochs": 2,
        "ramp_epochs": 2,
    }
    base.update(kwargs)
    return ControllerConfig(**base)


@pytest.mark.parametrize(
    ("history", "window", "delta", "expected"),
    [
        ([50, 60, 70, 80], 2, 0.5, False),
        ([50, 80, 80.2, 79], 2, 0.5, True),
        ([50, 80, 80.6, 79], 2, 0.5, False),
        ([80, 80], 2, 0.5, False),  # not enough history to judge
        ([90, 70, 71, 72], 3, 0.0, True),
    ],
)
def test_plateaued(history: list[float], window: int, delta: float, expected: bool) -> None:
    assert plateaued(history, window, delta) is expected


def test_germinates_the_cheapest_affordable_blueprint_on_a_plateau(permissive: QualityGates) -> None:
    model = _model(permissive)
    config = _config(include=("toy_conv",), param_budget=30, strategy="cheapest")
    controller = HeuristicController(model.slots, config)
    assert controller.candidates()[0] == Candidate(20, 0, "r0c0", "toy_conv")  # 4*4 + 4; dim-8 slots cost 72
    assert all(c.cost <= 30 for c in controller.candidates())
    assert controller.step(Evaluation(60.0), 0) == []
    assert controller.step(Evaluation(70.0), 1) == []
    assert controller.step(Evaluation(70.1), 2) == []  # still improving over the window
    decisions = controller.step(Evaluation(70.0), 3)
    assert [(d.slot_id, d.action) for d in decisions] == [("r0c0", "germinate")]
    assert "toy_conv (20 params; cheapest affordable)" in decisions[0].detail
    assert model.slots["r0c0"].blueprint == "toy_conv"
    assert controller.seed_params() == 20
    # r1c0 also costs 20, but 20 + 20 exceeds the budget of 30: nothing else is affordable.
    assert controller.candidates() == []


def test_cheapest_across_blueprints_and_exclusions(permissive: QualityGates) -> None:
    model = _model(permissive)
    config = _config(include=("toy_conv", "toy_scale"), strategy="cheapest")
    controller = HeuristicController(model.slots, config)
    assert controller.candidates()[0] == Candidate(4, 0, "r0c0", "toy_scale")
    controller = HeuristicController(model.slots, _config(exclude=("toy_scale", "noop"), include=None))
    assert "toy_scale" not in {c.blueprint for c in controller.candidates()}


def _walk(controller: HeuristicController, scores: list[float], contributions: dict[str, float]) -> list:
    out = []
    for epoch, score in enumerate(scores):
        live = {s: c for s, c in contributions.items() if controller.slots[s].alpha > 0}
        out.extend(controller.step(Evaluation(score, live), epoch))
    return out


def test_a_useful_seed_advances_and_fossilizes_on_g5(permissive: QualityGates) -> None:
    model = _model(permissive)
    controller = HeuristicController(
        model.slots, _config(include=("toy_scale",), max_concurrent=1, strategy="cheapest")
    )
    decisions = _walk(controller, [50, 60, 60, 60] + [61] * 10, {"r0c0": 2.0})
    actions = [(d.slot_id, d.action, d.detail) for d in decisions if d.slot_id == "r0c0"]
    assert actions[0][1] == "germinate"
    assert [a[2] for a in actions[1:5]] == [
        "GERMINATED -> TRAINING",
        "TRAINING -> BLENDING",
        "BLENDING -> HOLDING",
        "HOLDING -> FOSSILIZED",
    ]
    assert model.slots["r0c0"].stage is SeedStage.FOSSILIZED
    assert model.slots["r0c0"].metrics.counterfactual == 2.0


def test_a_harmful_seed_is_pruned_after_patience(permissive: QualityGates) -> None:
    model = _model(permissive)
    controller = HeuristicController(
        model.slots, _config(include=("toy_scale",), prune_patience=2, strategy="cheapest")
    )
    decisions = _walk(controller, [50, 60, 60, 60] + [60] * 6, {"r0c0": -1.5})
    pruned = [d for d in decisions if d.action == "prune"]
    assert pruned and pruned[0].slot_id == "r0c0"
    assert "contribution -1.50 pp below +0.00 pp" in pruned[0].detail
    assert model.slots["r0c0"].stage in (SeedStage.PRUNED, SeedStage.EMBARGOED)
    blending = next(d.epoch for d in decisions if d.detail == "TRAINING -> BLENDING")
    assert pruned[0].epoch == blending + 2  # two measurements below the threshold, not one


def test_a_seed_stuck_at_a_gate_is_pruned_as_stalled() -> None:
    model = _model(QualityGates("strict"))  # strict G2 needs improvement that never comes
    controller = HeuristicController(model.slots, _config(include=("toy_scale",), max_stage_epochs=3))
    decisions = _walk(controller, [50, 60, 60, 60] + [60] * 8, {})
    pruned = [d for d in decisions if d.action == "prune"]
    assert pruned and pruned[0].detail.startswith("stalled: 3 epochs in TRAINING")


def test_config_validation_names_the_value() -> None:
    with pytest.raises(HostError, match=r"param_budget must be an int in \[0, 9007199254740992\], got -1"):
        ControllerConfig(param_budget=-1)
    with pytest.raises(HostError, match=r"plateau_window must be an int in \[1, 2147483647\], got 0"):
        ControllerConfig(param_budget=10, plateau_window=0)
    with pytest.raises(HostError, match="config must be a ControllerConfig"):
        HeuristicController({}, {"param_budget": 3})
    with pytest.raises(
        HostError, match=r"strategy must be one of \['gain_per_param', 'cheapest'\], got 'best'"
    ):
        ControllerConfig(param_budget=10, strategy="best")
    with pytest.raises(HostError, match="strategy must be one of"):
        rank_candidates([], "largest")


# ------------------------------------------------------------------------- selection strategies

_C = [
    Candidate(4, 0, "r0c0", "scale"),
    Candidate(20, 0, "r0c0", "conv"),
    Candidate(72, 2, "r0c1", "conv"),
    Candidate(8, 2, "r0c1", "scale"),
    Candidate(30, 1, "r1c0", "mlp"),
]


def test_cheapest_ranks_by_cost_then_slot_order() -> None:
    ranked = rank_candidates(_C, "cheapest")
    assert [(c.cost, c.slot_id) for c in ranked] == [
        (4, "r0c0"),
        (8, "r0c1"),
        (20, "r0c0"),
        (30, "r1c0"),
        (72, "r0c1"),
    ]


def test_gain_per_param_tries_untried_families_largest_first() -> None:
    ranked = rank_candidates(_C, "gain_per_param")
    assert [(c.blueprint, c.cost) for c in ranked] == [
        ("conv", 72), ("mlp", 30), ("conv", 20), ("scale", 8), ("scale", 4)
    ]  # fmt: skip


def test_gain_per_param_ranks_tried_families_by_measured_gain_per_parameter() -> None:
    outcomes = [
        Outcome("r0c1", "conv", 72, 0.72, "fossilized", 5),  # 0.01 pp/param
        Outcome("r0c0", "scale", 4, 0.2, "pruned", 9),  # 0.05 pp/param
    ]
    ranked = rank_candidates(_C, "gain_per_param", outcomes)
    # The untried family (mlp) comes first; then scale beats conv per parameter, larger first.
    assert [(c.blueprint, c.cost) for c in ranked] == [
        ("mlp", 30), ("scale", 8), ("scale", 4), ("conv", 72), ("conv", 20)
    ]  # fmt: skip
    harmful = [*outcomes, Outcome("r1c0", "mlp", 30, -0.5, "pruned", 12)]
    ranked = rank_candidates(_C, "gain_per_param", harmful)
    assert "mlp" not in {c.blueprint for c in ranked}  # measured harm: never again
    unmeasured = [Outcome("r1c0", "mlp", 30, 0.0, "pruned", 12)]
    assert "mlp" not in {c.blueprint for c in rank_candidates(_C, "gain_per_param", unmeasured)}


def test_outcome_gain_per_param() -> None:
    assert Outcome("s", "b", 50, 1.5, "fossilized", 3).gain_per_param == pytest.approx(0.03)
    assert Outcome("s", "noop", 0, 1.5, "fossilized", 3).gain_per_param == 0.0


def test_default_strategy_germinates_the_largest_untried_family_that_fits(permissive: QualityGates) -> None:
    model = _model(permissive)
    config = _config(include=("toy_conv", "toy_scale"), param_budget=50)
    assert config.strategy == "gain_per_param"
    controller = HeuristicController(model.slots, config)
    # dim-4 slots: toy_conv 20, toy_scale 4; dim-8 slots: toy_conv 72 (over budget), toy_scale 8.
    assert controller.candidates()[0] == Candidate(20, 0, "r0c0", "toy_conv")
    decisions = _walk(controller, [50, 60, 60, 60], {})
    assert [(d.slot_id, d.detail) for d in decisions if d.action == "germinate"] == [
        ("r0c0", "toy_conv (20 params; untried family, largest affordable)")
    ]


def test_outcomes_are_recorded_and_steer_the_next_germination(permissive: QualityGates) -> None:
    model = _model(permissive)
    config = _config(include=("toy_conv", "toy_scale"), param_budget=50, prune_patience=1)
    controller = HeuristicController(model.slots, config)
    scores = [50, 60, 60, 60] + [60] * 30
    for epoch, score in enumerate(scores):
        live = {s: -1.0 for s, slot in model.slots.items() if slot.alpha > 0}
        controller.step(Evaluation(score, live), epoch)
    # Every seed hurt, so each family was tried once and then never repeated.
    assert [(o.blueprint, o.fate, o.contribution) for o in controller.outcomes] == [
        ("toy_conv", "pruned", -1.0),
        ("toy_scale", "pruned", -1.0),
    ]
    germinated = [d for d in controller.decisions if d.action == "germinate"]
    assert len(germinated) == 2
    assert controller.candidates() == []


def test_a_seed_pruned_behind_the_controllers_back_is_recorded_as_an_outcome(
    permissive: QualityGates,
) -> None:
    model = _model(permissive)
    controller = HeuristicController(model.slots, _config(include=("toy_scale",)))
    _walk(controller, [50, 60, 60, 60], {})
    slot_id = next(s for s, slot in model.slots.items() if slot.stage is not SeedStage.DORMANT)
    model.slots[slot_id].prune("governor: non-finite loss", "governor")
    controller.step(Evaluation(60.0), 4)
    assert [(o.slot_id, o.blueprint, o.fate, o.contribution) for o in controller.outcomes] == [
        (slot_id, "toy_scale", "pruned", 0.0)
    ]
