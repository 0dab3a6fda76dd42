"""Why a grown model germinated no seed: each reason, checked against the real controller.

The reported instance: ``esper demo --epochs 14`` germinated nothing (the score was still
climbing) and said nothing. :func:`why_no_germination` must name the reason the real
:class:`HeuristicController` had, so each history here is also fed to a real controller over
a real model: it germinates on exactly the first step the diagnosis calls a plateau with a
candidate, and never when the diagnosis says it could not. The end-to-end note through the
real ``esper demo`` is in ``test_demo_preflight.py``.
"""

from __future__ import annotations

import attrs
import pytest
import torch

from esper_core.control import ControllerConfig, HeuristicController
from esper_core.demo.diagnosis import NoGermination, no_germination_notes, why_no_germination
from esper_core.hosts import CNNHost
from esper_core.model import Evaluation, MorphogeneticModel

CLIMB = [
    10.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    70.0,
    80.0,
]  # +10 pp an epoch: every gain over a 2-epoch window is 20 pp
FLAT_AT_7 = [10.0, 30.0, 50.0, 60.0, 70.0, 70.2, 70.3, 70.1]  # gains from epoch 3: 40, 30, 20, 10.2, 0.3, 0.1


def _controller(budget: int, **kwargs: object) -> HeuristicController:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4))
    config = ControllerConfig(param_budget=budget, warmup_epochs=3, plateau_window=2, plateau_min_delta=0.5)
    return HeuristicController(model.slots, attrs.evolve(config, **kwargs))


def _run(controller: HeuristicController, history: list[float]) -> int | None:
    """Feed ``history`` one epoch at a time; the epoch that germinated, or None."""
    for epoch, score in enumerate(history, start=1):
        decisions = controller.step(Evaluation(score), epoch)
        if any(d.action == "germinate" for d in decisions):
            return epoch
    return None


@pytest.mark.parametrize(
    ("history", "budget", "kind", "detail"),
    [
        (
            CLIMB[:2],
            10_000,
            "too_short",
            "the run ended at epoch 2, before epoch 3, the first whose step can germinate "
            "(warmup_epochs=3, plateau_window=2)",
        ),
        (
            CLIMB,
            10_000,
            "no_plateau",
            "the score never plateaued from epoch 3 to 8 (the smallest gain was 20.00 pp, at epoch 3)",
        ),
        (
            [10.0, 20.0, 30.0, 30.2, 30.8, 40.0],  # gains 20, 10.2, 0.8 (not < 0.5), 9.8
            10_000,
            "no_plateau",
            "the score never plateaued from epoch 3 to 6 (the smallest gain was 0.80 pp, at epoch 5)",
        ),
        (
            FLAT_AT_7,
            0,
            "no_candidate",
            "the score plateaued (epoch 7, 8) but no allowed blueprint was affordable and buildable at "
            "any slot (seed budget 0 parameters)",
        ),
    ],
)
def test_each_reason_is_the_one_the_controller_had(
    history: list[float], budget: int, kind: str, detail: str
) -> None:
    controller = _controller(budget)
    assert _run(controller, history) is None  # the real controller germinated nothing
    reason = why_no_germination(controller.history, controller.config, len(controller.candidates()))
    assert reason == NoGermination(kind, detail)


def test_the_controller_germinates_where_the_diagnosis_finds_the_first_plateau() -> None:
    # The same flat history with a budget: the diagnosis's first plateau is the germination.
    assert _run(_controller(10_000), FLAT_AT_7) == 7
    assert _run(_controller(10_000), FLAT_AT_7[:6]) is None
    reason = why_no_germination(FLAT_AT_7[:6], _controller(10_000).config, 1)
    assert reason.kind == "no_plateau"


def test_a_note_per_grown_model_names_the_seeds_and_what_may_help() -> None:
    config = ControllerConfig(param_budget=10, plateau_window=2, plateau_min_delta=0.5)
    climbing = NoGermination("no_plateau", "the score never plateaued from epoch 3 to 14 (...)")
    poor = NoGermination("no_candidate", "the score plateaued (epoch 9) but ...")
    reasons = {"grown (cheapest)": {0: climbing, 2: poor}, "grown (gain_per_param)": {}}
    (note,) = no_germination_notes(reasons, config, epochs=14, seeds=3)
    assert note.startswith(
        "grown (cheapest) germinated no seed in 14 epochs for random seeds 0, 2 (of 3), so for them the grown "
        "model (and its static twin) is the host alone. The controller germinates only when the validation "
        "score plateaus (the best of the last plateau_window=2 epochs less than plateau_min_delta=0.5 pp above "
        "the best before them) and a blueprint is affordable: seed 0: the score never plateaued"
    )
    assert "; seed 2: the score plateaued (epoch 9) but ..." in note
    assert note.endswith(
        "What may help: more epochs give the score time to level off (a plateau may come late or never; the "
        "warm-up and plateau settings are fixed for the demo: settings.controller in report.json); a larger "
        "--budget, or other blueprints with --include/--exclude."
    )
    assert no_germination_notes({"grown (cheapest)": {}}, config, epochs=14, seeds=3) == []
