"""lifecycle_timing: the fewest epochs before a seed blends in and before it can be fossilized.

Checked against the real controller driving real slots, one step per epoch as the demo
does, with every gate made to pass as early as it can (a plateau from the first score,
rising accuracy, trained seed parameters, a contribution above the threshold): the first
fossilization then happens exactly at the computed epoch, and no earlier.
"""

from __future__ import annotations

import pytest
import torch

from esper_core.control import ControllerConfig, HeuristicController, lifecycle_timing
from esper_core.demo.settings import CONTROLLER
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, HostError
from esper_core.model import Evaluation, MorphogeneticModel


def _walk(config: ControllerConfig, gates: QualityGates, epochs: int) -> tuple[list, int | None]:
    """Run the controller for ``epochs`` epochs; return its decisions and the first epoch that
    trained with a seed at alpha > 0 (None if none did)."""
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4), gates=gates)
    controller = HeuristicController(model.slots, config)
    decisions, blended, score = [], None, 60.0
    for epoch in range(1, epochs + 1):
        if blended is None and any(slot.alpha > 0 for slot in model.slots.values()):
            blended = epoch  # this epoch's training ran with the seed blended in
        with torch.no_grad():  # "training": every seed parameter moves (measured activity)
            for slot in model.slots.values():
                for p in slot.seed_parameters():
                    p.add_(0.05)
        live = {s: 2.0 for s, slot in model.slots.items() if slot.alpha > 0}
        decisions += controller.step(Evaluation(score, live), epoch)
        if decisions:  # flat (a plateau) until the first germination, rising after it
            score += 1.0
    return decisions, blended


def _config(**kwargs: object) -> ControllerConfig:
    return ControllerConfig(
        **{"param_budget": 4, "include": ("toy_scale",), "strategy": "cheapest", **kwargs}
    )


CASES = [
    pytest.param(dict(CONTROLLER["default"]), QualityGates("strict", min_activity=0.0), 11, id="demo-strict"),
    pytest.param(dict(CONTROLLER["default"]), QualityGates("permissive"), 9, id="demo-permissive"),
    pytest.param(dict(CONTROLLER["tiny"]), QualityGates("permissive"), 6, id="tiny-permissive"),
    pytest.param(dict(CONTROLLER["tiny"]), QualityGates("strict", min_activity=0.0), 10, id="tiny-strict"),
    pytest.param(
        {"warmup_epochs": 0, "plateau_window": 1, "ramp_epochs": 5},
        QualityGates("strict", min_activity=0.0, min_training_evaluations=0, min_blending_evaluations=2),
        10,
        id="ramp-longer-than-dwell",
    ),
    pytest.param(
        {"warmup_epochs": 6, "plateau_window": 1, "ramp_epochs": 1},
        QualityGates("permissive", permissive_training_evaluations=2),
        11,
        id="long-warmup",
    ),
]


@pytest.mark.parametrize(("controller", "gates", "expected"), CASES)
def test_the_first_fossilization_happens_exactly_at_the_computed_epoch(
    controller: dict, gates: QualityGates, expected: int
) -> None:
    config = _config(**controller)
    timing = lifecycle_timing(config, gates)
    assert timing.earliest_fossilization == expected
    decisions, blended = _walk(config, gates, expected + 2)
    fossilized = [d.epoch for d in decisions if d.detail == "HOLDING -> FOSSILIZED"]
    assert fossilized and fossilized[0] == expected, [(d.epoch, d.detail) for d in decisions]
    assert blended == timing.first_blended_epoch
    germinated = [d.epoch for d in decisions if d.action == "germinate"]
    assert germinated[0] == timing.germination_epoch


def test_a_dwell_longer_than_the_stage_limit_means_no_seed_can_be_kept() -> None:
    config = _config(**CONTROLLER["default"], max_stage_epochs=2)
    gates = QualityGates("strict", min_activity=0.0)  # TRAINING needs 3 evaluations, the limit is 2
    timing = lifecycle_timing(config, gates)
    assert timing.stalled == ("TRAINING", "BLENDING") and timing.earliest_fossilization is None
    decisions, _ = _walk(config, gates, 20)
    assert not [d for d in decisions if d.detail == "HOLDING -> FOSSILIZED"]
    assert any(d.detail.startswith("stalled: 2 epochs in TRAINING") for d in decisions)


def test_bad_arguments_name_the_type() -> None:
    with pytest.raises(HostError, match="config must be a ControllerConfig, got dict"):
        lifecycle_timing({"param_budget": 1})  # type: ignore[arg-type]
    with pytest.raises(HostError, match="gates must be a QualityGates, got str"):
        lifecycle_timing(_config(), "strict")  # type: ignore[arg-type]
    assert lifecycle_timing(_config()) == lifecycle_timing(_config(), QualityGates("strict"))
