"""HeuristicController: plateau -> cheapest affordable seed; gates advance; negative contributors pruned."""

from __future__ import annotations

import pytest
import torch

from esper_core.control import ControllerConfig, HeuristicController, plateaued
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
        "tempo": 2,
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
    controller = HeuristicController(model.slots, _config(include=("toy_conv",), param_budget=30))
    assert controller.candidates()[0] == (20, 0, "r0c0", "toy_conv")  # 4*4 + 4; dim-8 slots cost 72
    assert all(cost <= 30 for cost, *_ in controller.candidates())
    assert controller.step(Evaluation(60.0), 0) == []
    assert controller.step(Evaluation(70.0), 1) == []
    assert controller.step(Evaluation(70.1), 2) == []  # still improving over the window
    decisions = controller.step(Evaluation(70.0), 3)
    assert [(d.slot_id, d.action) for d in decisions] == [("r0c0", "germinate")]
    assert "toy_conv (20 params)" in decisions[0].detail
    assert model.slots["r0c0"].blueprint == "toy_conv"
    assert controller.seed_params() == 20
    # r1c0 also costs 20, but 20 + 20 exceeds the budget of 30: nothing else is affordable.
    assert controller.candidates() == []


def test_cheapest_across_blueprints_and_exclusions(permissive: QualityGates) -> None:
    model = _model(permissive)
    controller = HeuristicController(model.slots, _config(include=("toy_conv", "toy_scale")))
    assert controller.candidates()[0] == (4, 0, "r0c0", "toy_scale")
    controller = HeuristicController(model.slots, _config(exclude=("toy_scale", "noop"), include=None))
    assert "toy_scale" not in {name for *_, name in controller.candidates()}


def _walk(controller: HeuristicController, scores: list[float], contributions: dict[str, float]) -> list:
    out = []
    for epoch, score in enumerate(scores):
        live = {s: c for s, c in contributions.items() if controller.slots[s].alpha > 0}
        out.extend(controller.step(Evaluation(score, live), epoch))
    return out


def test_a_useful_seed_advances_and_fossilizes_on_g5(permissive: QualityGates) -> None:
    model = _model(permissive)
    controller = HeuristicController(model.slots, _config(include=("toy_scale",), max_concurrent=1))
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
    controller = HeuristicController(model.slots, _config(include=("toy_scale",), prune_patience=2))
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
    with pytest.raises(HostError, match="param_budget must be a number >= 0, got -1"):
        ControllerConfig(param_budget=-1)
    with pytest.raises(HostError, match="plateau_window must be an int >= 1, got 0"):
        ControllerConfig(param_budget=10, plateau_window=0)
    with pytest.raises(HostError, match="config must be a ControllerConfig"):
        HeuristicController({}, {"param_budget": 3})
