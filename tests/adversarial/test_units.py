"""Issue 16 item 6: an accuracy recorded as a fraction cannot fail silently.

``record_accuracy(0.93)`` (a fraction, where percentage points are expected) is accepted, but
it emits a one-time ``accuracy_looks_like_a_fraction`` warning event, the report lists the
warning, and when a gate fails its result (the event, the return value and the report) names
the measured value and the threshold with their units.
"""

from __future__ import annotations

import pytest
import torch

from esper_core.gates import GateEvidence, GateLevel, QualityGates
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage
from esper_core.telemetry import GateEvaluated, SeedEvent, SeedWarning

from .conftest import example


def strict_training_slot() -> tuple[SeedSlot, list[SeedEvent]]:
    torch.manual_seed(0)
    slot = SeedSlot("s", topology="cnn", dim=8, gates=QualityGates("strict"))
    events: list[SeedEvent] = []
    slot.add_observer(events.append)
    slot.germinate("conv_light")
    slot.advance()
    assert slot.stage is SeedStage.TRAINING
    return slot, events


def train(slot: SeedSlot, accuracy: float) -> None:
    params = slot.seed_parameters()
    slot(example(slot).requires_grad_(True)).square().mean().backward()
    with torch.no_grad():
        for p in params:
            p -= 0.5 * p.grad
            p.grad = None
    slot.record_accuracy(accuracy)


def test_a_fraction_accuracy_warns_once_and_the_report_says_so() -> None:
    slot, events = strict_training_slot()
    for accuracy in (0.91, 0.92, 0.93, 0.95):
        train(slot, accuracy)
    warnings = [
        e for e in events if isinstance(e, SeedWarning) and e.code == "accuracy_looks_like_a_fraction"
    ]
    assert len(warnings) == 1
    assert "percentage points (0-100)" in warnings[0].message and "0.91" in warnings[0].message
    assert "accuracy_looks_like_a_fraction" in slot.report().warnings


def test_the_failed_gate_names_value_threshold_and_units_in_result_event_and_report() -> None:
    slot, events = strict_training_slot()
    for accuracy in (0.91, 0.92, 0.93, 0.95):
        train(slot, accuracy)
    result = slot.advance()
    assert not result.passed and slot.stage is SeedStage.TRAINING
    expected = "accuracy improved 0.04 pp since TRAINING began, below min_training_improvement 0.50 pp"
    assert expected in result.message and "percentage points, 0-100" in result.message
    verdicts = [e for e in events if isinstance(e, GateEvaluated) and e.gate is GateLevel.G2]
    assert verdicts and verdicts[-1].message == result.message
    report = slot.report()
    assert report.last_gate is not None and report.last_gate.startswith("G2 TRAINING->BLENDING: ")
    assert expected in report.last_gate


def test_evaluate_alone_fills_the_report_too() -> None:
    """A controller calls evaluate() and only advances when it passes: the report says why not."""
    slot, _ = strict_training_slot()
    train(slot, 40.0)
    result = slot.evaluate()
    assert not result.passed
    assert "1 evaluations recorded in TRAINING, below min_training_evaluations 3" in result.message
    assert slot.report().last_gate == result.describe() == f"G2 TRAINING->BLENDING: {result.message}"


def test_a_percent_accuracy_does_not_warn() -> None:
    slot, events = strict_training_slot()
    for accuracy in (40.0, 45.0, 50.0, 55.0):
        train(slot, accuracy)
    assert not [
        e for e in events if isinstance(e, SeedWarning) and e.code == "accuracy_looks_like_a_fraction"
    ]
    assert slot.report().warnings == ()
    result = slot.advance()
    assert result.passed and result.message.startswith("G2 blending readiness (strict) passed")


@pytest.mark.parametrize(
    ("edge", "evidence", "texts"),
    [
        (
            (SeedStage.HOLDING, SeedStage.FOSSILIZED),
            {"stage": SeedStage.HOLDING, "counterfactual": 0.4, "alpha": 1.0, "alpha_target": 1.0},
            ("contribution 0.40 pp, below min_fossilize_contribution 1.00 pp",),
        ),
        (
            (SeedStage.HOLDING, SeedStage.FOSSILIZED),
            {"stage": SeedStage.HOLDING, "counterfactual": -2.0},
            ("contribution -2.00 pp is negative",),
        ),
        (
            (SeedStage.HOLDING, SeedStage.FOSSILIZED),
            {"stage": SeedStage.HOLDING},
            ("no counterfactual contribution measured", "percentage points"),
        ),
        (
            (SeedStage.BLENDING, SeedStage.HOLDING),
            {"stage": SeedStage.BLENDING, "alpha": 0.5, "alpha_target": 1.0, "evaluations_in_stage": 1},
            (
                "alpha 0.5000 has not reached its target 1.0000",
                "1 evaluations recorded in BLENDING, below min_blending_evaluations 3",
            ),
        ),
        (
            (SeedStage.TRAINING, SeedStage.BLENDING),
            {"stage": SeedStage.TRAINING, "improvement": 2.0, "evaluations_in_stage": 5, "activity": 1e-5},
            ("seed activity 1.00e-05 (relative parameter change per epoch), below min_activity 1.00e-03",),
        ),
    ],
    ids=["g5-below", "g5-negative", "g5-unmeasured", "g3", "g2-activity"],
)
def test_every_failed_check_says_what_was_measured_against_what(edge, evidence, texts) -> None:
    result = QualityGates("strict").evaluate(edge, GateEvidence(seed_id="s", blueprint="b", **evidence))
    assert not result.passed
    for text in texts:
        assert text in result.message, result.message
